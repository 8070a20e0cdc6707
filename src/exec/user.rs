//! The operating-system user that owns a data directory, and switching a child to it.
//!
//! Kept apart from the process runner so that every re-exec of pgleap as the owner (catalog
//! and file work) and the runner itself share one way of becoming the owner.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Command;

/// The operating-system user that owns a data directory and runs its programs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Owner {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) name: String,
    pub(crate) home: PathBuf,
}

impl Owner {
    pub(crate) fn from_uid(uid: u32, gid: u32) -> Owner {
        match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
            Ok(Some(u)) => Owner {
                uid,
                gid,
                name: u.name,
                home: u.dir,
            },
            // Arbitrary UIDs (Kubernetes, OpenShift) have no passwd entry.
            _ => Owner {
                uid,
                gid,
                name: uid.to_string(),
                home: PathBuf::from("/tmp"),
            },
        }
    }

    /// True when programs must switch to this owner (pgleap itself runs as root).
    pub(crate) fn needs_switch(&self) -> bool {
        nix::unistd::geteuid().is_root() && self.uid != 0
    }

    /// The owner's groups: its primary group and the supplementary ones of its passwd name
    /// (none for an arbitrary uid without a passwd entry).
    pub(crate) fn groups(&self) -> Vec<nix::unistd::Gid> {
        let gid = nix::unistd::Gid::from_raw(self.gid);
        std::ffi::CString::new(self.name.clone())
            .ok()
            .filter(|_| {
                nix::unistd::User::from_name(&self.name)
                    .ok()
                    .flatten()
                    .is_some()
            })
            .and_then(|name| nix::unistd::getgrouplist(&name, gid).ok())
            .unwrap_or_else(|| vec![gid])
    }
}

/// Makes `cmd` run as `owner`, with its primary and supplementary groups.
pub(crate) fn switch(cmd: &mut Command, owner: &Owner) {
    // The owner's supplementary groups too, as login would give them: Debian's
    // postgres reads the snakeoil SSL key through the ssl-cert group. Listed here,
    // before the fork; the child only makes system calls. std's `uid()` would drop
    // them, so the switch is done by hand, before the closure below (changing
    // credentials clears the parent-death signal).
    let (uid, gid) = (
        nix::unistd::Uid::from_raw(owner.uid),
        nix::unistd::Gid::from_raw(owner.gid),
    );
    let groups = owner.groups();
    // SAFETY: setgroups, setgid and setuid are async-signal-safe system calls on
    // memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setgroups(&groups)
                .and_then(|()| nix::unistd::setgid(gid))
                .and_then(|()| nix::unistd::setuid(uid))
                .map_err(std::io::Error::from)
        });
    }
}
