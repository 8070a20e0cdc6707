//! Copying a data directory tree for a rehearsal: file by file, sharing extents (reflink)
//! where the filesystem can, else copying bytes; what only a running server needs is left
//! out, and symbolic links are never followed or carried.
//!
//! Invariant: the source is only read. The copy never holds a link into the source (a
//! tablespace link in `pg_tblspc` is the caller's to create, pointing into the scratch
//! area): a server started on the copy can only write inside the copy.

use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

nix::ioctl_write_int!(ficlone, 0x94, 9);

/// Entries of a data directory a copy leaves empty or out: runtime state that a server
/// recreates (the list `pg_basebackup` also skips), and `pg_wal`'s segments, which the
/// caller copies separately once a backup has ended.
const SKIP_CONTENTS: [&str; 8] = [
    "pg_dynshmem",
    "pg_notify",
    "pg_replslot",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
    "pg_tblspc",
];
const SKIP_FILES: [&str; 4] = [
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "tablespace_map",
];

/// What a copy did.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Copied {
    pub(crate) files: u64,
    pub(crate) bytes: u64,
    /// Files whose extents were shared instead of copied.
    pub(crate) reflinked: u64,
}

impl Copied {
    pub(crate) fn add(&mut self, other: Copied) {
        self.files += other.files;
        self.bytes += other.bytes;
        self.reflinked += other.reflinked;
    }
}

/// Which part of a data directory to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Part {
    /// Everything but runtime state, `pg_wal`'s contents and `global/pg_control`.
    Data,
    /// `global/pg_control` alone (copied last, as a base backup does).
    Control,
    /// A whole directory, as is (a tablespace's version directory, `pg_wal`'s contents).
    All,
}

/// Copies `from` into the existing directory `to`.
pub(crate) fn copy_tree(from: &Path, to: &Path, part: Part) -> Result<Copied> {
    let mut done = Copied::default();
    if part == Part::Control {
        let rel = Path::new("global/pg_control");
        copy_file(&from.join(rel), &to.join(rel), &mut done)?;
        return Ok(done);
    }
    let walk = walkdir::WalkDir::new(from).min_depth(1).follow_links(false);
    let mut it = walk.into_iter();
    while let Some(entry) = it.next() {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(from).to_path_buf();
            Error::io("cannot read", &path, e.into())
        })?;
        let rel = entry.path().strip_prefix(from).unwrap_or(entry.path());
        let dest = to.join(rel);
        let top = rel.components().count() == 1;
        let name = entry.file_name().to_string_lossy();
        let ft = entry.file_type();
        if part == Part::Data {
            if top && ft.is_file() && SKIP_FILES.contains(&name.as_ref()) {
                continue;
            }
            if rel == Path::new("global/pg_control") || name.starts_with("pgsql_tmp") {
                continue;
            }
            let skip_contents = top
                && (SKIP_CONTENTS.contains(&name.as_ref())
                    || name == "pg_wal"
                    || name == "pg_xlog");
            if skip_contents {
                // The directory itself, empty (pg_wal also its archive_status).
                make_dir(&dest, 0o700)?;
                if name == "pg_wal" {
                    make_dir(&dest.join("archive_status"), 0o700)?;
                }
                if ft.is_dir() {
                    it.skip_current_dir();
                }
                continue;
            }
        }
        if ft.is_dir() {
            let mode = entry.metadata().map_or(0o700, |m| m.permissions().mode()) & 0o7777;
            make_dir(&dest, mode)?;
        } else if ft.is_file() {
            copy_file(entry.path(), &dest, &mut done)?;
        }
        // Symbolic links are not carried: a link in the copy could lead a server on the
        // copy back into the source.
    }
    Ok(done)
}

fn make_dir(path: &Path, mode: u32) -> Result<()> {
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(Error::io("cannot create directory", path, e)),
    }
}

/// One file: a reflink where the filesystem shares extents, else a byte copy (which the
/// kernel may still accelerate with copy_file_range). A file that vanished meanwhile (a
/// running server drops relations and WAL) is skipped: the backup's WAL replays its fate.
fn copy_file(from: &Path, to: &Path, done: &mut Copied) -> Result<()> {
    let mut src = match std::fs::File::open(from) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("cannot read", from, e)),
    };
    let meta = src
        .metadata()
        .map_err(|e| Error::io("cannot read", from, e))?;
    let mode = meta.permissions().mode() & 0o777;
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(|e| Error::io("cannot create", to, e))?;
    // SAFETY: both descriptors are open files owned by `src` and `dst` for the whole call.
    let cloned = unsafe {
        ficlone(
            dst.as_raw_fd(),
            u64::try_from(src.as_raw_fd()).unwrap_or(u64::MAX),
        )
    }
    .is_ok();
    if cloned {
        done.reflinked += 1;
    } else {
        std::io::copy(&mut src, &mut dst).map_err(|e| Error::io("cannot copy", from, e))?;
    }
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("cannot chmod", to, e))?;
    done.files += 1;
    done.bytes += meta.len();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_out_runtime_state_and_links() {
        let src = tempfile::tempdir().unwrap();
        let s = src.path();
        for d in [
            "base/1",
            "global",
            "pg_wal/archive_status",
            "pg_tblspc",
            "pg_stat_tmp",
        ] {
            std::fs::create_dir_all(s.join(d)).unwrap();
        }
        std::fs::write(s.join("base/1/1259"), b"relation").unwrap();
        std::fs::write(s.join("global/pg_control"), b"control").unwrap();
        std::fs::write(s.join("pg_wal/000000010000000000000001"), b"wal").unwrap();
        std::fs::write(s.join("pg_stat_tmp/x"), b"x").unwrap();
        std::fs::write(s.join("postmaster.pid"), b"1").unwrap();
        std::fs::write(s.join("PG_VERSION"), b"16\n").unwrap();
        std::os::unix::fs::symlink("/", s.join("pg_tblspc/16384")).unwrap();
        std::os::unix::fs::symlink("/etc", s.join("conf")).unwrap();

        let dst = tempfile::tempdir().unwrap();
        let d = dst.path();
        let done = copy_tree(s, d, Part::Data).unwrap();
        assert_eq!(done.files, 2, "{done:?}");
        assert_eq!(std::fs::read(d.join("base/1/1259")).unwrap(), b"relation");
        assert!(d.join("pg_wal/archive_status").is_dir());
        assert!(!d.join("pg_wal/000000010000000000000001").exists());
        assert!(d.join("pg_tblspc").is_dir());
        assert!(std::fs::symlink_metadata(d.join("pg_tblspc/16384")).is_err());
        assert!(std::fs::symlink_metadata(d.join("conf")).is_err());
        assert!(!d.join("postmaster.pid").exists());
        assert!(!d.join("pg_stat_tmp/x").exists());
        assert!(!d.join("global/pg_control").exists());

        copy_tree(s, d, Part::Control).unwrap();
        assert_eq!(
            std::fs::read(d.join("global/pg_control")).unwrap(),
            b"control"
        );
        let wal = d.join("pg_wal");
        copy_tree(&s.join("pg_wal"), &wal, Part::All).unwrap();
        assert!(wal.join("000000010000000000000001").exists());
    }
}
