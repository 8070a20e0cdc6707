//! The host root: the directory every host path (/etc/postgresql, /var/lib/pgsql,
//! /usr/lib/postgresql, systemd units) is resolved under — `/` on a live host, `--root DIR`
//! for an image or a mounted system.

use std::path::{Path, PathBuf};

use crate::error::Finding;

/// The directory host paths are resolved under: `--root`, else `/`.
pub(crate) fn host_root(arg: Option<&Path>) -> Result<PathBuf, Finding> {
    let Some(dir) = arg else {
        return Ok(PathBuf::from("/"));
    };
    let dir = absolute(dir);
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(Finding::error(
            "root-missing",
            format!("--root {} is not a directory", dir.display()),
            "Pass --root with the directory that holds the host's etc, var and usr",
        ))
    }
}

/// `path` (absolute, as on a live host) under `root`.
pub(crate) fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// `p` made absolute against the current directory, as the user meant a relative path.
pub(crate) fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
