//! What `finalize` removes: the old major's files, and never a path the new cluster uses.
//!
//! Invariant: paths are compared resolved (symlinks and `..` followed). A directory that holds
//! something the new cluster uses (its tablespace subdirectory in a tablespace created inside
//! the old data directory, its WAL directory, its data directory) is emptied around it, never
//! removed whole; a symlinked old data directory or WAL directory is removed where it really
//! is, after checking that it is what the journal says, and its link afterwards.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Finding, Result};
use crate::exec::ownerfs;
use crate::exec::user::Owner;
use crate::inspect::paths;
use crate::plan::Plan;

/// The directories finalize removes and what must survive inside them.
#[derive(Debug, Default)]
pub(crate) struct Removal {
    /// Directories to remove, resolved, in order.
    pub(crate) targets: Vec<PathBuf>,
    /// Symlinks removed once what they point at is gone (a symlinked old data directory).
    pub(crate) links: Vec<PathBuf>,
    /// Paths the new cluster uses, resolved: never removed.
    pub(crate) keep: Vec<PathBuf>,
}

fn refuse(message: String, fix: &str) -> Error {
    Error::from(Finding::error("old-datadir-identity", message, fix))
}

/// Decides what to remove for `plan`: the old major's tablespace subdirectories, the old WAL
/// directory when `pg_wal` is a symlink, the old data directory (where a symlink points),
/// and Debian's old configuration directory.
pub(crate) fn plan(plan: &Plan) -> Result<Removal> {
    let old = &plan.old.datadir;
    let real_old = paths::canonical(old);
    if crate::inspect::cluster::pg_version_of(&real_old) != Some(plan.old.major)
        || !real_old.join("global").is_dir()
    {
        return Err(refuse(
            format!(
                "{}{} does not hold the PostgreSQL {} data directory this upgrade started from",
                old.display(),
                if real_old == *old {
                    String::new()
                } else {
                    format!(" (resolved: {})", real_old.display())
                },
                plan.old.major
            ),
            "Check what the path points at now; nothing was removed",
        ));
    }
    let mut r = Removal {
        keep: keep(plan),
        ..Removal::default()
    };
    let prefix = format!("PG_{}_", plan.old.major);
    for t in &plan.tablespaces {
        if let Ok(rd) = std::fs::read_dir(t) {
            r.targets.extend(
                rd.filter_map(std::result::Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                    .map(|e| paths::canonical(&e.path())),
            );
        }
    }
    if let Some(wal) = paths::symlink_target(&real_old.join("pg_wal")) {
        // A WAL directory has archive_status (every major since 10); anything else named by
        // the link is not removed.
        if wal.join("archive_status").is_dir() && !r.keep.iter().any(|k| k.starts_with(&wal)) {
            r.targets.push(wal);
        }
    }
    r.targets.push(real_old.clone());
    if real_old != *old {
        r.links.push(old.clone());
    }
    r.targets
        .extend(plan.old.confdir.iter().filter(|c| c.exists()).cloned());
    Ok(r)
}

/// The paths the new cluster uses: its data directory, its WAL directory, its tablespace
/// subdirectories and the upgrade's work directory (logs, journal).
fn keep(plan: &Plan) -> Vec<PathBuf> {
    let new = &plan.new.datadir;
    let mut keep = vec![paths::canonical(new), paths::canonical(&plan.work_dir)];
    keep.extend(paths::symlink_target(&new.join("pg_wal")));
    let prefix = format!("PG_{}_", plan.new.major);
    for t in &plan.tablespaces {
        if let Ok(rd) = std::fs::read_dir(t) {
            keep.extend(
                rd.filter_map(std::result::Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                    .map(|e| paths::canonical(&e.path())),
            );
        }
    }
    keep
}

impl Removal {
    /// Bytes removing the targets frees: files hard-linked into the new cluster (link mode)
    /// and whatever the new cluster keeps are not counted.
    pub(crate) fn freed_bytes(&self) -> u64 {
        self.targets
            .iter()
            .flat_map(|t| {
                walkdir::WalkDir::new(t)
                    .into_iter()
                    .filter_entry(|e| !self.keep.iter().any(|k| e.path() == k))
                    .filter_map(std::result::Result::ok)
            })
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file() && m.nlink() == 1)
            .map(|m| m.len())
            .sum()
    }

    /// Paths the new cluster uses that lie inside a target, and so stay.
    pub(crate) fn kept_inside(&self) -> Vec<PathBuf> {
        self.keep
            .iter()
            .filter(|k| self.targets.iter().any(|t| k.starts_with(t)))
            .cloned()
            .collect()
    }

    /// Removes one target around what must stay (a target already removed with another is
    /// skipped). The owner removes: a lie in the owner's files makes it remove only its own.
    pub(crate) fn remove(&self, owner: &Owner, target: &Path) -> Result<()> {
        if std::fs::symlink_metadata(target).is_err() {
            return Ok(());
        }
        remove_around(owner, target, &self.keep)
    }

    /// Removes the symlinks whose targets are gone.
    pub(crate) fn remove_links(&self, owner: &Owner) -> Result<()> {
        for l in &self.links {
            if ownerfs::only_root_controls(owner, l) {
                // unlink follows no link, and only root can change this directory.
                std::fs::remove_file(l).map_err(|e| Error::io("cannot remove", l, e))?;
            } else {
                ownerfs::remove_file_as(owner, l)?;
            }
        }
        Ok(())
    }
}

fn remove_around(owner: &Owner, dir: &Path, keep: &[PathBuf]) -> Result<()> {
    if keep.iter().any(|k| dir.starts_with(k)) {
        return Ok(());
    }
    if !keep.iter().any(|k| k.starts_with(dir)) {
        return ownerfs::remove_tree_where(owner, dir);
    }
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io("cannot read", dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("cannot read", dir, e))?;
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            remove_around(owner, &path, keep)?;
        } else if !keep.contains(&path) {
            ownerfs::remove_tree_as(owner, &path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_around_what_stays() {
        let root = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(root.path()).unwrap();
        let old = root.join("16");
        let kept = old.join("ts/PG_17_1");
        std::fs::create_dir_all(kept.join("5")).unwrap();
        std::fs::create_dir_all(old.join("ts/PG_16_1/5")).unwrap();
        std::fs::create_dir_all(old.join("base/1")).unwrap();
        std::fs::write(old.join("base/1/1259"), vec![0u8; 100]).unwrap();
        std::fs::write(old.join("ts/PG_16_1/5/16384"), vec![0u8; 10]).unwrap();
        std::fs::write(kept.join("5/16384"), vec![0u8; 1000]).unwrap();
        let r = Removal {
            targets: vec![old.clone()],
            links: Vec::new(),
            keep: vec![kept.clone()],
        };
        assert_eq!(r.freed_bytes(), 110);
        assert_eq!(r.kept_inside(), vec![kept.clone()]);
        // The current user: no identity switch, the requests run in this process.
        let me = Owner::from_uid(
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        r.remove(&me, &old).unwrap();
        assert!(kept.join("5/16384").exists());
        assert!(!old.join("base").exists());
        assert!(!old.join("ts/PG_16_1").exists());
        // Nothing to keep: removed whole.
        r.remove(&me, &old.join("missing")).unwrap();
        let other = root.join("other");
        std::fs::create_dir_all(other.join("x")).unwrap();
        r.remove(&me, &other).unwrap();
        assert!(!other.exists());
    }
}
