//! `pgleap status`: where an upgrade stands, whether rollback is still possible, and the
//! exact next command. Reads the journal only; changes nothing.

use std::time::Duration;

use serde_json::json;

use crate::cli::StatusArgs;
use crate::error::Result;
use crate::state::journal::{Journal, State};
use crate::state::lock;
use crate::steps::undo;
use crate::ui::report::{Ui, secs};

pub(crate) fn execute(args: &StatusArgs) -> Result<()> {
    let ui = Ui { json: args.json };
    let j = super::find_journal(&args.target)?;
    let r = &j.record;
    let plan = &r.plan;
    let holder = lock::is_locked(&plan.work_dir)
        .then(|| lock::holder(&plan.work_dir))
        .flatten();
    let blocker = undo::impossible(&j);
    let next = next_command(&j, holder);
    let steps: Vec<String> = r
        .steps
        .iter()
        .map(|s| format!("{} {}", s.name, secs(Duration::from_secs_f64(s.seconds))))
        .collect();
    let state = match (&r.running, holder) {
        (Some(step), Some(pid)) => {
            format!("{} (pgleap pid {pid} is running {step})", r.state.name())
        }
        (Some(step), None) => format!("{} (interrupted during {step})", r.state.name()),
        (None, _) if paused(&j) => format!(
            "{} (paused before the new primary's first start, for the standbys' rsync; the downtime window is open: clients are down)",
            r.state.name()
        ),
        (None, _) => r.state.name().to_string(),
    };
    let rollback_line = match (&blocker, r.state) {
        (_, State::RolledBack) => "done".to_string(),
        (Some(f), _) => format!("no longer possible: {}", f.message),
        (None, _) if plan.mode.old_survives_start() => {
            format!("possible (--{} mode: until finalize)", plan.mode.name())
        }
        (None, _) => format!(
            "possible until the new cluster's first start (--{} mode)",
            plan.mode.name()
        ),
    };
    ui.line(&format!(
        "Upgrade of {} (PostgreSQL {}) to {} (PostgreSQL {}), --{} mode{}\n  state:     {state}\n  steps:     {}\n  downtime:  {}{}\n  rollback:  {rollback_line}\n  journal:   {}\n  next:      {next}",
        plan.old.datadir.display(),
        plan.old.major,
        plan.new.datadir.display(),
        plan.new.major,
        plan.mode.name(),
        plan.mode_fallback.as_ref().map(|why| format!(" (auto fell back from --copy-file-range: {why})")).unwrap_or_default(),
        if steps.is_empty() { "none yet".to_string() } else { steps.join(", ") },
        downtime(r, paused(&j)),
        timings(r),
        j.path().display(),
    ));
    let replication = if r.state == State::Done {
        super::upgrade::replication_report(plan, &r.replication)
    } else if paused(&j) {
        super::upgrade::paused_text(plan, r.old_checkpoint.as_deref())
    } else {
        String::new()
    };
    if !replication.is_empty() {
        ui.line(replication.trim_end());
    }
    ui.json(&json!({
        "replication": (!replication.is_empty()).then_some(&replication),
        "state": r.state,
        "running": r.running,
        "in_progress_by": holder,
        "mode": plan.mode,
        "old_datadir": plan.old.datadir,
        "new_datadir": plan.new.datadir,
        "steps": r.steps,
        "downtime_seconds": r.downtime_seconds,
        "pause_seconds": r.pause.map(|p| p.seconds()),
        "downtime_without_pause_seconds": crate::state::pause::downtime_without_pause(r.downtime_seconds, r.pause),
        "shutdown_seconds": r.shutdown_seconds,
        "pre_stop_checkpoint": r.pre_stop_checkpoint,
        "analyze": r.analyze,
        "mode_fallback": plan.mode_fallback,
        "point_of_no_return": r.point_of_no_return,
        "rollback_possible": blocker.is_none() && r.state != State::RolledBack,
        "next": next,
        "journal": j.path(),
    }));
    Ok(())
}

/// The downtime, with and without the pause for the standbys' rsync; while `paused`, how long
/// the pause has lasted so far.
fn downtime(r: &crate::state::journal::Record, paused: bool) -> String {
    let note = crate::state::pause::downtime_note(r.downtime_seconds, r.pause);
    match (r.downtime_seconds, r.pause) {
        (Some(d), _) if note.is_empty() => secs(Duration::from_secs_f64(d)),
        (Some(d), _) => format!("{} ({note})", secs(Duration::from_secs_f64(d))),
        // Rolled back while paused: the pause never ended, and no window closed.
        (None, Some(p)) if p.ended_ms.is_none() && !paused => "not yet".into(),
        (None, Some(p)) if p.ended_ms.is_none() => format!(
            "not yet (paused for the standbys' rsync for {} so far)",
            secs(Duration::from_secs_f64(p.seconds()))
        ),
        (None, Some(p)) => format!(
            "not yet (after a pause for the standbys' rsync of {})",
            secs(Duration::from_secs_f64(p.seconds()))
        ),
        (None, None) => "not yet".into(),
    }
}

/// The downtime's parts and the statistics' progress, as the upgrade's report gave them:
/// "\n  shutdown:  0.8s (...)\n  statistics: minimal ... after 1.2s, full after 4.1s".
fn timings(r: &crate::state::journal::Record) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if let Some(s) = r.shutdown_seconds {
        let checkpoints = r.pre_stop_checkpoint.as_ref().map_or(0, |c| c.rounds.len());
        let _ = write!(
            out,
            "\n  shutdown:  {} (the old server's, inside the downtime; {checkpoints} CHECKPOINT{} before it)",
            secs(Duration::from_secs_f64(s)),
            if checkpoints == 1 { "" } else { "s" }
        );
    }
    if let Some(a) = &r.analyze {
        let stages = crate::steps::analyze::stage_times(&a.stage_seconds);
        let _ = write!(
            out,
            "\n  analyze:   {} relations in {} databases{stages}",
            a.relations, a.databases
        );
    }
    out
}

/// Paused for the standbys' rsync, the new primary not started yet.
fn paused(j: &Journal) -> bool {
    j.record.paused_for_standbys && j.record.state == State::Upgraded && j.record.running.is_none()
}

fn next_command(j: &Journal, holder: Option<u32>) -> String {
    let plan = &j.record.plan;
    let target = format!(
        "--old-datadir {} --new-datadir {}",
        plan.old.datadir.display(),
        plan.new.datadir.display()
    );
    if let Some(pid) = holder {
        return format!("wait: pgleap (pid {pid}) is working on it");
    }
    match j.record.state {
        State::Done => {
            let back = if undo::impossible(j).is_none() {
                format!(" (or go back: pgleap rollback {target})")
            } else {
                String::new()
            };
            format!("pgleap finalize {target} once you are satisfied{back}")
        }
        State::RolledBack => {
            format!("nothing: the old cluster is back (pgleap upgrade {target} starts again)")
        }
        State::Finalized => "nothing: the upgrade is complete".into(),
        _ if paused(j) => format!(
            "rebuild the standbys as below, then pgleap upgrade {target} (starts the new primary), or pgleap rollback {target}"
        ),
        _ if undo::impossible(j).is_some() => {
            format!("pgleap upgrade {target} (resumes where it stopped)")
        }
        _ => format!(
            "pgleap upgrade {target} (resumes where it stopped), or pgleap rollback {target}"
        ),
    }
}
