//! The lock of one upgrade: an exclusive flock on a file in its work directory, held for
//! as long as a pgleap process works on it and released when that process dies.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;

use crate::error::{Error, Finding, Result};
use crate::exec::ownerfs;
use crate::exec::process::Owner;
use crate::state::journal::{open_nofollow, read_nofollow};

const LOCK: &str = "lock";

/// The exclusive lock of one upgrade's work directory; released when dropped or when the
/// process dies.
#[derive(Debug)]
pub(crate) struct Lock {
    _flock: nix::fcntl::Flock<File>,
}

impl Lock {
    /// Takes the lock, or refuses naming the process that holds it. The lock file is the
    /// owner's: created by the owner, opened without following links, and written (the
    /// holder's pid) only when it is a plain file of the owner's with no other name.
    pub(crate) fn acquire(work_dir: &Path, owner: &Owner) -> Result<Lock> {
        use std::os::unix::fs::MetadataExt as _;
        let path = work_dir.join(LOCK);
        let planted = |what: &str| Error::Planted {
            path: path.clone(),
            what: what.into(),
        };
        let file = match open_nofollow(&path, true) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                ownerfs::write(owner, &path, b"", 0o600)?;
                open_nofollow(&path, true)
            }
            other => other,
        }
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                planted("is a symbolic link")
            } else {
                Error::io("cannot open the lock file", &path, e)
            }
        })?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io("cannot open the lock file", &path, e))?;
        if !meta.is_file() || meta.nlink() != 1 || meta.uid() != owner.uid {
            return Err(planted(&format!(
                "is not a plain file of {} with a single name",
                owner.name
            )));
        }
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
    let pid: u32 = read_nofollow(&work_dir.join(LOCK))
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
    let Ok(file) = open_nofollow(&work_dir.join(LOCK), false) else {
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
        let me = Owner::from_uid(
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        let first = Lock::acquire(dir.path(), &me).unwrap();
        let err = Lock::acquire(dir.path(), &me).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(is_locked(dir.path()));
        drop(first);
        assert!(!is_locked(dir.path()));
        assert!(Lock::acquire(dir.path(), &me).is_ok());
    }
}
