//! The lock on the old cluster itself: one upgrade, rollback or finalize of a data directory
//! at a time, whatever new data directory each was given.
//!
//! It is a `flock` on a read-only descriptor of the old data directory: nothing is written
//! there (pgleap never edits the old cluster), the kernel drops it when the holder dies, and
//! the holder's pid is read back from `/proc/locks`.

use std::fs::File;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Finding, Result};

/// Held for as long as the value lives.
#[derive(Debug)]
pub(crate) struct OldLock {
    _flock: Flock<File>,
}

/// The old data directory, opened to lock it; `None` when this user may not open it (the
/// preflight then refuses with the real reason: wrong user, unreadable directory).
fn open(datadir: &Path) -> Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY)
        .open(datadir)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(None),
        Err(e) => Err(Error::io(
            "cannot open the old data directory to lock it",
            datadir,
            e,
        )),
    }
}

/// The pid holding a flock on `file`'s inode, from `/proc/locks`.
fn holder(file: &File) -> Option<u32> {
    let meta = file.metadata().ok()?;
    let dev = meta.dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let want = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (a "->" marks a waiter).
        let f: Vec<&str> = f.into_iter().filter(|x| *x != "->").collect();
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&want.as_str()))
            .then(|| f.get(4)?.parse().ok())
            .flatten()
    })
}

fn who(file: &File) -> String {
    holder(file).map_or_else(
        || "another pgleap".to_string(),
        |p| format!("another pgleap (pid {p})"),
    )
}

impl OldLock {
    /// Takes the exclusive lock (upgrade, rollback, finalize), or refuses naming the holder.
    pub(crate) fn exclusive(datadir: &Path) -> Result<Option<OldLock>> {
        let Some(file) = open(datadir)? else {
            return Ok(None);
        };
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(flock) => Ok(Some(OldLock { _flock: flock })),
            Err((file, nix::errno::Errno::EWOULDBLOCK)) => Err(Error::Refused {
                findings: vec![Finding::error(
                    "locked",
                    format!(
                        "{} is working on an upgrade of {}",
                        who(&file),
                        datadir.display()
                    ),
                    "Wait for it to finish, or stop it (pgleap status shows where it stands)",
                )],
            }),
            Err((_, errno)) => Err(Error::io("cannot lock", datadir, errno.into())),
        }
    }

    /// For `check`: a shared lock, refused while an upgrade of the cluster holds it.
    pub(crate) fn shared(datadir: &Path) -> Result<Option<OldLock>> {
        let Some(file) = open(datadir)? else {
            return Ok(None);
        };
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(flock) => Ok(Some(OldLock { _flock: flock })),
            Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
                let pid = holder(&file)
                    .map_or_else(|| "another process".into(), |p| format!("pgleap pid {p}"));
                Err(Error::Refused {
                    findings: vec![Finding::error(
                        "upgrade-in-progress",
                        format!(
                            "an upgrade of {} is in progress ({pid}); check would start or read the cluster behind its back",
                            datadir.display()
                        ),
                        "Wait for it to finish (pgleap status shows where it stands), then run check again",
                    )],
                })
            }
            Err((_, errno)) => Err(Error::io("cannot lock", datadir, errno.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_exclusive_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = OldLock::exclusive(dir.path()).unwrap();
        let err = OldLock::exclusive(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "another pgleap (pid {}) is working on an upgrade of",
                std::process::id()
            )),
            "{err}"
        );
        let err = OldLock::shared(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is in progress"), "{err}");
        drop(first);
        let a = OldLock::shared(dir.path()).unwrap();
        let _b = OldLock::shared(dir.path()).unwrap();
        assert!(OldLock::exclusive(dir.path()).is_err());
        drop(a);
    }
}
