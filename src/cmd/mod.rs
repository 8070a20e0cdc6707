//! One file per subcommand.

pub(crate) mod check;
pub(crate) mod finalize;
pub(crate) mod manual;
pub(crate) mod rehearse;
pub(crate) mod rollback;
pub(crate) mod status;
pub(crate) mod upgrade;

use crate::error::Finding;
use crate::error::{Error, Result};
use crate::plan::args::Target;
use crate::state::journal::Journal;
use crate::state::oldlock::OldLock;

/// The journal of the upgrade named by `target` under its exclusive lock, re-read after
/// taking the lock (the previous holder may have moved it on).
pub(crate) fn locked_journal(target: &Target) -> Result<(Locks, Journal)> {
    let found = find_journal(target)?;
    let old = &found.record.plan.old.datadir;
    let old_lock = if old.is_dir() {
        OldLock::exclusive(old)?
    } else {
        None
    };
    let work_dir = found.record.plan.work_dir.clone();
    let lock = crate::state::lock::Lock::acquire(&work_dir, found.owner())?;
    let j = Journal::load(&work_dir)?.unwrap_or(found);
    Ok((Locks(old_lock, lock), j))
}

/// The lock on the old cluster and the one on the upgrade's work directory, held together.
#[derive(Debug)]
pub(crate) struct Locks(
    #[allow(dead_code)] Option<OldLock>,
    #[allow(dead_code)] crate::state::lock::Lock,
);

/// The journal's plan, checked against the disk and this invocation (see `state::trust`).
pub(crate) fn verified_plan(
    target: &Target,
    stop_command: Option<&str>,
    start_command: Option<&str>,
    j: &mut Journal,
) -> Result<crate::plan::Plan> {
    let root = crate::host::root::host_root(target.root.as_deref())?;
    let (_, layout) = crate::plan::prepare::resolve_target(
        &root,
        target.cluster.as_ref(),
        target.old_datadir.as_deref(),
    )?;
    let mut plan = j.record.plan.clone();
    crate::state::trust::verify(
        &mut plan,
        &crate::state::trust::Given {
            root: &root,
            old_layout: &layout,
            stop_command,
            start_command,
        },
    )?;
    j.record.plan = plan.clone();
    Ok(plan)
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
