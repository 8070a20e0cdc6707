//! `pgleap upgrade`: run the plan, journaling every step, or resume one that stopped.
//!
//! Preparation (initdb, configuration, pg_upgrade --check) happens while the old server still
//! serves; the downtime window holds only stop-old, pg_upgrade and start-new; extension
//! updates and ANALYZE run after clients are back.
//!
//! Invariant: before the point of no return (the new cluster's first start in link or swap
//! mode) any failure or interrupt puts the old cluster back as it was found, running again if
//! it was running. A crash leaves a journal from which this command resumes.

use std::time::Duration;

use serde_json::json;

use crate::cli::UpgradeArgs;
use crate::error::Finding;
use crate::error::{Error, Result};
use crate::exec::interrupt;
use crate::exec::server::{self};
use crate::plan::Mode;
use crate::plan::args::{CheckArgs, Target};
use crate::plan::prepare::{Prepared, Purpose, prepare};
use crate::state::journal::{Journal, State};
use crate::state::lock::Lock;
use crate::steps;
use crate::steps::run::{Finished, carry_out};
use crate::steps::step::Run;
use crate::steps::undo::{self, Discard};
use crate::ui::report::{Ui, secs};

pub(crate) fn execute(args: &UpgradeArgs) -> Result<()> {
    interrupt::install(interrupt::OnSignal::SafePoint);
    let ui = Ui {
        json: args.common.json,
    };
    let root =
        crate::host::root::host_root(args.common.target.root.as_deref()).map_err(Error::from)?;
    let (old_datadir, _) =
        crate::plan::prepare::old_target(&root, &args.common).map_err(Error::from)?;
    // One run at a time on this cluster, whatever new data directory each was given.
    let _old_lock = if old_datadir.is_dir() {
        crate::state::oldlock::OldLock::exclusive(&old_datadir)?
    } else {
        None
    };
    if let Some(j) =
        crate::state::locate::locate(&old_datadir, args.common.target.new_datadir.as_deref())?
    {
        match j.record.state {
            State::Done => {
                ui.line(&format!(
                    "{} was already upgraded to {} (journal {}); nothing to do. pgleap finalize removes the old cluster when you are satisfied.",
                    old_datadir.display(),
                    j.record.plan.new.datadir.display(),
                    j.path().display()
                ));
                ui.json(&serde_json::json!({
                    "ok": true,
                    "state": j.record.state,
                    "nothing_to_do": true,
                    "plan": j.record.plan,
                    "new_datadir": j.record.plan.new.datadir,
                    "journal": j.path(),
                }));
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
    p.plan.steps = steps::order::names();
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
    let _lock = Lock::acquire(&p.plan.work_dir, p.runner.owner())?;
    steps::create_owned_dir(&log_dir, p.runner.owner())?;
    ui.logs(&log_dir);
    p.runner.set_log_dir(log_dir.clone());
    let journal = Journal::create(&p.plan, p.plan.old_running)?;
    let mut run = Run::new(&p, ui, journal, log_dir, p.findings.0.clone());
    let how = carry_out(&mut run)?;
    finish(&run, how);
    Ok(())
}

/// Continues an upgrade from its journal.
fn resume(args: &UpgradeArgs, ui: Ui, j: Journal) -> Result<()> {
    let work_dir = j.record.plan.work_dir.clone();
    let lock = Lock::acquire(&work_dir, j.owner())?;
    // Re-read under the lock: the holder may have moved on.
    let mut j = Journal::load(&work_dir)?.unwrap_or(j);
    let plan = super::verified_plan(
        &args.common.target,
        args.common.stop_command.as_deref(),
        args.common.start_command.as_deref(),
        &mut j,
    )?;
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
        // A run killed while the old server was fenced: its pg_hba.conf first.
        let mut undone: Vec<String> = crate::steps::fence::lift(&p, &mut j)?.into_iter().collect();
        undone.extend(undo::undo_new(&p, &j, Discard::Remove)?);
        for n in &undone {
            ui.line(&format!("      {n}"));
        }
        j.archive()?;
        drop(lock);
        let again = args_from_plan(args, &p);
        return fresh(&again, ui, Some(old_was_running)).map_err(|e| match e {
            // The undo did change things: say what, instead of "Nothing was changed".
            Error::Refused { findings } if !undone.is_empty() => Error::RefusedAfterCleanup {
                findings,
                note: format!(
                    "Before refusing, pgleap undid the interrupted upgrade: {}.",
                    undone.join("; ")
                ),
            },
            e => e,
        });
    }
    let log_dir = p.plan.work_dir.join("logs");
    let mut run = Run::new(&p, ui, j, log_dir, Vec::new());
    let how = carry_out(&mut run)?;
    finish(&run, how);
    Ok(())
}

/// The flags of a redo: the journaled plan's binaries, paths, mode and options.
fn args_from_plan(args: &UpgradeArgs, p: &Prepared) -> UpgradeArgs {
    let plan = &p.plan;
    let policies = plan
        .replication
        .as_ref()
        .map_or_else(|| args.common.policies(), |r| r.policies);
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
            collations: plan.collations.mode,
            jobs: u32::try_from(plan.jobs).ok(),
            username: args.common.username.clone(),
            slots: policies.slots,
            subscriptions: policies.subscriptions,
            standbys: policies.standbys,
            standby: plan
                .replication
                .iter()
                .flat_map(|r| &r.standby_places)
                .filter(|s| s.given)
                .map(|s| crate::preflight::standby::StandbyArg {
                    name: s.name.clone(),
                    host: s.host.clone(),
                    dir: s.old_dir.clone(),
                })
                .collect(),
            json: args.common.json,
        },
        port: Some(plan.new.port),
        no_analyze: !plan.analyze,
        leave_stopped: plan.leave_stopped,
    }
}

fn finish(run: &Run<'_>, how: Finished) {
    match how {
        Finished::Done => report(run),
        Finished::PausedForStandbys => paused_report(run),
    }
}

/// `--old-datadir OLD --new-datadir NEW`, quoted for a shell.
pub(crate) fn target_args(plan: &crate::plan::Plan) -> String {
    shell_words::join([
        "--old-datadir",
        &plan.old.datadir.display().to_string(),
        "--new-datadir",
        &plan.new.datadir.display().to_string(),
    ])
}

/// Where a paused upgrade stands, the standbys' rsync, and what comes next (`status` says
/// the same while it is paused).
pub(crate) fn paused_text(plan: &crate::plan::Plan, checkpoint: Option<&str>) -> String {
    let target = target_args(plan);
    let resume = format!("pgleap upgrade {target}");
    format!(
        "Paused before the new primary's first start, so that the standbys can be rebuilt with rsync: pg_upgrade has finished in --link mode and no server has run on {}. The downtime window is still open: clients are still down.\n{}Next: {resume} starts the new primary and closes the window; or pgleap rollback {target} brings the old primary back.",
        plan.new.datadir.display(),
        crate::ui::standby::paused(plan, checkpoint, &resume)
    )
}

fn paused_report(run: &Run<'_>) {
    let r = &run.journal.record;
    run.ui.findings(&run.warnings);
    let text = paused_text(&run.p.plan, r.old_checkpoint.as_deref());
    run.ui.line(&format!("\n{text}"));
    run.ui.json(&json!({
        "ok": true,
        "paused": true,
        "state": r.state,
        "plan": run.p.plan,
        "steps": r.steps,
        "old_checkpoint": r.old_checkpoint,
        "standbys": text,
        "next": format!("pgleap upgrade {}", target_args(&run.p.plan)),
        "log_dir": run.log_dir,
        "journal": run.journal.path(),
    }));
}

fn report(run: &Run<'_>) {
    let p = run.p;
    let r = &run.journal.record;
    run.ui.findings(&run.warnings);
    let old_note = old_cluster_note(p);
    let mut downtime = r
        .downtime_seconds
        .map_or_else(|| "unknown".into(), |d| secs(Duration::from_secs_f64(d)));
    let pause = crate::state::pause::downtime_note(r.downtime_seconds, r.pause);
    if let Some(s) = r.shutdown_seconds {
        downtime = format!(
            "{downtime} (the old server's shutdown: {}{}{pause})",
            secs(Duration::from_secs_f64(s)),
            if pause.is_empty() { "" } else { "; " }
        );
    } else if !pause.is_empty() {
        downtime = format!("{downtime} ({pause})");
    }
    let running = if run.leave_running() {
        format!(
            "The new server is running; what it prints to stderr goes to {} (with logging_collector on, its own log directory holds the rest).\n",
            server::logfile(&run.log_dir, "new").display()
        )
    } else {
        "The new cluster is stopped; start it as you started the old one.\n".to_string()
    };
    let replication = replication_report(&p.plan, &run.journal.record.replication);
    // The journaled plan: the mode auto fell back to, the collations the check judged.
    let plan = &r.plan;
    let fallback = plan
        .mode_fallback
        .as_ref()
        .map(|why| {
            format!(" (pg_upgrade --check refused --copy-file-range before the window: {why})")
        })
        .unwrap_or_default();
    run.ui.line(&format!(
        "\nUpgraded {} (PostgreSQL {}) to {} (PostgreSQL {}) in --{} mode{fallback}; downtime {downtime}.\n{running}{old_note}\n{replication}Logs: {}",
        plan.old.datadir.display(),
        plan.old.major,
        plan.new.datadir.display(),
        plan.new.major,
        plan.mode.name(),
        run.log_dir.display()
    ));
    run.ui.json(&json!({
        "ok": true,
        "plan": plan,
        "steps": r.steps,
        "downtime_seconds": r.downtime_seconds,
        "pause_seconds": r.pause.map(|p| p.seconds()),
        "downtime_without_pause_seconds": crate::state::pause::downtime_without_pause(r.downtime_seconds, r.pause),
        "downtime_estimate": run.estimate,
        "shutdown_seconds": r.shutdown_seconds,
        "pg_upgrade_phases": r.pg_upgrade_phases,
        "pre_stop_checkpoint": r.pre_stop_checkpoint,
        "new_running": run.leave_running(),
        "config": run.carried,
        "analyze": run.analyzed,
        "collations": run.collations.as_ref().map(|(r, seconds)| json!({
            "drifted": r.drifted,
            "indexes": r.indexes,
            "bytes": r.bytes,
            "rebuilt": r.rebuilt,
            "failed": r.failed,
            "refreshed": r.refreshed,
            "cleaned": r.cleaned,
            "left": r.left,
            "seconds": seconds,
        })),
        "warnings": run.warnings,
        "old_cluster": old_note,
        "boot": run.boot,
        "replication": (!replication.is_empty()).then_some(&replication),
        "log_dir": run.log_dir,
        "journal": run.journal.path(),
    }));
}

pub(crate) fn old_cluster_note(p: &Prepared) -> String {
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

/// The report's replication section (empty without replication). The old cluster's origin
/// progress is read now, after pg_upgrade stopped it for the last time: subscriptions of an
/// old cluster before 17 resume from there.
pub(crate) fn replication_report(
    plan: &crate::plan::Plan,
    outcome: &crate::preflight::replication::Outcome,
) -> String {
    let Some(r) = &plan.replication else {
        return String::new();
    };
    let origins = (!r.facts.subscriptions.is_empty() && plan.old.major < 17)
        .then(|| crate::inspect::replication::read_origin_progress(&plan.owner, &plan.old.datadir))
        .flatten();
    crate::ui::replication::report(plan, origins.as_deref(), outcome)
}
