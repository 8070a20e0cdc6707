//! The window opens: a CHECKPOINT while the old server still serves, then the old server
//! stops through what manages it, and must have shut down cleanly.

use crate::error::{Error, Finding, Result};
use crate::exec::postmaster::{self, Liveness};
use crate::exec::server::{self};
use crate::inspect::checkpoint::CheckpointReport;
use crate::inspect::db;
use crate::plan::prepare::Prepared;
use crate::state::journal::{State, now_millis};
use crate::steps::servers::{self, Which};

use super::step::{Phase, Run, Step, Undoing, superuser};

pub(crate) struct StopOld;

impl Step for StopOld {
    fn name(&self) -> &'static str {
        "stop-old"
    }
    fn reaches(&self) -> State {
        State::OldStopped
    }
    fn phase(&self) -> Phase {
        Phase::Window
    }

    fn run(&self, run: &mut Run<'_>) -> Result<()> {
        // Before anything of the window: a refusal here leaves the old server serving (17+
        // with logical slots: fenced, consumers waited for, see `fence`).
        super::fence::before_stop(run)?;
        read_ahead(run);
        checkpoint_old(run);
        run.journal.record.window_started_ms = Some(now_millis());
        let what = format!(
            "fast shutdown of the old server ({}); clients are cut off",
            run.p.plan.host.old.stop.describe("stop")
        );
        run.step(self, &what, |r| {
            let started = std::time::Instant::now();
            let checkpoint = stop_old(r.p)?;
            // Journaled with the step's end: no extra write inside the window. The old
            // checkpoint is what a standby's rebuild checks it has caught up with (link
            // mode's pg_upgrade renames the old pg_control).
            r.journal.record.shutdown_seconds = Some(started.elapsed().as_secs_f64());
            r.journal.record.old_checkpoint = Some(checkpoint);
            Ok(())
        })?;
        if let Some(note) = super::fence::lift(run.p, &mut run.journal)? {
            run.ui.line(&format!("      {note}"));
        }
        Ok(())
    }

    /// A server on the old data directory (the old one caught midway through its shutdown)
    /// is stopped; rollback then starts the old server again if it was running.
    fn undo(&self, u: &mut Undoing<'_>) -> Result<()> {
        u.stop_on_old()
    }
}

/// How long the owner may spend asking the kernel to read ahead (the reading itself goes on
/// in the background, during the CHECKPOINTs and the stop).
const READ_AHEAD_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Copying modes, while the old server still serves: its relation files read ahead into the
/// page cache (see `exec::readahead`), so that pg_upgrade's copy inside the window reads
/// them from memory; only when they fit in half the memory the kernel has available, so
/// nothing the running server needs is pushed out for it. Best effort: changes nothing on
/// disk, and a failure only costs time.
fn read_ahead(run: &mut Run<'_>) {
    use crate::inspect::space::human;
    let p = run.p;
    // The journaled mode: auto may have fallen back from copy-file-range to copy.
    if !run.journal.record.plan.mode.copies_data() {
        return;
    }
    let (bytes, Some(available)) = (
        p.plan.relation_bytes,
        crate::exec::readahead::memory_available(),
    ) else {
        return;
    };
    if bytes > available / 2 {
        run.ui.line(&format!(
            "      relation files not read ahead: {} is more than half the memory available ({})",
            human(bytes),
            human(available)
        ));
        return;
    }
    let prefix = format!("PG_{}_", p.old.major);
    match crate::exec::ownerfs::read_ahead_as(
        p.runner.owner(),
        &p.plan.old.datadir,
        &p.plan.tablespaces,
        &prefix,
        available / 2,
        READ_AHEAD_LIMIT,
    ) {
        Ok(r) => run.ui.line(&format!(
            "      read ahead: {} of relation files ({} files) into the page cache{} ({:.1}s)",
            human(r.bytes),
            r.files,
            if r.complete { "" } else { ", not all of them" },
            r.seconds
        )),
        Err(e) => tracing::warn!("cannot read the relation files ahead: {e}"),
    }
}

/// While the old server still serves: CHECKPOINTs until little is left to flush (see
/// `inspect::checkpoint`), the last right before the stop, so that the shutdown checkpoint
/// inside the downtime window has little left to write. Best effort: a failure only costs
/// time.
fn checkpoint_old(run: &mut Run<'_>) {
    let p = run.p;
    let Liveness::Running(pm) = postmaster::liveness(&p.plan.old.datadir) else {
        return;
    };
    let Some(socket) = pm.socket_dir else { return };
    let users = vec![superuser(p), p.runner.owner().name.clone()];
    let target = db::Target::new(&socket, pm.port.unwrap_or(p.plan.old.port), users);
    let rounds = crate::inspect::checkpoint::MAX_ROUNDS.to_string();
    match db::call::<CheckpointReport>(&p.runner, &["checkpoint", "--rounds", &rounds], &target) {
        Ok(report) => {
            run.ui.line(&format!(
                "      before the stop: {}",
                describe_checkpoints(&report)
            ));
            run.journal.record.pre_stop_checkpoint = Some(report);
        }
        Err(e) => run.warnings.push(Finding::warning(
            "checkpoint-failed",
            format!("CHECKPOINT before stopping the old server failed: {e}"),
            "",
        )),
    }
}

/// "2 CHECKPOINTs (3.1s, 0.4s; 51234, 2210 buffers written)".
fn describe_checkpoints(r: &CheckpointReport) -> String {
    use std::fmt::Write as _;
    let secs: Vec<String> = r
        .rounds
        .iter()
        .map(|x| format!("{:.1}s", x.seconds))
        .collect();
    let written: Vec<String> = r
        .rounds
        .iter()
        .filter_map(|x| x.buffers_written.map(|b| b.to_string()))
        .collect();
    let mut s = format!(
        "{} CHECKPOINT{} ({}",
        r.rounds.len(),
        if r.rounds.len() == 1 { "" } else { "s" },
        secs.join(", ")
    );
    if written.len() == r.rounds.len() {
        let _ = write!(s, "; {} buffers written", written.join(", "));
    }
    s.push(')');
    if let Some(d) = r.dirty_left {
        let _ = write!(s, ", {d} buffers left dirty");
    }
    s
}

/// Stops the old server (through what manages it) and verifies pg_control says it shut down
/// cleanly. Returns its latest checkpoint location.
pub(crate) fn stop_old(p: &Prepared) -> Result<String> {
    match postmaster::liveness(&p.plan.old.datadir) {
        Liveness::Stopped => {}
        Liveness::Running(_) => {
            servers::stop(p, Which::Old)?;
        }
        Liveness::Stale { .. } => server::stop(&p.runner, &p.old.bindir, &p.plan.old.datadir)?,
    }
    let control = p.cluster.control_data(&p.runner, &p.old)?;
    if !control.cleanly_shut_down() {
        return Err(Error::UncleanShutdown {
            datadir: p.plan.old.datadir.clone(),
            state: control.state,
        });
    }
    Ok(control.checkpoint)
}
