//! Proof of identity: what binds a journal to the clusters it describes, checked before any
//! destructive step.
//!
//! The journal lives in a directory the cluster owner can write, so anything it records may
//! be forged. Before undo, resume or finalize removes a directory, that directory must prove
//! it is the one this upgrade created (the new data directory's inode, recorded when pgleap
//! created it, and a random id written into it after initdb; its system identifier) or the
//! one it upgraded (the old cluster's system identifier). Tablespace subdirectories are only
//! ever the exact `PG_<major>_<catversion>` that the new major names, inside the locations
//! the old cluster's own `pg_tblspc` links name.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Finding, Result};
use crate::exec::process::Owner;

/// The id file pgleap writes into the new data directory right after initdb.
pub(crate) const ID_FILE: &str = "pgleap_upgrade_id";

/// What the journal records to recognise both clusters later.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Identity {
    /// The old cluster's system identifier (pg_control).
    pub(crate) old_system_id: Option<u64>,
    /// Device and inode of the new data directory pgleap created.
    pub(crate) new_dir: Option<(u64, u64)>,
    /// The random id written into `NEW/pgleap_upgrade_id`.
    pub(crate) token: Option<String>,
    /// The new cluster's system identifier after initdb.
    pub(crate) new_system_id: Option<u64>,
    /// The new major's catalog version: its tablespace subdirectories are
    /// `PG_<major>_<catversion>`.
    pub(crate) new_catalog_version: Option<u32>,
    /// The old control file's modification time (ns) once pg_upgrade was done with it: a
    /// different one later means the old cluster was started since.
    pub(crate) old_control_mtime: Option<i128>,
}

/// The first fields of `global/pg_control` (system identifier, control and catalog
/// versions), read from a regular file only: no link at the file itself is followed, and a
/// FIFO in its place does not block.
fn control_head(datadir: &Path) -> Option<(u64, u32)> {
    use crate::exec::ownerfs::{Follow, read_regular};
    // PostgreSQL writes the control file as one 8 kB block.
    let bytes = read_regular(&datadir.join("global/pg_control"), Follow::No, 8192).ok()?;
    let head: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
    // ControlFileData: uint64 system_identifier, uint32 pg_control_version,
    // uint32 catalog_version_no, in the machine's byte order.
    let sysid = u64::from_ne_bytes(head[0..8].try_into().ok()?);
    let catversion = u32::from_ne_bytes(head[12..16].try_into().ok()?);
    Some((sysid, catversion))
}

pub(crate) fn system_id(datadir: &Path) -> Option<u64> {
    control_head(datadir).map(|(s, _)| s)
}

/// When the new data directory has been created (before initdb): record what names it.
pub(crate) fn begin(old_datadir: &Path, new_datadir: &Path) -> Result<Identity> {
    let m = std::fs::symlink_metadata(new_datadir)
        .map_err(|e| Error::io("cannot read", new_datadir, e))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Ok(Identity {
        old_system_id: system_id(old_datadir),
        new_dir: Some((m.dev(), m.ino())),
        token: Some(format!("{:x}-{:x}-{nanos:x}", std::process::id(), m.ino())),
        ..Identity::default()
    })
}

/// After initdb: write the id into the new data directory (as the owner).
pub(crate) fn mark_new(id: &Identity, owner: &Owner, new_datadir: &Path) -> Result<()> {
    let token = id.token.as_deref().unwrap_or_default();
    crate::exec::ownerfs::write(owner, &new_datadir.join(ID_FILE), token.as_bytes(), 0o600)
}

/// After initdb: the new cluster's system identifier and catalog version.
pub(crate) fn record_new(id: &mut Identity, new_datadir: &Path) {
    if let Some((sysid, cat)) = control_head(new_datadir) {
        id.new_system_id = Some(sysid);
        id.new_catalog_version = Some(cat);
    }
}

/// The modification time of the old cluster's control file (`pg_control`, or the
/// `pg_control.old` link mode leaves).
pub(crate) fn control_mtime(old_datadir: &Path) -> Option<i128> {
    ["global/pg_control", "global/pg_control.old"]
        .iter()
        .find_map(|f| std::fs::symlink_metadata(old_datadir.join(f)).ok())
        .map(|m| i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()))
}

fn not_ours(path: &Path, why: &str) -> Error {
    Error::Refused {
        findings: vec![Finding::error(
            "identity",
            format!(
                "{} is not the cluster this upgrade created ({why}); pgleap removes only what it can prove it made",
                path.display()
            ),
            "If it is the new cluster of this upgrade, remove it yourself and run pgleap again; otherwise find out who changed the journal",
        )],
    }
}

/// Checks that `path` is the new data directory this upgrade created. `initialized`: initdb
/// had finished, so the id file must be there.
pub(crate) fn prove_new(id: &Identity, path: &Path, initialized: bool) -> Result<()> {
    let m = std::fs::symlink_metadata(path).map_err(|e| Error::io("cannot read", path, e))?;
    if m.file_type().is_symlink() {
        return Err(not_ours(path, "it is a symbolic link"));
    }
    let Some(dir) = id.new_dir else {
        return Err(not_ours(
            path,
            "the journal holds no proof of identity; it was written by an older pgleap or changed",
        ));
    };
    if dir != (m.dev(), m.ino()) {
        return Err(not_ours(
            path,
            "it is another directory than the one pgleap created",
        ));
    }
    let marker = crate::exec::ownerfs::read_regular_text(
        &path.join(ID_FILE),
        crate::exec::ownerfs::Follow::No,
        4096,
    )
    .ok();
    match (&id.token, marker) {
        (Some(t), Some(m)) if *t != m.trim() => {
            return Err(not_ours(
                path,
                &format!("its {ID_FILE} names another upgrade"),
            ));
        }
        (_, None) if initialized => {
            return Err(not_ours(path, &format!("it has no {ID_FILE}")));
        }
        _ => {}
    }
    if let (Some(want), Some(have)) = (id.new_system_id, system_id(path)) {
        if want != have && Some(have) != id.old_system_id {
            return Err(not_ours(
                path,
                &format!("its system identifier is {have}, not {want}"),
            ));
        }
    }
    Ok(())
}

/// Checks that `path` is the old cluster that was upgraded.
pub(crate) fn prove_old(id: &Identity, path: &Path) -> Result<()> {
    match (id.old_system_id, system_id(path)) {
        (Some(want), Some(have)) if want != have => Err(Error::Refused {
            findings: vec![Finding::error(
                "identity",
                format!(
                    "{} is not the cluster that was upgraded (system identifier {have}, the upgrade recorded {want})",
                    path.display()
                ),
                "Pass the data directory that was upgraded",
            )],
        }),
        _ => Ok(()),
    }
}

/// The tablespace subdirectories the new cluster owns: `PG_<major>_<catversion>` in each of
/// `locations`, once the catalog version is known.
pub(crate) fn new_tablespace_dirs(
    id: &Identity,
    major: u32,
    locations: &[PathBuf],
) -> Vec<PathBuf> {
    id.new_catalog_version.map_or_else(Vec::new, |cat| {
        locations
            .iter()
            .map(|l| l.join(format!("PG_{major}_{cat}")))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_needs_the_same_directory_and_id() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("17");
        std::fs::create_dir(&new).unwrap();
        let id = begin(dir.path(), &new).unwrap();
        prove_new(&id, &new, false).unwrap();
        assert!(prove_new(&id, &new, true).is_err(), "no id file yet");
        std::fs::write(new.join(ID_FILE), id.token.clone().unwrap()).unwrap();
        prove_new(&id, &new, true).unwrap();
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let err = prove_new(&id, &other, false).unwrap_err().to_string();
        assert!(
            err.contains("is not the cluster this upgrade created"),
            "{err}"
        );
        assert!(prove_new(&Identity::default(), &new, false).is_err());
    }
}
