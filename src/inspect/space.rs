//! Bytes a mode needs, per filesystem, against what each filesystem has free.
//!
//! Copy mode duplicates every relation file; link, clone and swap only write the new catalog.
//! Free space is `f_bavail`: what the (non-root) cluster owner may use, not root's reserve.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::inspect::cluster::Cluster;

/// Fixed part of the new catalog estimate: an initdb'd cluster plus its first WAL segments.
const CATALOG_BASE: u64 = 64 * 1024 * 1024;
/// Per database: catalogs restored by pg_upgrade into each database.
const CATALOG_PER_DB: u64 = 16 * 1024 * 1024;

/// Sizes of the old cluster's files, measured by walking them.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Usage {
    /// Relation files under the data directory (`base/`, `global/`).
    pub(crate) datadir_relations: u64,
    /// Relation files of each tablespace, by tablespace location.
    pub(crate) tablespaces: BTreeMap<PathBuf, u64>,
    pub(crate) databases: u64,
}

impl Usage {
    pub(crate) fn measure(cluster: &Cluster) -> Usage {
        let datadir_relations =
            dir_bytes(&cluster.datadir.join("base")) + dir_bytes(&cluster.datadir.join("global"));
        let prefix = format!("PG_{}_", cluster.major);
        let tablespaces = cluster
            .tablespaces
            .iter()
            .map(|t| {
                let bytes = std::fs::read_dir(&t.location).map_or(0, |rd| {
                    rd.filter_map(Result::ok)
                        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                        .map(|e| dir_bytes(&e.path()))
                        .sum()
                });
                (t.location.clone(), bytes)
            })
            .collect();
        let databases =
            std::fs::read_dir(cluster.datadir.join("base")).map_or(1, |rd| rd.count() as u64);
        Usage {
            datadir_relations,
            tablespaces,
            databases,
        }
    }

    pub(crate) fn total_relations(&self) -> u64 {
        self.datadir_relations + self.tablespaces.values().sum::<u64>()
    }

    fn catalog(&self) -> u64 {
        CATALOG_BASE + CATALOG_PER_DB * self.databases
    }
}

/// Space needed and free on one filesystem.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub(crate) struct FsNeed {
    /// A path on this filesystem, as the user will recognise it.
    pub(crate) path: PathBuf,
    pub(crate) device: u64,
    pub(crate) needed: u64,
    pub(crate) free: u64,
}

impl FsNeed {
    pub(crate) fn enough(&self) -> bool {
        self.free >= self.needed
    }
}

/// What each filesystem must hold, `copies` when the mode copies relation files: the new data directory's filesystem gets the
/// catalog (plus the data directory's relations when copying); each tablespace's filesystem
/// gets that tablespace's relations when copying (pg_upgrade writes the new tablespace
/// subdirectory beside the old one).
pub(crate) fn needs(
    usage: &Usage,
    new_datadir: &Path,
    tablespaces: &[PathBuf],
    copies: bool,
) -> Vec<FsNeed> {
    let mut by_dev: BTreeMap<u64, FsNeed> = BTreeMap::new();
    let mut add = |path: &Path, bytes: u64| {
        let probe = existing_ancestor(path);
        let (device, free) = (device_of(&probe), free_bytes(&probe));
        by_dev
            .entry(device)
            .or_insert_with(|| FsNeed {
                path: path.to_path_buf(),
                device,
                needed: 0,
                free,
            })
            .needed += bytes;
    };
    add(
        new_datadir,
        usage.catalog() + if copies { usage.datadir_relations } else { 0 },
    );
    for t in tablespaces {
        let bytes = if copies {
            usage.tablespaces.get(t).copied().unwrap_or(0)
        } else {
            0
        };
        add(t, bytes);
    }
    by_dev.into_values().collect()
}

/// Sum of regular file sizes below `dir`, not following symlinks.
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// The nearest ancestor of `path` that exists (the path itself if it does).
pub(crate) fn existing_ancestor(path: &Path) -> PathBuf {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

/// Why `path` cannot be created for `owner`, looking at its nearest ancestors: one that is
/// not a directory, or a symbolic link to nothing (initdb and the journal would fail inside
/// the window otherwise); or, when running as root, an existing parent that the owner cannot
/// write and that is not root's own (root creates directories only in root's directories and
/// hands them over). Not being root, the caller checks write access itself.
pub(crate) fn unusable_parent(path: &Path, owner: &crate::exec::process::Owner) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    for a in path.ancestors().skip(1) {
        if std::fs::symlink_metadata(a).is_err() {
            continue;
        }
        let Ok(meta) = std::fs::metadata(a) else {
            let to = std::fs::read_link(a).unwrap_or_default();
            return Some(format!(
                "{} is a symbolic link to {}, which does not exist",
                a.display(),
                to.display()
            ));
        };
        if !meta.is_dir() {
            return Some(format!("{} is not a directory", a.display()));
        }
        let root = nix::unistd::geteuid().is_root();
        let bits = meta.permissions().mode();
        let writable = if meta.uid() == owner.uid {
            bits & 0o300 == 0o300
        } else if meta.gid() == owner.gid {
            bits & 0o030 == 0o030
        } else {
            bits & 0o003 == 0o003
        };
        if root && !writable && meta.uid() != 0 {
            return Some(format!(
                "{} is not writable by {} (it belongs to uid {}, mode {:o})",
                a.display(),
                owner.name,
                meta.uid(),
                bits & 0o7777
            ));
        }
        return None;
    }
    None
}

pub(crate) fn device_of(path: &Path) -> u64 {
    std::fs::metadata(existing_ancestor(path)).map_or(0, |m| m.dev())
}

pub(crate) fn free_bytes(path: &Path) -> u64 {
    nix::sys::statvfs::statvfs(&existing_ancestor(path))
        .map_or(0, |s| s.blocks_available() * s.fragment_size())
}

nix::ioctl_write_int!(ficlone, 0x94, 9);

/// True when `dir`'s filesystem can share file extents (XFS with reflink, Btrfs): the probe
/// clones between two unnamed scratch files in `dir`. They are `O_TMPFILE` files, never linked
/// into `dir`, so the probe leaves no trace there, not even a new mtime: `check` and a refusal
/// must change nothing on disk. (Filesystems without `O_TMPFILE` get a named file, unlinked at
/// once.)
pub(crate) fn supports_reflink(dir: &Path) -> bool {
    use std::io::Write as _;
    use std::os::fd::AsRawFd as _;
    let Ok(mut src) = tempfile::tempfile_in(dir) else {
        return false;
    };
    if src
        .write_all(&[0u8; 4096])
        .and_then(|()| src.flush())
        .is_err()
    {
        return false;
    }
    let Ok(dst) = tempfile::tempfile_in(dir) else {
        return false;
    };
    // SAFETY: both descriptors are open files owned by `src` and `dst` for the whole call.
    let cloned = unsafe {
        ficlone(
            dst.as_raw_fd(),
            u64::try_from(src.as_raw_fd()).unwrap_or(u64::MAX),
        )
    };
    cloned.is_ok()
}

/// True when the kernel copies with `copy_file_range` from the old data directory's
/// filesystem into `new_dir`'s, as `pg_upgrade --copy-file-range` (17+) needs: the probe
/// copies the old cluster's `PG_VERSION`, opened read-only and never through a link, into an
/// unnamed scratch file in `new_dir`, as pg_upgrade's own check does (so the answer is the
/// one pg_upgrade will get). Across filesystems Linux refuses it (`EXDEV`) unless both are
/// of one type that supports it.
pub(crate) fn supports_copy_file_range(old_datadir: &Path, new_dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt as _;
    let Ok(src) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(old_datadir.join("PG_VERSION"))
    else {
        return false;
    };
    if !src.metadata().is_ok_and(|m| m.is_file() && m.len() > 0) {
        return false;
    }
    let Ok(dst) = tempfile::tempfile_in(new_dir) else {
        return false;
    };
    nix::fcntl::copy_file_range(&src, None, &dst, None, 64).is_ok_and(|n| n > 0)
}

/// The mount point of the filesystem holding `path`: its highest ancestor on the same device.
pub(crate) fn mount_point(path: &Path) -> PathBuf {
    let start = existing_ancestor(path);
    let dev = device_of(&start);
    start
        .ancestors()
        .take_while(|a| device_of(a) == dev)
        .last()
        .unwrap_or(&start)
        .to_path_buf()
}

/// `1536` → `1.5 KiB`.
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Bytes of user relation files below `dir`: files named by a relfilenode at or above
/// FirstNormalObjectId (16384) — the ones pg_upgrade transfers; catalogs are rebuilt.
pub(crate) fn user_relation_bytes(dir: &std::path::Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            let name = e.file_name().to_string_lossy();
            let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().is_ok_and(|n| n >= 16384)
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage() -> Usage {
        Usage {
            datadir_relations: 1000 * 1024 * 1024,
            tablespaces: BTreeMap::from([(PathBuf::from("/tmp"), 500)]),
            databases: 3,
        }
    }

    #[test]
    fn human_units() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn copy_needs_relations_link_needs_catalog() {
        let u = usage();
        let dir = tempfile::tempdir().unwrap();
        let copy = needs(&u, &dir.path().join("17"), &[], true);
        let link = needs(&u, &dir.path().join("17"), &[], false);
        assert_eq!(copy.len(), 1);
        assert_eq!(
            copy[0].needed,
            u.datadir_relations + CATALOG_BASE + 3 * CATALOG_PER_DB
        );
        assert_eq!(link[0].needed, CATALOG_BASE + 3 * CATALOG_PER_DB);
    }

    #[test]
    fn same_filesystem_needs_are_summed() {
        let u = usage();
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        // The tempdir lives in /tmp: one filesystem, so one row holding both amounts.
        let rows = needs(&u, &dir.path().join("17"), &[PathBuf::from("/tmp")], true);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].needed,
            u.datadir_relations + 500 + CATALOG_BASE + 3 * CATALOG_PER_DB
        );
    }

    #[test]
    fn finds_mount_points() {
        assert_eq!(mount_point(Path::new("/")), PathBuf::from("/"));
        assert_eq!(mount_point(Path::new("/proc/self")), PathBuf::from("/proc"));
    }

    #[test]
    fn walks_sizes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/x"), [0u8; 100]).unwrap();
        std::fs::write(dir.path().join("y"), [0u8; 28]).unwrap();
        assert_eq!(dir_bytes(dir.path()), 128);
    }

    #[test]
    fn counts_only_user_relation_files() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("base/5");
        std::fs::create_dir_all(&db).unwrap();
        std::fs::write(db.join("16390"), [0u8; 100]).unwrap();
        std::fs::write(db.join("16390_fsm"), [0u8; 10]).unwrap();
        std::fs::write(db.join("16390.1"), [0u8; 5]).unwrap();
        std::fs::write(db.join("1259"), [0u8; 1000]).unwrap(); // pg_class: a catalog
        std::fs::write(db.join("PG_VERSION"), b"17").unwrap();
        assert_eq!(user_relation_bytes(dir.path()), 115);
    }
}
