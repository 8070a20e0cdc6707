//! The new data directory (and Debian's new configuration directory): apart from the
//! old one, empty, and creatable by the owner.

use std::path::{Path, PathBuf};

use crate::error::{Finding, Findings};
use crate::exec::process::Owner;
use crate::inspect::cluster::Cluster;
use crate::inspect::install::Install;
use crate::inspect::{paths, space};
use crate::preflight::facts::Static;

/// The `target` family: the new data directory.
#[expect(
    clippy::unnecessary_wraps,
    reason = "one signature for every static family"
)]
pub(crate) fn target(s: &mut Static<'_>, findings: &mut Findings) -> crate::error::Result<()> {
    check_target(
        &s.cluster.datadir,
        s.new_datadir,
        s.cluster,
        s.new,
        findings,
    );
    Ok(())
}

/// The `new-confdir` family: Debian's new configuration directory.
#[expect(
    clippy::unnecessary_wraps,
    reason = "one signature for every static family"
)]
pub(crate) fn new_confdir(s: &mut Static<'_>, findings: &mut Findings) -> crate::error::Result<()> {
    if let Some(confdir) = s.new_confdir {
        check_new_confdir(confdir, &s.cluster.owner, findings);
    }
    Ok(())
}

pub(crate) fn check_target(
    old: &Path,
    new: &Path,
    cluster: &Cluster,
    new_install: &Install,
    findings: &mut Findings,
) {
    let owner = &cluster.owner;
    let locations: Vec<PathBuf> = cluster
        .tablespaces
        .iter()
        .map(|t| t.location.clone())
        .collect();
    findings
        .0
        .extend(existing_tablespace_dirs(&locations, new_install.major));
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
    if let Some(why) = space::unusable_parent(new, owner) {
        findings.push(Finding::error(
            "target-unusable",
            format!("{} cannot be created: {why}", new.display()),
            "Pass --new-datadir with a directory the cluster owner can create",
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

/// A `PG_<new major>_<catversion>` directory already in a tablespace location belongs to
/// another cluster of the new major (or a failed attempt nobody cleaned up).
pub(crate) fn existing_tablespace_dirs(locations: &[PathBuf], new_major: u32) -> Vec<Finding> {
    let prefix = format!("PG_{new_major}_");
    let mut out = Vec::new();
    for l in locations {
        let Ok(rd) = std::fs::read_dir(l) else {
            continue;
        };
        for e in rd.filter_map(std::result::Result::ok) {
            // Exactly PG_<major>_<catversion>: a moved-aside `….rolled-back-<time>` is not
            // where pg_upgrade writes.
            let name = e.file_name().to_string_lossy().into_owned();
            let is_target = name
                .strip_prefix(&prefix)
                .is_some_and(|cat| !cat.is_empty() && cat.bytes().all(|b| b.is_ascii_digit()));
            if is_target {
                out.push(Finding::error(
                    "tablespace-target-exists",
                    format!(
                        "{} already exists in tablespace location {}: pg_upgrade would put the new cluster's files there",
                        e.path().display(),
                        l.display()
                    ),
                    "If it is left from an earlier attempt, remove it; if another cluster of that major uses this location, give the old cluster's tablespace its own location",
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_existing_tablespace_dirs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("PG_16_202307071")).unwrap();
        std::fs::create_dir(dir.path().join("PG_17_202406281.rolled-back-1")).unwrap();
        assert!(existing_tablespace_dirs(&[dir.path().to_path_buf()], 17).is_empty());
        std::fs::create_dir(dir.path().join("PG_17_202406281")).unwrap();
        assert_eq!(
            existing_tablespace_dirs(&[dir.path().to_path_buf()], 17).len(),
            1
        );
    }
}
