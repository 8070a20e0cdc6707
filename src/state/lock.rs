//! The lock of one upgrade: an exclusive flock on a file in its work directory, held for
//! as long as a pgleap process works on it and released when that process dies.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;

use crate::error::{Error, Finding, Result};

const LOCK: &str = "lock";

/// The exclusive lock of one upgrade's work directory; released when dropped or when the
/// process dies.
#[derive(Debug)]
pub(crate) struct Lock {
    _flock: nix::fcntl::Flock<File>,
}

impl Lock {
    /// Takes the lock, or refuses naming the process that holds it.
    pub(crate) fn acquire(work_dir: &Path) -> Result<Lock> {
        let path = work_dir.join(LOCK);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("cannot open the lock file", &path, e))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(mut flock) => {
                use std::io::Seek as _;
                let _ = flock.set_len(0);
                let _ = flock.seek(std::io::SeekFrom::Start(0));
                let _ = writeln!(flock, "{}", std::process::id());
                let _ = flock.sync_all();
                Ok(Lock { _flock: flock })
            }
            Err((_, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
                let holder = holder(work_dir)
                    .map_or_else(|| "another process".to_string(), |p| format!("pid {p}"));
                Err(Error::Refused {
                    findings: vec![Finding::error(
                        "locked",
                        format!(
                            "another pgleap ({holder}) is working on this upgrade ({})",
                            work_dir.display()
                        ),
                        "Wait for it to finish, or stop it (pgleap status shows where it stands)",
                    )],
                })
            }
            Err((_, errno)) => Err(Error::io("cannot lock", &path, errno.into())),
        }
    }
}

/// The pid written by the process holding the lock, if it is still alive.
pub(crate) fn holder(work_dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(work_dir.join(LOCK))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    std::path::Path::new(&format!("/proc/{pid}"))
        .exists()
        .then_some(pid)
}

/// True when a live process holds the lock of `work_dir`.
pub(crate) fn is_locked(work_dir: &Path) -> bool {
    let Ok(file) = File::open(work_dir.join(LOCK)) else {
        return false;
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock) {
        Ok(_) => false,
        Err((_, errno)) => errno == nix::errno::Errno::EWOULDBLOCK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = Lock::acquire(dir.path()).unwrap();
        let err = Lock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(is_locked(dir.path()));
        drop(first);
        assert!(!is_locked(dir.path()));
        assert!(Lock::acquire(dir.path()).is_ok());
    }
}
