//! The new data directory (and Debian's new configuration directory): apart from the
//! old one, empty, and creatable by the owner.

use std::path::Path;

use crate::error::{Finding, Findings};
use crate::exec::process::Owner;
use crate::inspect::{paths, space};

pub(crate) fn check_target(old: &Path, new: &Path, owner: &Owner, findings: &mut Findings) {
    if paths::overlap(old, new) {
        let shown = |given: &Path| {
            let real = paths::canonical(given);
            if given == real {
                given.display().to_string()
            } else {
                format!("{} (resolved: {})", given.display(), real.display())
            }
        };
        findings.push(Finding::error(
            "target-overlaps",
            format!(
                "the new data directory {} overlaps the old one {}",
                shown(new),
                shown(old)
            ),
            "Pass --new-datadir with a separate directory",
        ));
        return;
    }
    match std::fs::read_dir(new) {
        Ok(rd) => {
            let n = rd.count();
            if n > 0 {
                let entries = if n == 1 { "entry" } else { "entries" };
                findings.push(Finding::error(
                    "target-not-empty",
                    format!("{} exists and is not empty ({n} {entries})", new.display()),
                    "Remove it or pass --new-datadir",
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => findings.push(Finding::error(
            "target-unusable",
            format!("{} cannot be used: {e}", new.display()),
            "Pass --new-datadir with a directory the cluster owner can create",
        )),
    }
    if !nix::unistd::geteuid().is_root() {
        let parent = space::existing_ancestor(new.parent().unwrap_or(new));
        if nix::unistd::access(&parent, nix::unistd::AccessFlags::W_OK).is_err() {
            findings.push(Finding::error(
                "target-not-writable",
                format!(
                    "{} cannot be created: {} is not writable by {}",
                    new.display(),
                    parent.display(),
                    owner.name
                ),
                "Run pgleap as root, or create the directory for the owner first",
            ));
        }
    }
}

/// Debian's new configuration directory must not hold another cluster, and (when pgleap is
/// not root) must be creatable by the owner.
pub(crate) fn check_new_confdir(confdir: &Path, owner: &Owner, findings: &mut Findings) {
    if !nix::unistd::geteuid().is_root() {
        let parent = space::existing_ancestor(confdir.parent().unwrap_or(confdir));
        if nix::unistd::access(&parent, nix::unistd::AccessFlags::W_OK).is_err() {
            findings.push(Finding::error(
                "confdir-not-writable",
                format!(
                    "{} cannot be created: {} is not writable by {}",
                    confdir.display(),
                    parent.display(),
                    owner.name
                ),
                "Run pgleap as root",
            ));
        }
    }
    let entries = std::fs::read_dir(confdir).map_or(0, Iterator::count);
    if entries > 0 {
        findings.push(Finding::error(
            "new-confdir-not-empty",
            format!(
                "{} exists and is not empty ({entries} {}): another cluster of that name exists",
                confdir.display(),
                if entries == 1 { "entry" } else { "entries" }
            ),
            "Remove it (pg_dropcluster, if it is an empty cluster created by installing the new version) and run pgleap again",
        ));
    }
}
