//! File work inside directories the cluster owner can write, done as the owner.
//!
//! When pgleap runs as root, root never opens, creates, truncates, chmods, chowns, renames
//! or removes a path inside a directory the owner (or any non-root user) can write: the
//! owner could have planted a symlink there, or swap one in between a check and the use.
//! Such work is sent to a child re-executed as the owner (`pgleap __fs`), so a lie can at
//! most make the owner touch the owner's own files. When pgleap is not root it already is
//! the owner, and the same functions run in-process.

use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::error::{Error, Result};
use crate::exec::user::Owner;

/// The requests of the hidden `__fs` subcommand, each run by the owner.
#[derive(Debug, Clone, clap::Subcommand)]
pub(crate) enum Request {
    /// Create a directory (not its parents) with a mode.
    Mkdir {
        path: PathBuf,
        #[arg(value_parser = octal)]
        mode: u32,
    },
    /// Replace a file atomically with stdin: temp file, fsync, rename, fsync the directory.
    Write {
        path: PathBuf,
        #[arg(value_parser = octal)]
        mode: u32,
    },
    /// Print a file on stdout.
    Read { path: PathBuf },
    /// Copy a file, giving the copy a mode.
    Copy {
        from: PathBuf,
        to: PathBuf,
        #[arg(value_parser = octal)]
        mode: u32,
    },
    /// Set a file's or directory's mode.
    Chmod {
        path: PathBuf,
        #[arg(value_parser = octal)]
        mode: u32,
    },
    /// Remove a directory tree (a symlink is removed, not followed).
    RemoveTree { path: PathBuf },
    /// Remove a file.
    RemoveFile { path: PathBuf },
    /// Rename within a filesystem.
    Rename { from: PathBuf, to: PathBuf },
    /// Create a symbolic link `link` pointing at `target`.
    Symlink { target: PathBuf, link: PathBuf },
    /// Print the symbolic links directly in a directory and where each points (JSON); none
    /// for a directory that does not exist.
    Links { dir: PathBuf },
    /// Rename, or copy and remove across filesystems.
    MoveTree { from: PathBuf, to: PathBuf },
    /// Copy a data directory tree for a rehearsal (see `exec::copytree`); prints what it
    /// copied (JSON).
    CopyTree {
        from: PathBuf,
        to: PathBuf,
        #[arg(value_enum)]
        part: crate::exec::copytree::Part,
    },
    /// Ask the kernel to read the relation files of a data directory (and of its
    /// tablespaces' `PREFIX*` subdirectories) into the page cache, within a byte and a time
    /// budget (see `exec::readahead`); prints what it advised (JSON).
    ReadAhead {
        datadir: PathBuf,
        prefix: String,
        budget: u64,
        millis: u64,
        tablespaces: Vec<PathBuf>,
    },
}

fn octal(mode: &str) -> std::result::Result<u32, std::num::ParseIntError> {
    u32::from_str_radix(mode, 8)
}

/// Entry point of `__fs`, and the in-process path when no identity switch is needed.
pub(crate) fn serve(request: Request) -> Result<()> {
    serve_with(request, &mut std::io::stdin(), &mut std::io::stdout())
}

fn serve_with(
    request: Request,
    input: &mut dyn std::io::Read,
    output: &mut dyn std::io::Write,
) -> Result<()> {
    match request {
        Request::Mkdir { path, mode } => {
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new()
                .mode(mode)
                .create(&path)
                .map_err(|e| Error::io("cannot create directory", &path, e))?;
            chmod(&path, mode)
        }
        Request::Write { path, mode } => {
            let mut bytes = Vec::new();
            input
                .read_to_end(&mut bytes)
                .map_err(|e| Error::io("cannot read the contents for", &path, e))?;
            write_atomic(&path, &bytes, mode)
        }
        Request::Read { path } => {
            let bytes = read_regular(&path, Follow::Links, READ_LIMIT)
                .map_err(|e| Error::io("cannot read", &path, e))?;
            output
                .write_all(&bytes)
                .map_err(|e| Error::io("cannot pass on", &path, e))
        }
        Request::Copy { from, to, mode } => {
            std::fs::copy(&from, &to).map_err(|e| Error::io("cannot copy", &from, e))?;
            chmod(&to, mode)
        }
        Request::Chmod { path, mode } => chmod(&path, mode),
        Request::RemoveTree { path } => remove_tree(&path),
        Request::RemoveFile { path } => {
            std::fs::remove_file(&path).map_err(|e| Error::io("cannot remove", &path, e))
        }
        Request::Rename { from, to } => {
            std::fs::rename(&from, &to).map_err(|e| Error::io("cannot rename", &from, e))
        }
        Request::MoveTree { from, to } => move_tree(&from, &to),
        Request::Symlink { target, link } => std::os::unix::fs::symlink(&target, &link)
            .map_err(|e| Error::io("cannot create the link", &link, e)),
        Request::ReadAhead {
            datadir,
            prefix,
            budget,
            millis,
            tablespaces,
        } => {
            let limit = std::time::Duration::from_millis(millis);
            let done =
                crate::exec::readahead::advise(&datadir, &tablespaces, &prefix, budget, limit);
            let json = serde_json::to_vec(&done).map_err(Error::DbEncode)?;
            output
                .write_all(&json)
                .map_err(|e| Error::io("cannot pass on", &datadir, e))
        }
        Request::Links { dir } => {
            let json = serde_json::to_vec(&read_links(&dir)?).map_err(Error::DbEncode)?;
            output
                .write_all(&json)
                .map_err(|e| Error::io("cannot pass on", &dir, e))
        }
        Request::CopyTree { from, to, part } => {
            let done = crate::exec::copytree::copy_tree(&from, &to, part)?;
            let json = serde_json::to_vec(&done).map_err(Error::DbEncode)?;
            output
                .write_all(&json)
                .map_err(|e| Error::io("cannot pass on", &to, e))
        }
    }
}

/// The symbolic links directly in `dir`, by name, with their targets.
fn read_links(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("cannot read", dir, e)),
    };
    let mut links = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("cannot read", dir, e))?;
        if let Ok(target) = std::fs::read_link(entry.path()) {
            links.push((entry.file_name().to_string_lossy().into_owned(), target));
        }
    }
    links.sort();
    Ok(links)
}

fn chmod(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("cannot chmod", path, e))
}

fn remove_tree(path: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io("cannot remove", path, e))?;
    if meta.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
    .map_err(|e| Error::io("cannot remove", path, e))
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| Error::io("cannot write", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.set_permissions(std::fs::Permissions::from_mode(mode)))
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("cannot write", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io("cannot write", path, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("cannot sync the directory", dir, e))
}

/// `rename`, or copy and remove across filesystems (/etc and /var often differ).
fn move_tree(from: &Path, to: &Path) -> Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => {
            copy_tree(from, to)?;
            remove_tree(from)
        }
        Err(e) => Err(Error::io("cannot move", from, e)),
    }
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.map_err(|source| Error::Walk {
            path: from.to_path_buf(),
            source,
        })?;
        let rel = entry.path().strip_prefix(from).unwrap_or(entry.path());
        let target = to.join(rel);
        let ft = entry.file_type();
        if ft.is_dir() {
            std::fs::create_dir_all(&target)
                .map_err(|e| Error::io("cannot create directory", &target, e))?;
        } else if ft.is_symlink() {
            let link = std::fs::read_link(entry.path())
                .map_err(|e| Error::io("cannot read", entry.path(), e))?;
            std::os::unix::fs::symlink(&link, &target)
                .map_err(|e| Error::io("cannot create", &target, e))?;
        } else {
            std::fs::copy(entry.path(), &target)
                .map_err(|e| Error::io("cannot copy", entry.path(), e))?;
        }
    }
    Ok(())
}

/// Runs `request` as `owner`: in a child switched to the owner when pgleap is root, else
/// here. `input` feeds a `Write`; the child's stdout is returned (a `Read`).
fn run(owner: &Owner, request: Request, args: &[String], input: &[u8]) -> Result<Vec<u8>> {
    if !owner.needs_switch() {
        let mut out = Vec::new();
        serve_with(request, &mut &input[..], &mut out)?;
        return Ok(out);
    }
    let exe = crate::exec::owner::owner_executable(owner)?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg("__fs")
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LANG", "C")
        .current_dir("/");
    crate::exec::user::switch(&mut cmd, owner);
    // Own process group, and no outliving pgleap (after the switch, which clears it).
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = |source| Error::OwnerRun {
        request: format!("__fs {}", args.join(" ")),
        source,
    };
    let mut child = cmd.spawn().map_err(what)?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let out = child.wait_with_output().map_err(what)?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reason = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map_or_else(
            || out.status.to_string(),
            |l| l.trim_start_matches("pgleap: ").to_string(),
        );
    Err(Error::AsOwner {
        owner: owner.name.clone(),
        reason,
    })
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn mode_arg(mode: u32) -> String {
    format!("{mode:o}")
}

/// Creates `path` (its parent must exist) as the owner, with `mode`.
pub(crate) fn mkdir(owner: &Owner, path: &Path, mode: u32) -> Result<()> {
    let req = Request::Mkdir {
        path: path.into(),
        mode,
    };
    run(owner, req, &["mkdir".into(), p(path), mode_arg(mode)], &[]).map(|_| ())
}

/// Replaces `path` atomically with `bytes`, as the owner.
pub(crate) fn write(owner: &Owner, path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let req = Request::Write {
        path: path.into(),
        mode,
    };
    run(
        owner,
        req,
        &["write".into(), p(path), mode_arg(mode)],
        bytes,
    )
    .map(|_| ())
}

/// Reads `path` with the owner's rights: a link to a file the owner may not read fails.
pub(crate) fn read(owner: &Owner, path: &Path) -> Result<Vec<u8>> {
    let req = Request::Read { path: path.into() };
    run(owner, req, &["read".into(), p(path)], &[])
}

/// The symbolic links directly in `dir` and their targets, read with the owner's rights.
pub(crate) fn links(owner: &Owner, dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let req = Request::Links { dir: dir.into() };
    let out = run(owner, req, &["links".into(), p(dir)], &[])?;
    serde_json::from_slice(&out).map_err(|e| Error::AsOwner {
        owner: owner.name.clone(),
        reason: format!("unreadable list of the links in {}: {e}", dir.display()),
    })
}

/// Copies `from` to `to` with the owner's rights.
pub(crate) fn copy(owner: &Owner, from: &Path, to: &Path, mode: u32) -> Result<()> {
    let req = Request::Copy {
        from: from.into(),
        to: to.into(),
        mode,
    };
    run(
        owner,
        req,
        &["copy".into(), p(from), p(to), mode_arg(mode)],
        &[],
    )
    .map(|_| ())
}

pub(crate) fn chmod_as(owner: &Owner, path: &Path, mode: u32) -> Result<()> {
    let req = Request::Chmod {
        path: path.into(),
        mode,
    };
    run(owner, req, &["chmod".into(), p(path), mode_arg(mode)], &[]).map(|_| ())
}

pub(crate) fn remove_tree_as(owner: &Owner, path: &Path) -> Result<()> {
    let req = Request::RemoveTree { path: path.into() };
    run(owner, req, &["remove-tree".into(), p(path)], &[]).map(|_| ())
}

pub(crate) fn remove_file_as(owner: &Owner, path: &Path) -> Result<()> {
    let req = Request::RemoveFile { path: path.into() };
    run(owner, req, &["remove-file".into(), p(path)], &[]).map(|_| ())
}

pub(crate) fn rename_as(owner: &Owner, from: &Path, to: &Path) -> Result<()> {
    let req = Request::Rename {
        from: from.into(),
        to: to.into(),
    };
    run(owner, req, &["rename".into(), p(from), p(to)], &[]).map(|_| ())
}

/// Creates the symbolic link `link` to `target` as the owner.
pub(crate) fn symlink_as(owner: &Owner, target: &Path, link: &Path) -> Result<()> {
    let req = Request::Symlink {
        target: target.into(),
        link: link.into(),
    };
    run(owner, req, &["symlink".into(), p(target), p(link)], &[]).map(|_| ())
}

pub(crate) fn move_tree_as(owner: &Owner, from: &Path, to: &Path) -> Result<()> {
    let req = Request::MoveTree {
        from: from.into(),
        to: to.into(),
    };
    run(owner, req, &["move-tree".into(), p(from), p(to)], &[]).map(|_| ())
}

/// Copies a data directory tree as the owner (see `exec::copytree`).
pub(crate) fn copy_tree_as(
    owner: &Owner,
    from: &Path,
    to: &Path,
    part: crate::exec::copytree::Part,
) -> Result<crate::exec::copytree::Copied> {
    use clap::ValueEnum as _;
    let name = part
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string());
    let req = Request::CopyTree {
        from: from.into(),
        to: to.into(),
        part,
    };
    let out = run(owner, req, &["copy-tree".into(), p(from), p(to), name], &[])?;
    serde_json::from_slice(&out).map_err(|e| Error::DbAnswer {
        request: "copy-tree".into(),
        source: e,
    })
}

/// Reads the relation files of `datadir` and its tablespaces ahead into the page cache as
/// the owner (see `exec::readahead`).
pub(crate) fn read_ahead_as(
    owner: &Owner,
    datadir: &Path,
    tablespaces: &[PathBuf],
    prefix: &str,
    budget: u64,
    limit: std::time::Duration,
) -> Result<crate::exec::readahead::ReadAhead> {
    let millis = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
    let req = Request::ReadAhead {
        datadir: datadir.into(),
        prefix: prefix.into(),
        budget,
        millis,
        tablespaces: tablespaces.to_vec(),
    };
    let mut args = vec![
        "read-ahead".into(),
        p(datadir),
        prefix.into(),
        budget.to_string(),
        millis.to_string(),
    ];
    args.extend(tablespaces.iter().map(|t| p(t)));
    let out = run(owner, req, &args, &[])?;
    serde_json::from_slice(&out).map_err(|e| Error::DbAnswer {
        request: "read-ahead".into(),
        source: e,
    })
}

/// Whether `path` lies in a directory only root can change while pgleap runs as root for
/// another owner (such as a root-owned mount point `/data` holding `/data/15`): there the owner
/// cannot add or remove entries, and root can without being misled, since nobody else can
/// swap what the name refers to.
pub(crate) fn only_root_controls(owner: &Owner, path: &Path) -> bool {
    owner.needs_switch() && root_controlled(path.parent().unwrap_or(Path::new("/")))
}

/// Removes a whole tree as the owner; where only root controls its directory, the owner
/// empties it and root removes the empty directory (rmdir follows no link).
pub(crate) fn remove_tree_where(owner: &Owner, dir: &Path) -> Result<()> {
    let is_dir = std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir());
    if !is_dir || !only_root_controls(owner, dir) {
        return remove_tree_as(owner, dir);
    }
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io("cannot read", dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("cannot read", dir, e))?;
        remove_tree_as(owner, &entry.path())?;
    }
    std::fs::remove_dir(dir).map_err(|e| Error::io("cannot remove", dir, e))
}

/// Renames within a directory as the owner; where only root controls that directory, root
/// renames (rename follows no link, and both names are entries of root's directory).
pub(crate) fn rename_where(owner: &Owner, from: &Path, to: &Path) -> Result<()> {
    if only_root_controls(owner, from) && from.parent() == to.parent() {
        std::fs::rename(from, to).map_err(|e| Error::io("cannot rename", from, e))
    } else {
        rename_as(owner, from, to)
    }
}

/// [`write`], done by root itself when only root controls `path`'s directory (root's own
/// files, as a root-owned /etc/postgresql/N/NAME holds).
pub(crate) fn write_where(owner: &Owner, path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    if root_controlled(path.parent().unwrap_or(Path::new("/"))) {
        write_atomic(path, bytes, mode)
    } else {
        write(owner, path, bytes, mode)
    }
}

/// [`read`], done by root itself when only root controls `path`'s directory.
pub(crate) fn read_where(owner: &Owner, path: &Path) -> Result<Vec<u8>> {
    if root_controlled(path.parent().unwrap_or(Path::new("/"))) {
        std::fs::read(path).map_err(|e| Error::io("cannot read", path, e))
    } else {
        read(owner, path)
    }
}

/// The most pgleap reads of one file it parses (configuration, pid and lock files, logs):
/// far more than any of them holds, and a bound on what a planted file can make it read.
pub(crate) const READ_LIMIT: u64 = 64 * 1024 * 1024;

/// Whether [`read_regular`] follows a symbolic link in the file's own place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Follow {
    /// Refuse it: root reading inside a directory the owner can write, where a planted link
    /// would make root read (and perhaps show) another file.
    No,
    /// Follow it: the owner reading its own files, or a file an administrator may link.
    Links,
}

/// Reads a file that someone else may have replaced: inside a directory the owner can write,
/// a FIFO, a device or a directory can stand where a regular file belongs. The file is opened
/// without blocking (a FIFO with no writer would otherwise hang the open forever) and, with
/// [`Follow::No`], without following a link in its place; anything but a regular file, or
/// one over `limit` bytes, is an error of kind `InvalidData` that says what stands there.
pub(crate) fn read_regular(path: &Path, follow: Follow, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut flags = nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC | nix::libc::O_NOCTTY;
    if follow == Follow::No {
        flags |= nix::libc::O_NOFOLLOW;
    }
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) && follow == Follow::No => {
            return Err(not_regular("a symbolic link"));
        }
        other => other?,
    };
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(not_regular(describe(kind)));
    }
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("it is larger than {limit} bytes"),
        ));
    }
    Ok(bytes)
}

/// [`read_regular`] as text (invalid UTF-8 replaced).
pub(crate) fn read_regular_text(
    path: &Path,
    follow: Follow,
    limit: u64,
) -> std::io::Result<String> {
    read_regular(path, follow, limit).map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn not_regular(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("it is {what}, not a regular file"),
    )
}

fn describe(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "a special file"
    }
}

/// Gives a directory root created to the owner.
fn hand_over(path: &Path, owner: &Owner) -> Result<()> {
    nix::unistd::chown(path, Some(owner.uid.into()), Some(owner.gid.into()))
        .map_err(|e| Error::io("cannot change owner of", path, e.into()))
}

/// True when only root can change the entries of `dir` (root-owned, no group or other
/// write; or world-writable with the sticky bit, like /tmp, where a name root creates stays
/// root's).
pub(crate) fn root_controlled(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::symlink_metadata(dir).is_ok_and(|m| {
        m.is_dir() && m.uid() == 0 && (m.mode() & 0o022 == 0 || m.mode() & 0o1000 != 0)
    })
}

/// Creates `dir` for `owner`, mode 0700, with any missing parents: root itself creates what
/// lies in root-controlled parents and hands it over; below the first owner-writable
/// directory the owner creates the rest. An existing `dir` must be a real directory (a
/// symbolic link is refused, naming it).
pub(crate) fn create_owned_dir(dir: &Path, owner: &Owner) -> Result<()> {
    if let Ok(m) = std::fs::symlink_metadata(dir) {
        if m.file_type().is_symlink() {
            return Err(Error::Planted {
                path: dir.to_path_buf(),
                what: "is a symbolic link where pgleap creates its own directory".into(),
            });
        }
        let parent = dir.parent().unwrap_or(Path::new("/"));
        if owner.needs_switch() && m.uid() == 0 && root_controlled(parent) {
            // Root's own directory in a directory only root controls: root hands it over.
            chmod(dir, 0o700)?;
            return hand_over(dir, owner);
        }
        return chmod_as(owner, dir, 0o700);
    }
    create_missing(owner, dir, &|_| 0o700)
}

/// Creates the missing directories down to `dir` for `owner`, each with `mode_of(it)`:
/// root creates those whose parent only root controls and hands them over, the owner the
/// rest.
pub(crate) fn create_missing(
    owner: &Owner,
    dir: &Path,
    mode_of: &dyn Fn(&Path) -> u32,
) -> Result<()> {
    let mut missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|a| std::fs::symlink_metadata(a).is_err())
        .collect();
    missing.reverse();
    for d in missing {
        let parent = d.parent().unwrap_or(Path::new("/"));
        if owner.needs_switch() && root_controlled(parent) {
            std::fs::create_dir(d).map_err(|e| Error::io("cannot create directory", d, e))?;
            chmod(d, mode_of(d))?;
            // Parents like /var/lib/postgresql/17 belong to the cluster owner too.
            hand_over(d, owner)?;
        } else {
            mkdir(owner, d, mode_of(d))?;
        }
    }
    Ok(())
}

/// A directory the owner creates under `parent` with a fresh name, removed (as the owner)
/// when dropped.
#[derive(Debug)]
pub(crate) struct OwnerTempDir {
    path: PathBuf,
    owner: Owner,
}

impl OwnerTempDir {
    pub(crate) fn new(owner: &Owner, parent: &Path, prefix: &str) -> Result<OwnerTempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = parent.join(format!("{prefix}{}-{nanos:08x}", std::process::id()));
        mkdir(owner, &path, 0o700)?;
        Ok(OwnerTempDir {
            path,
            owner: owner.clone(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OwnerTempDir {
    fn drop(&mut self) {
        if let Err(e) = remove_tree_as(&self.owner, &self.path) {
            tracing::warn!("could not remove {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Owner {
        Owner::from_uid(
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    }

    #[test]
    fn writes_atomically_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("j.json");
        write(&me(), &f, b"one", 0o600).unwrap();
        write(&me(), &f, b"two", 0o600).unwrap();
        assert_eq!(read(&me(), &f).unwrap(), b"two");
        assert!(!dir.path().join(".j.json.tmp").exists());
    }

    #[test]
    fn lists_the_links_of_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/wal/16", dir.path().join("pg_wal")).unwrap();
        std::fs::create_dir(dir.path().join("base")).unwrap();
        std::fs::write(dir.path().join("PG_VERSION"), "16\n").unwrap();
        assert_eq!(
            links(&me(), dir.path()).unwrap(),
            [("pg_wal".to_string(), PathBuf::from("/wal/16"))]
        );
        assert_eq!(links(&me(), &dir.path().join("pg_tblspc")).unwrap(), []);
    }

    #[test]
    fn refuses_a_symlinked_directory() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("work");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        let err = create_owned_dir(&link, &me()).unwrap_err().to_string();
        assert!(err.contains("is a symbolic link"), "{err}");
        create_owned_dir(&dir.path().join("a/b"), &me()).unwrap();
        assert!(dir.path().join("a/b").is_dir());
    }

    #[test]
    fn read_regular_reads_only_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "12345\n").unwrap();
        let text = |p: &Path, f: Follow, limit: u64| {
            read_regular_text(p, f, limit).map_err(|e| (e.kind(), e.to_string()))
        };
        assert_eq!(text(&file, Follow::No, 64), Ok("12345\n".into()));
        let invalid = |what: &str| Err((std::io::ErrorKind::InvalidData, what.to_string()));
        assert_eq!(
            text(&file, Follow::No, 3),
            invalid("it is larger than 3 bytes")
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(
            text(&link, Follow::No, 64),
            invalid("it is a symbolic link, not a regular file")
        );
        assert_eq!(text(&link, Follow::Links, 64), Ok("12345\n".into()));
        // A FIFO with no writer: the open would block forever without O_NONBLOCK.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for follow in [Follow::No, Follow::Links] {
            assert_eq!(
                text(&fifo, follow, 64),
                invalid("it is a FIFO, not a regular file")
            );
        }
        assert_eq!(
            text(dir.path(), Follow::No, 64),
            invalid("it is a directory, not a regular file")
        );
        let missing = text(&dir.path().join("missing"), Follow::No, 64).unwrap_err();
        assert_eq!(missing.0, std::io::ErrorKind::NotFound);
    }
}
