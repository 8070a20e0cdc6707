//! Before the window: `initdb` of the new data directory with the old cluster's options
//! (superuser, encoding, locale, checksums, WAL segment size).

use std::path::Path;

use crate::error::{Error, Result};
use crate::exec::process::Opts;
use crate::plan::prepare::Prepared;
use crate::state::identity;
use crate::state::journal::State;

use super::create_owned_dir;
use super::step::{Phase, Run, Step, Undoing};

/// `initdb` with the old cluster's options.
pub(crate) fn initdb(p: &Prepared, datadir: &Path) -> Result<()> {
    let opts = p.plan.initdb.as_ref().ok_or(Error::InitdbOptionsUnknown)?;
    create_owned_dir(datadir, p.runner.owner())?;
    let mut args = vec!["-D".to_string(), datadir.display().to_string()];
    args.extend(opts.args(p.new.major));
    if let Some(wal) = &p.plan.new.waldir {
        // Beside the old cluster's WAL directory, on the volume chosen for WAL.
        create_owned_dir(wal, p.runner.owner())?;
        args.push(format!("--waldir={}", wal.display()));
    }
    // The new cluster's files are replaced by pg_upgrade; no need to fsync them twice.
    args.push("--no-sync".into());
    p.runner.run(
        &p.new.initdb(),
        &args,
        &Opts {
            log_name: Some("initdb"),
            ..Opts::default()
        },
    )?;
    Ok(())
}

/// The first step: the new data directory, made by the owner and bound to this upgrade,
/// then `initdb` with the old cluster's options.
pub(crate) struct Initdb;

impl Step for Initdb {
    fn name(&self) -> &'static str {
        "initdb"
    }
    fn reaches(&self) -> State {
        State::NewInitialized
    }
    fn phase(&self) -> Phase {
        Phase::Serving
    }

    fn run(&self, run: &mut Run<'_>) -> Result<()> {
        let new = run.p.plan.new.datadir.clone();
        // Recorded before initdb: from here on, undo removes only this very directory.
        let owner = run.p.runner.owner();
        create_owned_dir(&new, owner)?;
        run.journal.record.identity = identity::begin(&run.p.plan.old.datadir, &new)?;
        run.journal.write()?;
        let id = run.journal.record.identity.clone();
        // Timed for the downtime estimate, which scales with this machine's initdb.
        let started = std::time::Instant::now();
        let what = format!("{} with the old cluster's options", new.display());
        run.step(self, &what, |r| {
            initdb(r.p, &new)?;
            identity::mark_new(&id, owner, &new)
        })?;
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
        Ok(())
    }

    /// Nothing may run on the directory about to be discarded. The directory itself (and its
    /// WAL directory) is discarded last, once proven this upgrade's (`steps::undo`).
    fn undo(&self, u: &mut Undoing<'_>) -> Result<()> {
        u.stop_new_fenced()
    }
}
