//! After the new cluster went live: does its WAL archiving work? With archiving on, pgleap
//! completes one WAL segment and waits (bounded) for the archiver's verdict. A failure is a
//! warning with what to do: WAL piles up in `pg_wal` until archiving works.
//!
//! Best effort, after the window: never fails the upgrade.

use std::path::Path;

use crate::error::Finding;
use crate::inspect::archive::{Outcome, Probe};
use crate::inspect::db;

use super::step::{Run, superuser};

/// Probes the live new server at `socket`: a line for the report when archiving works, a
/// warning when it fails or cannot be confirmed, nothing when it is off.
pub(crate) fn check_new(run: &mut Run<'_>, socket: &Path) {
    let p = run.p;
    let target = db::Target::new(
        socket,
        p.plan.new.port,
        vec![superuser(p), p.runner.owner().name.clone()],
    );
    let probe = match db::call::<Probe>(&p.runner, &["archive-probe"], &target) {
        Ok(probe) => probe,
        Err(e) => {
            tracing::warn!("cannot probe the new cluster's WAL archiving: {e}");
            return;
        }
    };
    let how = probe.archiving.how();
    let advice = probe
        .archiving
        .tool_advice()
        .map_or_else(String::new, |t| format!(" ({t})"));
    match probe.outcome {
        Outcome::Off => {}
        Outcome::Archived { wal } => run.ui.line(&format!(
            "      WAL archiving works on the new cluster: {wal} was archived ({how}). Take a new base backup now{advice}"
        )),
        Outcome::Failed { wal } => run.warnings.push(Finding::warning(
            "new-archiving-fails",
            format!(
                "the new cluster cannot archive its WAL: archiving {wal} failed ({how}); WAL piles up in {} until it works",
                p.plan.new.datadir.join("pg_wal").display()
            ),
            format!(
                "Find the error in the new server's log and fix the archiving{advice}; then take a new base backup"
            ),
        )),
        Outcome::Unconfirmed { wal, seconds } => run.warnings.push(Finding::warning(
            "new-archiving-unconfirmed",
            format!(
                "the new cluster's archiver neither archived {wal} nor failed to within {seconds} s ({how})"
            ),
            "Check pg_stat_archiver on the new cluster, then take a new base backup",
        )),
    }
}
