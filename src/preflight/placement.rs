//! Where the new cluster's files go besides its data directory, and which paths must not
//! overlap: the WAL directory of an `initdb --waldir` cluster, tablespaces.
//!
//! Invariant: decided and checked before anything is written, on resolved paths.

use std::path::{Path, PathBuf};

use crate::error::{Finding, Findings};
use crate::inspect::paths;
use crate::preflight::facts::Static;

/// The `placement` family: decides the WAL directories and refuses tablespaces and WAL
/// directories in the way.
#[expect(
    clippy::unnecessary_wraps,
    reason = "one signature for every static family"
)]
pub(crate) fn placement(s: &mut Static<'_>, findings: &mut Findings) -> crate::error::Result<()> {
    s.waldirs = choose(
        &s.cluster.datadir,
        s.new_datadir,
        s.tablespaces,
        (s.cluster.major, s.new.major),
        findings,
    );
    Ok(())
}

/// The old cluster's WAL directory when `pg_wal` is a symlink to it (`initdb --waldir`), and
/// the new cluster's beside it on the same volume: the old path with its component naming
/// the old major replaced (`/wal/16` → `/wal/17`), else with `-NEW` appended.
pub(crate) fn waldirs(
    old_datadir: &Path,
    old_major: u32,
    new_major: u32,
) -> Option<(PathBuf, PathBuf)> {
    let old = paths::symlink_target(&old_datadir.join("pg_wal"))?;
    let new = new_waldir(&old, old_major, new_major);
    Some((old, new))
}

/// The new WAL directory beside an old one: `/wal/16` → `/wal/17`, else `-NEW` appended.
pub(crate) fn new_waldir(old: &Path, old_major: u32, new_major: u32) -> PathBuf {
    crate::host::layout::versioned_sibling(old, old_major, new_major).unwrap_or_else(|| {
        let name = old
            .file_name()
            .map_or_else(|| "pg_wal".into(), |n| n.to_string_lossy().into_owned());
        old.with_file_name(format!("{name}-{new_major}"))
    })
}

/// The old and new WAL directories (see [`waldirs`]), after checking every path that must
/// not overlap; `majors` is (old, new).
pub(crate) fn choose(
    old_datadir: &Path,
    new_datadir: &Path,
    tablespaces: &[PathBuf],
    majors: (u32, u32),
    findings: &mut Findings,
) -> Option<(PathBuf, PathBuf)> {
    let waldirs = waldirs(old_datadir, majors.0, majors.1);
    check(
        &Places {
            old_datadir,
            new_datadir,
            tablespaces,
            waldirs: waldirs.as_ref(),
            new_major: majors.1,
        },
        findings,
    );
    waldirs
}

/// The paths the upgrade must keep apart, by what they are.
pub(crate) struct Places<'a> {
    pub(crate) old_datadir: &'a Path,
    pub(crate) new_datadir: &'a Path,
    pub(crate) tablespaces: &'a [PathBuf],
    /// The old and new WAL directories, when the old cluster keeps its WAL apart.
    pub(crate) waldirs: Option<&'a (PathBuf, PathBuf)>,
    pub(crate) new_major: u32,
}

/// Refusals for paths that overlap (beyond old and new data directories, checked with the
/// target), and a warning for a tablespace inside the old data directory.
pub(crate) fn check(p: &Places<'_>, findings: &mut Findings) {
    for t in p.tablespaces {
        if paths::overlap(t, p.new_datadir) {
            findings.push(Finding::error(
                "tablespace-overlaps-target",
                format!(
                    "the new data directory {} overlaps the tablespace at {}",
                    p.new_datadir.display(),
                    t.display()
                ),
                "Pass --new-datadir with a directory outside every tablespace",
            ));
        }
        if paths::inside(t, p.old_datadir) {
            findings.push(Finding::warning(
                "tablespace-inside-datadir",
                format!(
                    "the tablespace at {} lies inside the old data directory {}: the new cluster's files for it (PG_{}_*) will be there too",
                    t.display(),
                    p.old_datadir.display(),
                    p.new_major
                ),
                "pgleap finalize removes only the old major's files there and keeps the new cluster's; PostgreSQL advises against tablespaces inside the data directory, so move it out when you can",
            ));
        }
    }
    if let Some((old_wal, new_wal)) = p.waldirs {
        check_waldir(p, old_wal, new_wal, findings);
    }
}

fn check_waldir(p: &Places<'_>, old_wal: &Path, new_wal: &Path, findings: &mut Findings) {
    let mut others: Vec<(&str, &Path)> = vec![
        ("the old data directory", p.old_datadir),
        ("the new data directory", p.new_datadir),
        ("the old WAL directory", old_wal),
    ];
    others.extend(p.tablespaces.iter().map(|t| ("a tablespace", t.as_path())));
    for (what, path) in others {
        if paths::overlap(new_wal, path) {
            findings.push(Finding::error(
                "waldir-overlaps",
                format!(
                    "the new WAL directory {} overlaps {what} {}",
                    new_wal.display(),
                    path.display()
                ),
                "Move the old WAL directory so that a sibling named for the new major is free, or upgrade by hand with initdb --waldir",
            ));
        }
    }
    let entries = std::fs::read_dir(new_wal).map_or(0, Iterator::count);
    if entries > 0 {
        findings.push(Finding::error(
            "waldir-not-empty",
            format!(
                "{} exists and is not empty: the new cluster's WAL goes there (beside the old WAL directory {})",
                new_wal.display(),
                old_wal.display()
            ),
            "Remove it, or move what it holds elsewhere, and run pgleap again",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_wal_goes_beside_the_old_one() {
        let root = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(root.path()).unwrap();
        let data = root.join("data/16");
        std::fs::create_dir_all(&data).unwrap();
        assert_eq!(waldirs(&data, 16, 17), None);
        let wal = root.join("wal/16");
        std::fs::create_dir_all(&wal).unwrap();
        std::os::unix::fs::symlink(&wal, data.join("pg_wal")).unwrap();
        assert_eq!(
            waldirs(&data, 16, 17),
            Some((wal.clone(), root.join("wal/17")))
        );
        std::fs::remove_file(data.join("pg_wal")).unwrap();
        let plain = root.join("walstore");
        std::fs::create_dir_all(&plain).unwrap();
        std::os::unix::fs::symlink(&plain, data.join("pg_wal")).unwrap();
        assert_eq!(
            waldirs(&data, 16, 17).map(|w| w.1),
            Some(root.join("walstore-17"))
        );
    }
}
