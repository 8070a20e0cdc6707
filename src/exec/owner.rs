//! Running pgleap itself as the cluster owner (the hidden `__db` and `__fs` subcommands):
//! the executable the owner may run, which is this one when the owner can reach it, else a
//! root-owned copy in a root-owned 0711 directory that the owner can run but not replace.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::exec::user::Owner;

/// A pgleap executable the owner can run: this one, or a root-owned copy in a root-owned
/// 0711 directory when this one sits where the owner cannot reach (a root-only build
/// directory). The owner can run the copy but neither replace it nor plant anything beside
/// it, so what runs as the owner is always this very program.
pub(crate) fn owner_executable(owner: &Owner) -> Result<PathBuf> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::io("cannot locate the pgleap executable", "/proc/self/exe", e))?;
    if !owner.needs_switch() || reachable_by_others(&exe) {
        return Ok(exe);
    }
    let mut slot = OWNER_COPY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if slot.is_none() {
        *slot = Some(private_copy(&exe)?);
    }
    Ok(slot.as_ref().map_or(exe, |d| d.path().join("pgleap")))
}

/// The copy of [`owner_executable`]; removed by [`remove_owner_copy`] when pgleap exits.
static OWNER_COPY: std::sync::Mutex<Option<tempfile::TempDir>> = std::sync::Mutex::new(None);

fn private_copy(exe: &Path) -> Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::Builder::new()
        .prefix("pgleap-exe-")
        .tempdir_in("/tmp")
        .map_err(|e| Error::io("cannot create a directory for a copy of pgleap", "/tmp", e))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
        .map_err(|e| Error::io("cannot chmod", dir.path(), e))?;
    let copy = dir.path().join("pgleap");
    std::fs::copy(exe, &copy)
        .map_err(|e| Error::io("cannot copy pgleap for the cluster owner", &copy, e))?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io("cannot chmod", &copy, e))?;
    Ok(dir)
}

/// Removes the owner's copy of pgleap, if one was made (statics are never dropped).
pub(crate) fn remove_owner_copy() {
    let copy = OWNER_COPY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    drop(copy);
}

fn reachable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let file_ok = std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o005 == 0o005);
    file_ok
        && path
            .ancestors()
            .skip(1)
            .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}
