//! The steps of an upgrade, one file each behind the [`step::Step`] trait, in the order of
//! one table ([`order::ORDER`]): `run` walks it forward, `undo` backwards.
//!
//! initdb, config carry-over and pg_upgrade --check happen while the old server still
//! serves; the downtime window holds only stop-old, pg_upgrade and start-new.

pub(crate) mod analyze;
pub(crate) mod archiving;
pub(crate) mod carry_config;
pub(crate) mod check;
pub(crate) mod collations;
pub(crate) mod crossing;
pub(crate) mod extensions;
pub(crate) mod fence;
pub(crate) mod finish;
pub(crate) mod initdb;
pub(crate) mod order;
pub(crate) mod pg_upgrade;
pub(crate) mod rehearse;
pub(crate) mod rehearse_copy;
pub(crate) mod rehearse_report;
pub(crate) mod removal;
pub(crate) mod replication;
pub(crate) mod run;
pub(crate) mod servers;
pub(crate) mod start_new;
pub(crate) mod step;
pub(crate) mod stop_old;
pub(crate) mod undo;

use std::path::Path;

use crate::error::Result;
use crate::exec::process::Owner;

/// Creates `dir` (and missing parents) owned by `owner`, mode 0700; see
/// [`crate::exec::ownerfs::create_owned_dir`].
pub(crate) fn create_owned_dir(dir: &Path, owner: &Owner) -> Result<()> {
    crate::exec::ownerfs::create_owned_dir(dir, owner)
}
