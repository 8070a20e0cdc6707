//! One file per subcommand.

pub(crate) mod check;
pub(crate) mod finalize;
pub(crate) mod manual;
pub(crate) mod rollback;
pub(crate) mod status;
pub(crate) mod upgrade;

use crate::error::Finding;
use crate::error::{Error, Result};
use crate::plan::args::Target;
use crate::state::journal::Journal;

/// The journal of the upgrade named by `target` under its exclusive lock, re-read after
/// taking the lock (the previous holder may have moved it on).
pub(crate) fn locked_journal(target: &Target) -> Result<(crate::state::lock::Lock, Journal)> {
    let found = find_journal(target)?;
    let work_dir = found.record.plan.work_dir.clone();
    let lock = crate::state::lock::Lock::acquire(&work_dir)?;
    let j = Journal::load(&work_dir)?.unwrap_or(found);
    Ok((lock, j))
}

/// The journal of the upgrade named by `target`, or a refusal saying none was found.
pub(crate) fn find_journal(target: &Target) -> Result<Journal> {
    let root = crate::host::root::host_root(target.root.as_deref()).map_err(Error::from)?;
    let (old, _) = crate::plan::prepare::resolve_target(
        &root,
        target.cluster.as_ref(),
        target.old_datadir.as_deref(),
    )
    .map_err(Error::from)?;
    let new = target
        .new_datadir
        .as_ref()
        .map(|d| std::path::absolute(d).unwrap_or_else(|_| d.clone()));
    crate::state::locate::locate(&old, new.as_deref())?.ok_or_else(|| Error::Refused {
        findings: vec![Finding::error(
            "no-journal",
            format!("no upgrade of {} is recorded", old.display()),
            "pgleap keeps its journal beside the new data directory: pass --new-datadir if it is not the default, or start one with pgleap upgrade",
        )],
    })
}
