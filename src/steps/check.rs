//! Before the window: `pg_upgrade --check` against the new cluster, while the old server
//! still serves. When `auto` chose copy-file-range and pg_upgrade's own probe refuses it, the
//! plan falls back to copy here, journaled, and the check runs again: still before the window.

use std::path::Path;

use crate::error::Result;
use crate::exec::ownerfs;
use crate::plan::Mode;
use crate::preflight::mode;
use crate::state::journal::State;

use super::pg_upgrade::pg_upgrade;
use super::step::{Phase, Run, Step, Undoing};

pub(crate) struct Check;

impl Step for Check {
    fn name(&self) -> &'static str {
        "check"
    }
    fn reaches(&self) -> State {
        State::Checked
    }
    fn phase(&self) -> Phase {
        Phase::Serving
    }

    fn run(&self, run: &mut Run<'_>) -> Result<()> {
        let new = run.p.plan.new.datadir.clone();
        let confdir = run.p.plan.new.conf_dir();
        // Timed for the downtime estimate, with initdb's time: it starts servers and reads
        // every database's catalog as the window does. Not after a fallback, which ran the
        // check twice.
        let started = std::time::Instant::now();
        let (judged, fell_back) = run.step(self, "pg_upgrade --check", |r| {
            let fell_back = check_in_journaled_mode(r, &new, &confdir)?;
            Ok((super::collations::check_new(r, &confdir, &new)?, fell_back))
        })?;
        if let Some(e) = run.estimate.take() {
            let inputs = &run.journal.record.plan.downtime_inputs;
            run.estimate = Some(if fell_back {
                e
            } else {
                let e = e.with_check(inputs, started.elapsed().as_secs_f64());
                run.ui.line(&format!(
                    "      downtime estimate: {:.1}s ({})",
                    e.seconds, e.basis
                ));
                e
            });
        }
        if let Some(s) = judged {
            // What the collations step after the window repairs, also in a resumed upgrade.
            run.journal.record.plan.collations = s;
            run.journal.write()?;
        }
        Ok(())
    }

    /// pg_upgrade --check starts the new cluster: a server it left there is stopped.
    fn undo(&self, u: &mut Undoing<'_>) -> Result<()> {
        u.stop_new_fenced()
    }
}

/// `pg_upgrade --check` in the journaled mode. When it refuses the copy-file-range that `auto`
/// chose, the journal's plan falls back to copy (the pg_upgrade step reads its mode from
/// there) before the check runs again with `--copy`. True when it fell back.
fn check_in_journaled_mode(r: &mut Run<'_>, new: &Path, confdir: &Path) -> Result<bool> {
    let (work_dir, mode) = (&r.p.plan.work_dir, r.journal.record.plan.mode);
    let Err(e) = pg_upgrade(r.p, mode, new, confdir, work_dir, &r.log_dir, true) else {
        return Ok(false);
    };
    let Some(refusal) = mode::copy_file_range_refused(&r.journal.record.plan, &e) else {
        return Err(e);
    };
    // pg_upgrade removes its probe's file only when the probe succeeds.
    let probe = new.join("PG_VERSION.copy_file_range_test");
    if probe.symlink_metadata().is_ok() {
        ownerfs::remove_file_as(r.p.runner.owner(), &probe)?;
    }
    mode::fall_back_to_copy(&mut r.journal.record.plan, &refusal);
    r.journal.write()?;
    // The estimate initdb scaled to this machine, for the copy that will run.
    if let Some(e) = r.estimate.take() {
        let inputs = &r.journal.record.plan.downtime_inputs;
        r.estimate = Some(e.redone(inputs));
    }
    r.ui.line(&format!(
        "      pg_upgrade --check refused --copy-file-range ({refusal}): falling back to --copy, before the window"
    ));
    pg_upgrade(r.p, Mode::Copy, new, confdir, work_dir, &r.log_dir, true).map(|_| true)
}
