//! Who owns the old data directory, and whether pgleap may act for them: never root's
//! directory, and pgleap runs as root or as the owner; a directory pg_upgrade --link has
//! disabled already is refused.

use std::path::Path;

use crate::error::Finding;
use crate::exec::process::Owner;

/// pg_upgrade --link disables the old cluster by renaming global/pg_control: such a
/// directory was upgraded already and must not be used again.
pub(crate) fn check_not_disabled(datadir: &Path) -> Result<(), Finding> {
    let global = datadir.join("global");
    if global.join("pg_control.old").exists() && !global.join("pg_control").exists() {
        return Err(Finding::error(
            "old-disabled",
            format!(
                "{} was disabled by pg_upgrade --link (global/pg_control was renamed to pg_control.old): it has been upgraded already and cannot be started or upgraded again",
                datadir.display()
            ),
            "Use the new cluster (pgleap status --old-datadir shows an upgrade pgleap made); if the new cluster never started, pgleap rollback restores this one",
        ));
    }
    Ok(())
}

/// A data directory pgleap cannot read usually belongs to another user: when its owner can
/// be seen, say whom to run as instead of quoting the permission error.
pub(crate) fn explain_unreadable(f: Finding, datadir: &Path) -> Finding {
    use std::os::unix::fs::MetadataExt as _;
    if f.code != "old-datadir-unreadable" {
        return f;
    }
    let Ok(meta) = std::fs::metadata(datadir) else {
        return f;
    };
    check_owner(&Owner::from_uid(meta.uid(), meta.gid()), datadir)
        .err()
        .unwrap_or(f)
}

/// The data directory must belong to an unprivileged user, and pgleap must run as root or
/// as that user.
pub(crate) fn check_owner(owner: &Owner, datadir: &Path) -> Result<(), Finding> {
    if owner.uid == 0 {
        return Err(Finding::error(
            "owned-by-root",
            format!(
                "{} is owned by root; PostgreSQL refuses to run as root",
                datadir.display()
            ),
            format!(
                "chown -R the directory to the user that runs the server (for example chown -R postgres: {})",
                datadir.display()
            ),
        ));
    }
    let me = nix::unistd::geteuid();
    if !me.is_root() && me.as_raw() != owner.uid {
        let me_name = nix::unistd::User::from_uid(me)
            .ok()
            .flatten()
            .map_or_else(|| me.to_string(), |u| u.name);
        return Err(Finding::error(
            "wrong-user",
            format!(
                "{} belongs to uid {} ({}), but pgleap runs as uid {} ({})",
                datadir.display(),
                owner.uid,
                owner.name,
                me.as_raw(),
                me_name
            ),
            format!(
                "Run pgleap as root (it runs PostgreSQL as {}) or as {}",
                owner.name, owner.name
            ),
        ));
    }
    Ok(())
}
