//! Carrying out an upgrade: each step journaled before and after it runs, in the order
//! prepare (while the old server serves) → downtime window (stop old, pg_upgrade, start new)
//! → after (extensions, ANALYZE, finish); and the automatic rollback when a step fails
//! before the point of no return.

use std::path::PathBuf;

use crate::config::CarryReport;
use crate::error::{Error, Finding, Result};
use crate::exec::interrupt;
use crate::exec::postmaster::{self, Liveness};
use crate::exec::server::{self, Fence};
use crate::inspect::db;
use crate::plan::STEPS;
use crate::plan::prepare::Prepared;
use crate::state::identity;
use crate::state::journal::{Journal, State, now_millis};
use crate::steps;
use crate::steps::servers::{self};
use crate::steps::undo::{self, Discard};
use crate::ui::report::Ui;

use super::analyze::analyze;
use super::extensions::{superuser, update_extensions};
use super::start_new::{ensure_new_running, new_socket, start_new};

/// One upgrade being carried out: the prepared plan, its journal, and what the steps
/// report back for the final summary.
pub(crate) struct Run<'a> {
    pub(crate) p: &'a Prepared,
    pub(crate) ui: Ui,
    pub(crate) journal: Journal,
    pub(crate) log_dir: PathBuf,
    pub(crate) warnings: Vec<Finding>,
    pub(crate) carried: Option<CarryReport>,
    pub(crate) analyzed: Option<db::AnalyzeReport>,
    /// What was done so the old cluster does not start at boot.
    pub(crate) boot: Option<String>,
    /// The downtime estimate scaled to this machine by initdb's time (fresh upgrades).
    pub(crate) estimate: Option<crate::plan::estimate::Estimate>,
    /// What the collations step found and did, and how long it took.
    pub(crate) collations: Option<(crate::inspect::reindex::Report, f64)>,
}

impl Run<'_> {
    /// Runs one step: honours an interrupt first, journals its start and end, and offers
    /// fault-injection points on both sides.
    pub(crate) fn step<T>(
        &mut self,
        name: &'static str,
        reached: State,
        what: &str,
        f: impl FnOnce(&Self) -> Result<T>,
    ) -> Result<T> {
        if interrupt::interrupted() {
            return Err(Error::Interrupted {
                before: name.to_string(),
            });
        }
        interrupt::fault(&format!("before:{name}"));
        let n = STEPS.iter().position(|s| *s == name).map_or(0, |i| i + 1);
        let started = self.ui.step(n, STEPS.len(), name, what);
        self.journal.begin(name)?;
        let out = f(self)?;
        if matches!(
            reached,
            State::NewStarted
                | State::ExtensionsUpdated
                | State::CollationsRepaired
                | State::Analyzed
        ) {
            // Journaled with the state it belongs to: what clients write after it is what a
            // rollback would discard.
            self.journal.record.new_next_xid =
                new_next_xid(self.p).or(self.journal.record.new_next_xid);
        }
        let d = self.ui.step_done(started, "");
        self.journal.finish(name, reached, d.as_secs_f64())?;
        interrupt::fault(&format!("after:{name}"));
        Ok(out)
    }

    pub(crate) fn leave_running(&self) -> bool {
        self.journal.record.old_was_running && !self.p.plan.leave_stopped
    }
}

/// While the old server still serves: initdb, configuration, pg_upgrade --check.
pub(crate) fn build_new(run: &mut Run<'_>) -> Result<()> {
    let new = run.p.plan.new.datadir.clone();
    let confdir = run.p.plan.new.conf_dir();
    // Recorded before initdb: from here on, undo removes only this very directory.
    let owner = run.p.runner.owner();
    steps::create_owned_dir(&new, owner)?;
    run.journal.record.identity = identity::begin(&run.p.plan.old.datadir, &new)?;
    run.journal.write()?;
    let id = run.journal.record.identity.clone();
    // Timed for the downtime estimate, which scales with this machine's initdb.
    let started = std::time::Instant::now();
    run.step(
        "initdb",
        State::NewInitialized,
        &format!("{} with the old cluster's options", new.display()),
        |r| {
            steps::initdb::initdb(r.p, &new)?;
            identity::mark_new(&id, owner, &new)
        },
    )?;
    identity::record_new(&mut run.journal.record.identity, &new);
    run.journal.write()?;
    let e = crate::plan::estimate::estimate(
        &run.p.plan.downtime_inputs,
        Some(started.elapsed().as_secs_f64()),
    );
    run.ui.line(&format!(
        "      downtime estimate: {:.1}s ({})",
        e.seconds, e.basis
    ));
    run.estimate = Some(e);
    let what = if run.p.plan.new.confdir.is_some() {
        format!(
            "postgresql.conf, pg_hba.conf, pg_ident.conf, start.conf, pg_ctl.conf, environment, conf.d into {}",
            confdir.display()
        )
    } else {
        "postgresql.conf, pg_hba.conf, pg_ident.conf, includes".to_string()
    };
    let carried = run.step("carry-config", State::ConfigCarried, &what, |r| {
        steps::carry_config::carry_config(r.p, &new, &confdir)
    })?;
    for c in &carried.commented {
        run.ui.line(&format!(
            "      commented out {c}: the new major rejects it"
        ));
    }
    for c in &carried.command_line {
        run.ui.line(&format!(
            "      carried {c} from the old server's command line into postgresql.auto.conf"
        ));
    }
    run.carried = Some(carried);
    let judged = run.step("check", State::Checked, "pg_upgrade --check", |r| {
        steps::pg_upgrade::pg_upgrade(r.p, &new, &confdir, &r.p.plan.work_dir, &r.log_dir, true)?;
        steps::collations::check_new(r, &confdir, &new)
    })?;
    if let Some(s) = judged {
        // What the step after the window repairs, also when it runs in a resumed upgrade.
        run.journal.record.plan.collations = s;
        run.journal.write()?;
    }
    Ok(())
}

/// While the old server still serves: a CHECKPOINT, so that the shutdown checkpoint inside
/// the downtime window has little left to write. Best effort: a failure only costs time.
fn checkpoint_old(run: &mut Run<'_>) {
    let p = run.p;
    let Liveness::Running(pm) = postmaster::liveness(&p.plan.old.datadir) else {
        return;
    };
    let Some(socket) = pm.socket_dir else { return };
    let users = vec![superuser(p), p.runner.owner().name.clone()];
    let target = db::Target::new(&socket, pm.port.unwrap_or(p.plan.old.port), users);
    if let Err(e) = db::call::<bool>(&p.runner, &["checkpoint"], &target) {
        run.warnings.push(Finding::warning(
            "checkpoint-failed",
            format!("CHECKPOINT before stopping the old server failed: {e}"),
            "",
        ));
    }
}

/// The downtime window up to the new cluster's start: stop old, pg_upgrade.
pub(crate) fn switch(run: &mut Run<'_>) -> Result<()> {
    let new = run.p.plan.new.datadir.clone();
    checkpoint_old(run);
    let confdir = run.p.plan.new.conf_dir();
    run.journal.record.window_started_ms = Some(now_millis());
    let what = format!(
        "fast shutdown of the old server ({}); clients are cut off",
        run.p.plan.host.old.stop.describe("stop")
    );
    run.step("stop-old", State::OldStopped, &what, |r| {
        steps::stop_old::stop_old(r.p)
    })?;
    let what = format!("--{} with {} jobs", run.p.plan.mode.name(), run.p.plan.jobs);
    run.step("pg_upgrade", State::Upgraded, &what, |r| {
        steps::pg_upgrade::pg_upgrade(r.p, &new, &confdir, &r.p.plan.work_dir, &r.log_dir, false)
    })?;
    // pg_upgrade started and stopped the old cluster; from now on nothing should.
    run.journal.record.identity.old_control_mtime =
        identity::control_mtime(&run.p.plan.old.datadir);
    run.journal.write()?;
    // Without this record, a later rollback judges a start from pg_control's state alone.
    if let Err(e) = crate::steps::crossing::record_checkpoint(run.p, &mut run.journal) {
        tracing::warn!("cannot record the new cluster's checkpoint: {e}");
    }
    Ok(())
}

/// The new cluster's next transaction id, once pgleap's own work on it is done. Best effort:
/// without it, rollback cannot count what clients wrote.
fn new_next_xid(p: &Prepared) -> Option<u64> {
    crate::steps::crossing::next_xid(p)
        .inspect_err(|e| tracing::warn!("cannot read the new cluster's next transaction id: {e}"))
        .ok()
        .flatten()
}

/// From the new cluster's first start to the end, resuming at the journaled state. The
/// caller reports the result.
pub(crate) fn after_upgrade(run: &mut Run<'_>) -> Result<()> {
    let fence = Fence::new(run.p.runner.owner())?;
    if run.journal.record.state == State::Upgraded {
        match start_new(run, &fence) {
            // Asked to stop with pg_upgrade done but the new cluster never started: the
            // safe point is the old cluster, running again as it was.
            Err(e @ Error::Interrupted { .. }) => return Err(auto_rollback(run, e)),
            other => other?,
        }
    } else {
        ensure_new_running(run, &fence)?;
    }
    let socket = new_socket(run, &fence);
    if run.journal.record.state < State::ExtensionsUpdated {
        update_extensions(run, &socket)?;
    }
    if run.journal.record.state < State::CollationsRepaired {
        super::collations::repair(run, &socket)?;
    }
    if run.journal.record.state < State::Analyzed {
        analyze(run, &socket)?;
    }
    let leave_running = run.leave_running();
    let mut what = if leave_running {
        "new cluster left running".to_string()
    } else {
        "stopping the new cluster".to_string()
    };
    if let Some(b) = &run.p.plan.host.boot {
        what.push_str("; ");
        what.push_str(&b.describe());
    }
    // The old cluster stops starting at boot only now that the upgrade has succeeded.
    let boot = run.step("finish", State::Done, &what, |r| {
        if !leave_running {
            server::stop(&r.p.runner, &r.p.new.bindir, &r.p.plan.new.datadir)?;
        }
        servers::disable_old_at_boot(r.p)
    })?;
    if let Some(b) = &boot {
        run.ui.line(&format!("      {b}"));
    }
    run.boot = boot;
    drop(fence);
    Ok(())
}

pub(crate) fn step_failed(step: &str, e: Error, state: &str, next: &str) -> Error {
    Error::Step {
        step: step.into(),
        state: state.into(),
        next: next.into(),
        source: Box::new(e),
    }
}

/// A failure or interrupt before the point of no return: put the old cluster back as it
/// was found and report the original error with what was done.
pub(crate) fn auto_rollback(run: &mut Run<'_>, e: Error) -> Error {
    let step = run
        .journal
        .record
        .running
        .clone()
        .unwrap_or_else(|| "upgrade".into());
    let refused_before_stop =
        matches!(e, Error::Refused { .. }) && run.journal.record.state < State::OldStopped;
    match undo::roll_back(run.p, &mut run.journal, Discard::Remove, &run.log_dir) {
        Ok(notes) => {
            if let (true, Error::Refused { findings }) = (refused_before_stop, &e) {
                // pg_upgrade --check refused: the old cluster was never touched.
                return Error::RefusedAfterCleanup {
                    findings: findings.clone(),
                    note: format!(
                        "The old cluster was not changed; the new directory pgleap had prepared was removed ({}). Logs are kept in {}.",
                        notes.join("; "),
                        run.log_dir.display()
                    ),
                };
            }
            step_failed(
                &step,
                e,
                &format!("rolled back automatically: {}", notes.join("; ")),
                &format!(
                    "fix the cause (logs in {}), then run pgleap upgrade again",
                    run.log_dir.display()
                ),
            )
        }
        Err(rb) => step_failed(
            &step,
            e,
            &format!("automatic rollback failed: {rb}"),
            &format!(
                "run pgleap status --old-datadir {} and pgleap rollback",
                run.p.plan.old.datadir.display()
            ),
        ),
    }
}
