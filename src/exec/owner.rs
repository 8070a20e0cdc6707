//! Running pgleap itself as the cluster owner (the hidden `__db` subcommand): the
//! executable the owner may run, which is this one when the owner can reach it, else a copy
//! in the upgrade's log directory.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::exec::process::Runner;

/// A pgleap executable the owner can run: this one, or a copy in the log directory when
/// this one sits where the owner cannot reach (a root-only build directory).
pub(crate) fn owner_executable(runner: &Runner) -> Result<PathBuf> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::io("cannot locate the pgleap executable", "/proc/self/exe", e))?;
    if !runner.owner().needs_switch() || reachable_by_others(&exe) {
        return Ok(exe);
    }
    let dir = runner.log_dir().ok_or(Error::NoLogDirectory)?;
    let copy = dir.join("pgleap-as-owner");
    if !copy.exists() {
        std::fs::copy(&exe, &copy)
            .map_err(|e| Error::io("cannot copy pgleap for the cluster owner", &copy, e))?;
        let owner = runner.owner();
        nix::unistd::chown(&copy, Some(owner.uid.into()), Some(owner.gid.into()))
            .map_err(|e| Error::io("cannot chown", &copy, e.into()))?;
    }
    Ok(copy)
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
