//! The steps of an upgrade, each a function over the prepared plan.
//!
//! initdb and config carry-over happen while the old server still serves; the downtime
//! window holds only stop-old, pg_upgrade and start-new.

pub(crate) mod analyze;
pub(crate) mod carry_config;
pub(crate) mod crossing;
pub(crate) mod extensions;
pub(crate) mod initdb;
pub(crate) mod pg_upgrade;
pub(crate) mod removal;
pub(crate) mod run;
pub(crate) mod servers;
pub(crate) mod start_new;
pub(crate) mod stop_old;
pub(crate) mod undo;

use std::path::Path;

use crate::error::{Error, Result};
use crate::exec::process::Owner;
use crate::exec::server;

/// Creates `dir` (and missing parents) owned by `owner`, mode 0700.
pub(crate) fn create_owned_dir(dir: &Path, owner: &Owner) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if !dir.exists() {
        if let Some(parent) = dir.parent() {
            if !parent.exists() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::io("cannot create directory", parent, e))?;
                // Parents like /var/lib/postgresql/17 belong to the cluster owner too.
                server::chown(parent, owner)?;
            }
        }
        std::fs::create_dir(dir).map_err(|e| Error::io("cannot create directory", dir, e))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io("cannot chmod", dir, e))?;
    server::chown(dir, owner)
}
