//! `pgleap upgrade`: run the plan, journaling every step, or resume one that stopped.
//!
//! Preparation (initdb, configuration, pg_upgrade --check) happens while the old server still
//! serves; the downtime window holds only stop-old, pg_upgrade and start-new; extension
//! updates and ANALYZE run after clients are back.
//!
//! Invariant: before the point of no return (the new cluster's first start in link or swap
//! mode) any failure or interrupt puts the old cluster back as it was found, running again if
//! it was running. A crash leaves a journal from which this command resumes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::cli::UpgradeArgs;
use crate::config::CarryReport;
use crate::error::Finding;
use crate::error::{Error, Result};
use crate::exec::interrupt;
use crate::exec::postmaster::{self, Liveness};
use crate::exec::process::Opts;
use crate::exec::server::{self, Fence};
use crate::inspect::db;
use crate::plan::args::{CheckArgs, Target};
use crate::plan::prepare::{Prepared, Purpose, prepare};
use crate::plan::{Mode, STEPS};
use crate::state::journal::{Journal, Lock, State, now_millis};
use crate::steps;
use crate::steps::servers::{self, Which};
use crate::steps::undo::{self, Discard};
use crate::ui::report::{Ui, secs};

struct Run<'a> {
    p: &'a Prepared,
    ui: Ui,
    journal: Journal,
    log_dir: PathBuf,
    warnings: Vec<Finding>,
    carried: Option<CarryReport>,
    analyzed: Option<db::AnalyzeReport>,
    /// What was done so the old cluster does not start at boot.
    boot: Option<String>,
}

impl Run<'_> {
    /// Runs one step: honours an interrupt first, journals its start and end, and offers
    /// fault-injection points on both sides.
    fn step<T>(
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
        let d = self.ui.step_done(started, "");
        self.journal.finish(name, reached, d.as_secs_f64())?;
        interrupt::fault(&format!("after:{name}"));
        Ok(out)
    }

    fn leave_running(&self) -> bool {
        self.journal.record.old_was_running && !self.p.plan.leave_stopped
    }
}

pub(crate) fn execute(args: &UpgradeArgs) -> Result<()> {
    interrupt::install(interrupt::OnSignal::SafePoint);
    let ui = Ui {
        json: args.common.json,
    };
    let refuse = |f| Error::Refused { findings: vec![f] };
    let root = crate::host::root::host_root(args.common.target.root.as_deref()).map_err(refuse)?;
    let (old_datadir, _) = crate::plan::prepare::old_target(&root, &args.common).map_err(refuse)?;
    if let Some(j) =
        crate::state::journal::locate(&old_datadir, args.common.target.new_datadir.as_deref())?
    {
        match j.record.state {
            State::Done => {
                ui.line(&format!(
                    "{} was already upgraded to {} (journal {}); nothing to do. pgleap finalize removes the old cluster when you are satisfied.",
                    old_datadir.display(),
                    j.record.plan.new.datadir.display(),
                    j.path().display()
                ));
                return Ok(());
            }
            s if s.terminal() => j.archive()?,
            _ => return resume(args, ui, j),
        }
    }
    fresh(args, ui, None)
}

/// A new upgrade (or a redo after undoing an interrupted one, with the old server's state at
/// the original start).
fn fresh(args: &UpgradeArgs, ui: Ui, old_was_running: Option<bool>) -> Result<()> {
    let purpose = Purpose::Upgrade {
        port: args.port,
        analyze: !args.no_analyze,
        leave_stopped: args.leave_stopped,
    };
    let mut p = prepare(&args.common, purpose)?;
    if let Some(was) = old_was_running {
        p.plan.old_running = was;
    }
    ui.plan(&p.plan);
    ui.findings(&p.findings.0);
    if p.findings.has_errors() {
        return p.findings.clone().into_result().map(|_| ());
    }
    let log_dir = p.plan.work_dir.join("logs");
    steps::create_owned_dir(&p.plan.work_dir, p.runner.owner())?;
    let _lock = Lock::acquire(&p.plan.work_dir)?;
    steps::create_owned_dir(&log_dir, p.runner.owner())?;
    p.runner.set_log_dir(log_dir.clone());
    let journal = Journal::create(&p.plan, p.plan.old_running)?;
    let mut run = Run {
        p: &p,
        ui,
        journal,
        log_dir,
        warnings: p.findings.0.clone(),
        carried: None,
        analyzed: None,
        boot: None,
    };

    if let Err(e) = build_new(&mut run) {
        return Err(auto_rollback(&mut run, e));
    }
    if let Err(e) = switch(&mut run) {
        return Err(auto_rollback(&mut run, e));
    }
    after_upgrade(&mut run)
}

/// Continues an upgrade from its journal.
fn resume(args: &UpgradeArgs, ui: Ui, j: Journal) -> Result<()> {
    let plan = j.record.plan.clone();
    let lock = Lock::acquire(&plan.work_dir)?;
    // Re-read under the lock: the holder may have moved on.
    let j = Journal::load(&plan.work_dir)?.unwrap_or(j);
    let r = &j.record;
    ui.line(&format!(
        "resuming the upgrade of {} recorded in {} (state: {}{})",
        plan.old.datadir.display(),
        j.path().display(),
        r.state.name(),
        r.running
            .as_ref()
            .map(|s| format!(", interrupted during {s}"))
            .unwrap_or_default()
    ));
    if r.plan.mode == Mode::Swap
        && r.state < State::Upgraded
        && r.running.as_deref() == Some("pg_upgrade")
    {
        return Err(Error::Refused {
            findings: vec![undo::impossible(&j).unwrap_or_else(|| {
                Finding::error(
                    "swap-started",
                    "pg_upgrade --swap was interrupted",
                    "Restore a backup",
                )
            })],
        });
    }
    let p = Prepared::from_plan(plan)?;
    if j.record.state < State::Upgraded {
        // Nothing of the new cluster is worth keeping: undo it, then redo from initdb with
        // the same binaries, paths and mode.
        let old_was_running = j.record.old_was_running;
        for n in undo::undo_new(&p, &j, Discard::Remove)? {
            ui.line(&format!("      {n}"));
        }
        j.archive()?;
        drop(lock);
        let again = args_from_plan(args, &p);
        return fresh(&again, ui, Some(old_was_running));
    }
    let log_dir = p.plan.work_dir.join("logs");
    let mut run = Run {
        p: &p,
        ui,
        journal: j,
        log_dir,
        warnings: Vec::new(),
        carried: None,
        analyzed: None,
        boot: None,
    };
    after_upgrade(&mut run)
}

/// The flags of a redo: the journaled plan's binaries, paths, mode and options.
fn args_from_plan(args: &UpgradeArgs, p: &Prepared) -> UpgradeArgs {
    let plan = &p.plan;
    UpgradeArgs {
        common: CheckArgs {
            target: Target {
                old_datadir: Some(plan.old.datadir.clone()),
                cluster: None,
                root: Some(plan.host.root.clone()),
                new_datadir: Some(plan.new.datadir.clone()),
            },
            stop_command: plan.host.stop_command.clone(),
            start_command: plan.host.start_command.clone(),
            old_bindir: Some(plan.old.bindir.clone()),
            new_bindir: Some(plan.new.bindir.clone()),
            new_version: None,
            mode: plan.mode,
            jobs: u32::try_from(plan.jobs).ok(),
            username: args.common.username.clone(),
            json: args.common.json,
        },
        port: Some(plan.new.port),
        no_analyze: !plan.analyze,
        leave_stopped: plan.leave_stopped,
    }
}

/// While the old server still serves: initdb, configuration, pg_upgrade --check.
fn build_new(run: &mut Run<'_>) -> Result<()> {
    let new = run.p.plan.new.datadir.clone();
    let confdir = run.p.plan.new.conf_dir();
    run.step(
        "initdb",
        State::NewInitialized,
        &format!("{} with the old cluster's options", new.display()),
        |r| steps::initdb(r.p, &new),
    )?;
    let what = if run.p.plan.new.confdir.is_some() {
        format!(
            "postgresql.conf, pg_hba.conf, pg_ident.conf, start.conf, pg_ctl.conf, environment, conf.d into {}",
            confdir.display()
        )
    } else {
        "postgresql.conf, pg_hba.conf, pg_ident.conf, includes".to_string()
    };
    let carried = run.step("carry-config", State::ConfigCarried, &what, |r| {
        steps::carry_config(r.p, &new, &confdir)
    })?;
    for c in &carried.commented {
        run.ui.line(&format!(
            "      commented out {c}: the new major rejects it"
        ));
    }
    run.carried = Some(carried);
    run.step("check", State::Checked, "pg_upgrade --check", |r| {
        steps::pg_upgrade(r.p, &new, &confdir, &r.p.plan.work_dir, &r.log_dir, true)
    })?;
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
fn switch(run: &mut Run<'_>) -> Result<()> {
    let new = run.p.plan.new.datadir.clone();
    checkpoint_old(run);
    let confdir = run.p.plan.new.conf_dir();
    run.journal.record.window_started_ms = Some(now_millis());
    let what = format!(
        "fast shutdown of the old server ({}); clients are cut off",
        run.p.plan.host.old.stop.describe("stop")
    );
    run.step("stop-old", State::OldStopped, &what, |r| {
        steps::stop_old(r.p)
    })?;
    let what = format!("--{} with {} jobs", run.p.plan.mode.name(), run.p.plan.jobs);
    run.step("pg_upgrade", State::Upgraded, &what, |r| {
        steps::pg_upgrade(r.p, &new, &confdir, &r.p.plan.work_dir, &r.log_dir, false)
    })?;
    Ok(())
}

/// From the new cluster's first start to the end, resuming at the journaled state.
fn after_upgrade(run: &mut Run<'_>) -> Result<()> {
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
    report(run);
    Ok(())
}

fn start_new(run: &mut Run<'_>, fence: &Fence) -> Result<()> {
    let p = run.p;
    let new = p.plan.new.conf_dir();
    let leave_running = run.leave_running();
    let log = server::logfile(&run.log_dir, "new");
    let what = if leave_running {
        "with its real settings; clients are back"
    } else {
        "fenced, for extension updates and ANALYZE"
    };
    if interrupt::interrupted() {
        return Err(Error::Interrupted {
            before: "start-new".into(),
        });
    }
    if !p.plan.mode.old_survives_start() {
        // Journal the point of no return before crossing it: if pgleap dies during the
        // start, rollback must not assume the old data files are unchanged.
        run.journal.record.point_of_no_return = true;
        run.journal.write()?;
    }
    let what = if leave_running {
        format!("{what} ({})", p.plan.host.new.start.describe("start"))
    } else {
        what.to_string()
    };
    let started = run.step("start-new", State::NewStarted, &what, |r| {
        if leave_running {
            servers::start(r.p, Which::New, &log).map(|_| ())
        } else {
            server::start(
                &r.p.runner,
                &r.p.new.bindir,
                &new,
                Some((fence, p.plan.new.port)),
                &log,
            )
        }
    });
    if let Err(Error::Interrupted { .. }) = &started {
        // The signal came between the check above and the step's own: nothing started.
        run.journal.record.point_of_no_return = false;
        run.journal.write()?;
    }
    started.map_err(|e| {
        let state = if p.plan.mode.old_survives_start() {
            format!(
                "the old cluster at {} is stopped and intact; pgleap rollback brings it back",
                p.plan.old.datadir.display()
            )
        } else {
            format!(
                "pg_upgrade completed in --{} mode; the old cluster must not be started",
                p.plan.mode.name()
            )
        };
        step_failed(
            "start-new",
            e,
            &state,
            &format!(
                "read {} and fix the cause, then run pgleap upgrade again to resume",
                log.display()
            ),
        )
    })?;
    if let Some(ms) = run.journal.record.window_started_ms {
        run.journal.record.downtime_seconds = Some(now_millis().saturating_sub(ms) as f64 / 1000.0);
        run.journal.write()?;
    }
    if let Some(d) = run.journal.record.downtime_seconds {
        run.ui.line(&format!(
            "      downtime: {} (old stopped → new accepting connections)",
            secs(Duration::from_secs_f64(d))
        ));
    }
    Ok(())
}

/// On resume past the first start: the new server must be up for the remaining steps.
fn ensure_new_running(run: &mut Run<'_>, fence: &Fence) -> Result<()> {
    let new = &run.p.plan.new.datadir;
    if matches!(postmaster::liveness(new), Liveness::Running(_)) {
        return Ok(());
    }
    let log = server::logfile(&run.log_dir, "new");
    if run.leave_running() {
        return servers::start(run.p, Which::New, &log).map(|_| ());
    }
    server::start(
        &run.p.runner,
        &run.p.new.bindir,
        &run.p.plan.new.conf_dir(),
        Some((fence, run.p.plan.new.port)),
        &log,
    )
}

fn new_socket(run: &Run<'_>, fence: &Fence) -> PathBuf {
    match postmaster::liveness(&run.p.plan.new.datadir) {
        Liveness::Running(pm) => pm
            .socket_dir
            .unwrap_or_else(|| fence.socket_dir().to_path_buf()),
        _ => fence.socket_dir().to_path_buf(),
    }
}

fn superuser(p: &Prepared) -> String {
    p.plan
        .initdb
        .as_ref()
        .map_or_else(|| p.runner.owner().name.clone(), |o| o.superuser.clone())
}

/// Runs pg_upgrade's update_extensions.sql; a failure is a warning (the upgrade is done).
fn update_extensions(run: &mut Run<'_>, socket: &Path) -> Result<()> {
    let p = run.p;
    let script = p.plan.work_dir.join("update_extensions.sql");
    let res = run.step(
        "update-extensions",
        State::ExtensionsUpdated,
        "ALTER EXTENSION ... UPDATE",
        |r| {
            if !script.exists() {
                return Ok(());
            }
            let args = [
                "-X".to_string(),
                "-v".into(),
                "ON_ERROR_STOP=1".into(),
                "-h".into(),
                socket.display().to_string(),
                "-p".into(),
                p.plan.new.port.to_string(),
                "-U".into(),
                superuser(p),
                "-d".into(),
                "postgres".into(),
                "-f".into(),
                script.display().to_string(),
            ];
            let opts = Opts {
                log_name: Some("update-extensions"),
                ..Opts::default()
            };
            r.p.runner.run(&r.p.new.psql(), &args, &opts).map(|_| ())
        },
    );
    match res {
        Err(e @ Error::Interrupted { .. }) => Err(e),
        Err(e) => {
            run.warnings.push(Finding::warning(
                "update-extensions-failed",
                format!("updating extensions failed: {e}"),
                format!("Run it yourself: psql -f {} postgres", script.display()),
            ));
            run.journal.set_state(State::ExtensionsUpdated)
        }
        Ok(()) => Ok(()),
    }
}

/// ANALYZE while clients are served; a failure is a warning with the command to run.
fn analyze(run: &mut Run<'_>, socket: &Path) -> Result<()> {
    let p = run.p;
    if !p.plan.analyze {
        return run.journal.set_state(State::Analyzed);
    }
    // 18: pg_upgrade carries optimizer statistics; only what it did not carry is missing.
    let missing_only = p.new.major >= 18;
    let what = if missing_only {
        "relations without statistics, in stages"
    } else {
        "all relations, in stages (minimal statistics first)"
    };
    let target = db::Target::new(
        socket,
        p.plan.new.port,
        vec![superuser(p), p.runner.owner().name.clone()],
    );
    let jobs = p.plan.jobs.to_string();
    let mut req = vec!["analyze", "--jobs", jobs.as_str(), "--stages"];
    if missing_only {
        req.push("--missing-only");
    }
    let progress = crate::ui::progress::Progress::new("analyze");
    let on_output = |line: &str| {
        if let Some(rest) = line.strip_prefix("analyze ") {
            progress.detail(rest);
        }
    };
    let result = run.step("analyze", State::Analyzed, what, |r| {
        let answer = db::call_with_progress::<db::AnalyzeReport>(
            &r.p.runner,
            &req,
            &target,
            Some(&on_output),
        );
        progress.finish();
        answer
    });
    match result {
        Ok(a) => {
            run.ui.line(&format!(
                "      analyzed {} relations in {} databases",
                a.relations, a.databases
            ));
            run.analyzed = Some(a);
            Ok(())
        }
        Err(e @ Error::Interrupted { .. }) => Err(e),
        Err(e) => {
            run.warnings.push(Finding::warning(
                "analyze-failed",
                format!("ANALYZE failed: {e}"),
                format!(
                    "Run it yourself: vacuumdb --all --analyze-in-stages{}",
                    if missing_only {
                        " --missing-stats-only"
                    } else {
                        ""
                    }
                ),
            ));
            run.journal.set_state(State::Analyzed)
        }
    }
}

fn report(run: &Run<'_>) {
    let p = run.p;
    let r = &run.journal.record;
    run.ui.findings(&run.warnings);
    let old_note = old_cluster_note(p);
    let downtime = r
        .downtime_seconds
        .map_or_else(|| "unknown".into(), |d| secs(Duration::from_secs_f64(d)));
    let running = if run.leave_running() {
        format!(
            "The new server is running; what it prints to stderr goes to {} (with logging_collector on, its own log directory holds the rest).\n",
            server::logfile(&run.log_dir, "new").display()
        )
    } else {
        "The new cluster is stopped; start it as you started the old one.\n".to_string()
    };
    run.ui.line(&format!(
        "\nUpgraded {} (PostgreSQL {}) to {} (PostgreSQL {}) in --{} mode; downtime {downtime}.\n{running}{old_note}\nLogs: {}",
        p.plan.old.datadir.display(),
        p.plan.old.major,
        p.plan.new.datadir.display(),
        p.plan.new.major,
        p.plan.mode.name(),
        run.log_dir.display()
    ));
    run.ui.json(&json!({
        "ok": true,
        "plan": p.plan,
        "steps": r.steps,
        "downtime_seconds": r.downtime_seconds,
        "new_running": run.leave_running(),
        "config": run.carried,
        "analyze": run.analyzed,
        "warnings": run.warnings,
        "old_cluster": old_note,
        "boot": run.boot,
        "log_dir": run.log_dir,
        "journal": run.journal.path(),
    }));
}

fn old_cluster_note(p: &Prepared) -> String {
    let old = p.plan.old.datadir.display();
    if p.plan.mode.old_survives_start() {
        format!(
            "The old cluster at {old} is intact: pgleap rollback goes back to it; pgleap finalize removes it when you are satisfied."
        )
    } else {
        format!(
            "The old cluster at {old} shares data files with the new one (--{} mode) and can no longer be started; pgleap finalize removes it when you are satisfied.",
            p.plan.mode.name()
        )
    }
}

fn step_failed(step: &str, e: Error, state: &str, next: &str) -> Error {
    Error::Step {
        step: step.into(),
        state: state.into(),
        next: next.into(),
        source: Box::new(e),
    }
}

/// A failure or interrupt before the point of no return: put the old cluster back as it
/// was found and report the original error with what was done.
fn auto_rollback(run: &mut Run<'_>, e: Error) -> Error {
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
