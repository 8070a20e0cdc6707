//! Carrying out an upgrade: walking `steps::order::ORDER` forward from the journaled state,
//! each step journaled before and after it runs, and the automatic rollback when a step
//! fails before the point of no return.

use crate::error::{Error, Result};
use crate::state::journal::State;
use crate::steps::order::ORDER;
use crate::steps::undo::{self, Discard};

use super::step::{Run, step_failed};

/// How a run of the steps ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finished {
    /// Every step ran.
    Done,
    /// Paused before the new primary's first start, for the standbys' rsync (see
    /// `preflight::standby::pauses`); journaled, so the next run starts it.
    PausedForStandbys,
}

/// Runs every step after the journaled state, in order. A failure of a step that
/// [rolls back](super::step::Step::rolls_back) puts the old cluster back first.
pub(crate) fn carry_out(run: &mut Run<'_>) -> Result<Finished> {
    // A run killed while the old server was fenced left its pg_hba.conf to put back.
    if let Some(note) = super::fence::lift(run.p, &mut run.journal)? {
        run.ui.line(&format!("      {note}"));
    }
    for (i, step) in ORDER.iter().enumerate() {
        if step.reaches() <= run.journal.record.state {
            continue;
        }
        if step.reaches() == State::NewStarted && pause_for_standbys(run)? {
            return Ok(Finished::PausedForStandbys);
        }
        run.at = (i + 1, ORDER.len());
        if let Err(e) = step.run(run) {
            return Err(if step.rolls_back(&e) {
                auto_rollback(run, e)
            } else {
                e
            });
        }
    }
    Ok(Finished::Done)
}

/// The first time the new primary is about to start in link mode with standbys to rebuild
/// later: journal the pause and stop there. A resumed run goes on.
fn pause_for_standbys(run: &mut Run<'_>) -> Result<bool> {
    let plan = &run.p.plan;
    let link = plan.mode == crate::plan::Mode::Link;
    let r = &mut run.journal.record;
    if r.paused_for_standbys {
        // Resumed: the pause ends here (the downtime is reported with and without it).
        if r.pause
            .as_mut()
            .is_some_and(crate::state::pause::Pause::end)
        {
            run.journal.write()?;
        }
        return Ok(false);
    }
    if !crate::preflight::standby::pauses(plan.replication.as_ref(), link) {
        return Ok(false);
    }
    r.paused_for_standbys = true;
    r.pause = Some(crate::state::pause::Pause::begin());
    run.journal.write()?;
    Ok(true)
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
