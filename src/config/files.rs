//! The carried files: where each old file goes (`Dirs`), and writing them owned by the
//! cluster owner with the old file's mode.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::exec::process::Owner;

/// Comments out line `idx` with a note saying why.
pub(crate) fn comment_out(lines: &mut [String], idx: usize, why: &str) {
    lines[idx] = format!("#{}\t# pgleap: {why}", lines[idx]);
}

/// A file being carried: its old location, new location, and lines.
pub(crate) struct ConfFile {
    pub(crate) new: PathBuf,
    pub(crate) lines: Vec<String>,
    /// postgresql.conf and its includes hold settings; pg_hba.conf and pg_ident.conf do not.
    pub(crate) settings: bool,
    /// The old file's permission bits.
    pub(crate) mode: Option<u32>,
}

/// The directories configuration is carried between. `old_conf` is where the old server
/// reads postgresql.conf: the data directory, or Debian's `/etc/postgresql/N/NAME`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dirs<'a> {
    pub(crate) old_data: &'a Path,
    pub(crate) old_conf: &'a Path,
    pub(crate) new_data: &'a Path,
    pub(crate) new_conf: &'a Path,
}

impl Dirs<'_> {
    /// The (old, new) directory pairs, the longer old path first so that a configuration
    /// directory inside the data directory maps by its own pair.
    pub(crate) fn pairs(&self) -> Vec<(&Path, &Path)> {
        let mut pairs = vec![
            (self.old_conf, self.new_conf),
            (self.old_data, self.new_data),
        ];
        pairs.sort_by_key(|(o, _)| std::cmp::Reverse(o.as_os_str().len()));
        pairs.dedup_by_key(|(o, _)| *o);
        pairs
    }

    /// Where a file of the old cluster goes; `None` for files outside both directories
    /// (shared with other clusters, like Debian's snakeoil certificate).
    pub(crate) fn map(&self, old: &Path) -> Option<PathBuf> {
        self.pairs()
            .into_iter()
            .find_map(|(o, n)| old.strip_prefix(o).ok().map(|rel| n.join(rel)))
    }

    pub(crate) fn separate(&self) -> bool {
        self.old_conf != self.old_data
    }

    /// A new path for messages: relative to the new data directory, or absolute.
    pub(crate) fn show(&self, new: &Path) -> String {
        display_rel(new, self.new_data)
    }

    /// Directories created for the new cluster: 0700 in the data directory (PostgreSQL
    /// insists), 0755 elsewhere like the rest of /etc.
    pub(crate) fn dir_mode(&self, dir: &Path) -> u32 {
        if dir.starts_with(self.new_data) {
            0o700
        } else {
            0o755
        }
    }
}

pub(crate) fn file_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

pub(crate) fn display_rel(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Writes a carried file owned by the cluster owner, with the old file's mode (0600 when
/// unknown): Debian's postgresql.conf stays world-readable for pg_lsclusters.
pub(crate) fn write_owned(
    path: &Path,
    lines: &[String],
    owner: &Owner,
    mode: Option<u32>,
    dirs: &Dirs<'_>,
) -> Result<()> {
    if let Some(parent) = path.parent() {
        create_dirs_owned(parent, owner, dirs)?;
    }
    let mut text = lines.join("\n");
    text.push('\n');
    crate::exec::ownerfs::write(owner, path, text.as_bytes(), mode.unwrap_or(0o600))
}

/// Copies a file (server.key, certificates) as the owner: a link to a file the owner may
/// not read fails instead of handing the owner a copy.
pub(crate) fn copy_owned(from: &Path, to: &Path, owner: &Owner, dirs: &Dirs<'_>) -> Result<()> {
    if let Some(parent) = to.parent() {
        create_dirs_owned(parent, owner, dirs)?;
    }
    let mode = file_mode(from).unwrap_or(0o600);
    crate::exec::ownerfs::copy(owner, from, to, mode)
}

/// Carries a file that holds no settings (certificates, keys, CRLs): a link stays a link, a
/// copied key stays private.
pub(crate) fn carry_other(old: &Path, target: &Path, owner: &Owner, dirs: &Dirs<'_>) -> Result<()> {
    if old
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
    {
        return link_owned(old, target, owner, dirs);
    }
    copy_owned(old, target, owner, dirs)?;
    if old.extension().is_some_and(|e| e == "key") {
        keep_key_private(target, owner)?;
    }
    Ok(())
}

/// Carries a symbolic link as a link to the same file (mapped when it points into the old
/// directories): Debian's `server.key` links to a key that root owns and the ssl-cert group
/// reads, which PostgreSQL accepts from root only, never as a copy the owner owns.
fn link_owned(from: &Path, to: &Path, owner: &Owner, dirs: &Dirs<'_>) -> Result<()> {
    let link = std::fs::read_link(from).map_err(|e| Error::io("cannot read the link", from, e))?;
    let absolute = from
        .parent()
        .map_or_else(|| link.clone(), |p| p.join(&link));
    let dest = dirs.map(&absolute).unwrap_or(absolute);
    if let Some(parent) = to.parent() {
        create_dirs_owned(parent, owner, dirs)?;
    }
    // The owner makes the link in its own directory: a link grants nothing the owner could
    // not make itself, so no file is read or written through it here.
    if to.symlink_metadata().is_ok() {
        crate::exec::ownerfs::remove_file_as(owner, to)?;
    }
    crate::exec::ownerfs::symlink_as(owner, &dest, to)
}

/// A private key copied for the owner: PostgreSQL accepts group access (0640) only when root
/// owns the key, so the owner's copy gets 0600.
fn keep_key_private(path: &Path, owner: &Owner) -> Result<()> {
    match file_mode(path) {
        Some(mode) if mode & 0o077 != 0 => set_mode(path, mode & 0o600, owner),
        _ => Ok(()),
    }
}

pub(crate) fn set_mode(path: &Path, mode: u32, owner: &Owner) -> Result<()> {
    crate::exec::ownerfs::chmod_as(owner, path, mode)
}

pub(crate) fn create_dirs_owned(dir: &Path, owner: &Owner, dirs: &Dirs<'_>) -> Result<()> {
    crate::exec::ownerfs::create_missing(owner, dir, &|d| dirs.dir_mode(d))
}

/// Reads a configuration file with the owner's rights (see [`copy_owned`]).
pub(crate) fn read_as_owner(path: &Path, owner: &Owner) -> Result<String> {
    let bytes = crate::exec::ownerfs::read(owner, path)?;
    String::from_utf8(bytes).map_err(|_| Error::NotText {
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirs_map_configuration_and_data_separately() {
        let dirs = Dirs {
            old_data: Path::new("/var/lib/postgresql/15/main"),
            old_conf: Path::new("/etc/postgresql/15/main"),
            new_data: Path::new("/var/lib/postgresql/17/main"),
            new_conf: Path::new("/etc/postgresql/17/main"),
        };
        assert_eq!(
            dirs.map(Path::new("/etc/postgresql/15/main/conf.d/a.conf")),
            Some(PathBuf::from("/etc/postgresql/17/main/conf.d/a.conf"))
        );
        assert_eq!(
            dirs.map(Path::new(
                "/var/lib/postgresql/15/main/postgresql.auto.conf"
            )),
            Some(PathBuf::from(
                "/var/lib/postgresql/17/main/postgresql.auto.conf"
            ))
        );
        assert_eq!(dirs.map(Path::new("/etc/ssl/certs/snakeoil.pem")), None);
        assert_eq!(
            dirs.dir_mode(Path::new("/etc/postgresql/17/main/conf.d")),
            0o755
        );
        assert_eq!(
            dirs.dir_mode(Path::new("/var/lib/postgresql/17/main/x")),
            0o700
        );
        // A configuration directory inside the data directory maps by its own pair.
        let nested = Dirs {
            old_data: Path::new("/d/15"),
            old_conf: Path::new("/d/15/etc"),
            new_data: Path::new("/d/17"),
            new_conf: Path::new("/e/17"),
        };
        assert_eq!(
            nested.map(Path::new("/d/15/etc/postgresql.conf")),
            Some(PathBuf::from("/e/17/postgresql.conf"))
        );
    }
}
