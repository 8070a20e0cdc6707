//! Starting and stopping servers with `pg_ctl`, fenced when pgleap is the only client.
//!
//! A fenced server listens on no TCP address and only on a private 0700 socket directory,
//! with a private pg_hba.conf that trusts local connections there: no client can write
//! while pgleap works, and pgleap can always get in.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::exec::process::{Opts, Owner, Runner};

/// A private socket directory plus the pg_hba.conf used with it; removed on drop.
#[derive(Debug)]
pub(crate) struct Fence {
    dir: tempfile::TempDir,
}

impl Fence {
    pub(crate) fn new(owner: &Owner) -> Result<Fence> {
        // Short path: Unix socket paths are limited to about 100 bytes.
        let dir = tempfile::Builder::new()
            .prefix("pgleap-")
            .tempdir_in("/tmp")
            .map_err(|e| Error::io("cannot create a private socket directory", "/tmp", e))?;
        // Its pg_hba.conf says trust: only the owner may reach the socket.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("cannot chmod", dir.path(), e))?;
        let hba = dir.path().join("pg_hba.conf");
        std::fs::write(
            &hba,
            "# pgleap: fenced server, private socket only\nlocal all all trust\n",
        )
        .map_err(|e| Error::io("cannot write", &hba, e))?;
        for p in [dir.path(), hba.as_path()] {
            chown(p, owner)?;
        }
        Ok(Fence { dir })
    }

    pub(crate) fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Server options that fence it: `-o` for pg_ctl, `-o`/`-O` for pg_upgrade. No logical
    /// replication worker starts either: a fenced server (a stopped subscriber started to
    /// read its catalog, a new cluster before it is handed over) must not consume or apply
    /// changes from a publisher.
    pub(crate) fn server_options(&self, port: u16) -> String {
        format!(
            "{} -c hba_file='{}'",
            self.socket_options(port),
            self.dir.path().join("pg_hba.conf").display()
        )
    }

    /// The part of [`Fence::server_options`] that fences the server by its socket alone: no
    /// TCP, only the private socket directory, no logical replication worker; the server's
    /// own `pg_hba.conf` still applies.
    fn socket_options(&self, port: u16) -> String {
        format!(
            "-p {port} -c listen_addresses='' -c unix_socket_permissions=0700 -c unix_socket_directories='{}' -c max_logical_replication_workers=0",
            self.dir.path().display()
        )
    }
}

/// True for a socket directory made by [`Fence::new`].
pub(crate) fn is_fence_dir(dir: &Path) -> bool {
    dir.parent() == Some(Path::new("/tmp"))
        && dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("pgleap-"))
}

pub(crate) fn chown(path: &Path, owner: &Owner) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    nix::unistd::chown(path, Some(owner.uid.into()), Some(owner.gid.into()))
        .map_err(|e| Error::io("cannot change owner of", path, e.into()))
}

/// Starts a server and waits until it accepts connections. `fence` = None starts it with
/// its own configuration (the new cluster going live).
pub(crate) fn start(
    runner: &Runner,
    bindir: &Path,
    datadir: &Path,
    fence: Option<(&Fence, u16)>,
    logfile: &Path,
) -> Result<()> {
    let options = fence.map(|(f, port)| f.server_options(port));
    start_with(runner, bindir, datadir, options, logfile)
}

/// Starts, fenced, a fresh cluster whose WAL nobody needs (the new installation probed before
/// the window), with archiving off as well: its first WAL segments are named like the old
/// cluster's first ones, and the carried `archive_command` would write them into the old
/// cluster's archive.
pub(crate) fn start_scratch(
    runner: &Runner,
    bindir: &Path,
    datadir: &Path,
    (fence, port): (&Fence, u16),
    logfile: &Path,
) -> Result<()> {
    let options = format!("{} -c archive_mode=off", fence.server_options(port));
    start_with(runner, bindir, datadir, Some(options), logfile)
}

/// Starts a new cluster with its own configuration files as they will serve (its
/// `pg_hba.conf`, `pg_ident.conf`, SSL files, preloaded libraries), fenced by its socket
/// alone: no TCP, a private 0700 socket directory only the owner can reach, no archiving, no
/// logical replication worker, its log on stderr. A start that succeeds proves the server
/// loads those files; the caller stops it.
pub(crate) fn start_with_own_files(
    runner: &Runner,
    bindir: &Path,
    datadir: &Path,
    (fence, port): (&Fence, u16),
    logfile: &Path,
) -> Result<()> {
    let options = format!(
        "{} -c archive_mode=off -c logging_collector=off",
        fence.socket_options(port)
    );
    start_with(runner, bindir, datadir, Some(options), logfile)
}

/// Starts a server with the command-line options it last ran with (`postmaster.opts`, the
/// old server in a rollback), and waits until it accepts connections.
pub(crate) fn start_as_ran(
    runner: &Runner,
    bindir: &Path,
    datadir: &Path,
    options: &[String],
    logfile: &Path,
) -> Result<()> {
    let options = (!options.is_empty()).then(|| shell_words::join(options));
    start_with(runner, bindir, datadir, options, logfile)
}

/// `pg_ctl start`, with `options` for the server (pg_ctl hands them to a shell).
fn start_with(
    runner: &Runner,
    bindir: &Path,
    datadir: &Path,
    options: Option<String>,
    logfile: &Path,
) -> Result<()> {
    let mut args: Vec<String> = vec![
        "start".into(),
        "-D".into(),
        datadir.display().to_string(),
        "-w".into(),
        "-t".into(),
        "3600".into(),
        "-l".into(),
        logfile.display().to_string(),
    ];
    if let Some(o) = options {
        args.push("-o".into());
        args.push(o);
    }
    runner
        .run(
            &bindir.join("pg_ctl"),
            &args,
            &Opts {
                log_name: Some("pg_ctl-start"),
                ..Opts::default()
            },
        )
        .map_err(|e| with_server_log(e, logfile))?;
    Ok(())
}

/// Makes a running server read its configuration files again (`pg_ctl reload`, as the owner).
pub(crate) fn reload(runner: &Runner, bindir: &Path, datadir: &Path) -> Result<()> {
    let opts = Opts {
        log_name: Some("pg_ctl-reload"),
        ..Opts::default()
    };
    runner.run(
        &bindir.join("pg_ctl"),
        &["reload", "-D", &datadir.display().to_string()],
        &opts,
    )?;
    Ok(())
}

/// Fast shutdown, waiting until the postmaster is gone.
pub(crate) fn stop(runner: &Runner, bindir: &Path, datadir: &Path) -> Result<()> {
    stop_with(runner, &bindir.join("pg_ctl"), datadir)
}

fn stop_with(runner: &Runner, pg_ctl: &Path, datadir: &Path) -> Result<()> {
    let args = [
        "stop",
        "-D",
        &datadir.display().to_string(),
        "-m",
        "fast",
        "-w",
        "-t",
        "3600",
    ];
    let opts = Opts {
        log_name: Some("pg_ctl-stop"),
        ..Opts::default()
    };
    runner.run(pg_ctl, &args, &opts)?;
    Ok(())
}

/// Appends the server log's last lines to a pg_ctl failure: pg_ctl itself only says
/// "could not start server".
fn with_server_log(e: Error, logfile: &Path) -> Error {
    match e {
        Error::Command {
            program,
            command,
            status,
            stderr_tail,
            log,
        } => {
            use crate::exec::ownerfs::{Follow, READ_LIMIT, read_regular_text};
            let tail = read_regular_text(logfile, Follow::No, READ_LIMIT)
                .map(|t| crate::exec::process::last_lines(&t, 10))
                .unwrap_or_default();
            Error::Command {
                program,
                command,
                status,
                stderr_tail: format!("{stderr_tail}\n{tail}"),
                log: log.or_else(|| Some(logfile.to_path_buf())),
            }
        }
        other => other,
    }
}

/// A port nobody listens on, near `preferred`, for fenced servers. Fenced servers use a
/// private socket directory, so the port only needs to differ from the live old server's.
pub(crate) fn spare_port(preferred: u16, avoid: u16) -> u16 {
    let mut p = preferred;
    while p == avoid {
        p = if p >= 65000 { 50432 } else { p + 1 };
    }
    p
}

/// The log file of a server started by pgleap.
pub(crate) fn logfile(log_dir: &Path, name: &str) -> PathBuf {
    log_dir.join(format!("server-{name}.log"))
}

/// Stops whatever server runs on `datadir`, with the `pg_ctl` beside the running
/// postmaster's own binary (found through /proc): for cleanup paths that may not know
/// which installation started it. Best effort.
pub(crate) fn stop_any(datadir: &Path, owner: &Owner, fenced_only: bool) {
    let crate::exec::postmaster::Liveness::Running(pm) = crate::exec::postmaster::liveness(datadir)
    else {
        return;
    };
    // A server on a pgleap fence's socket directory was started by pgleap or its pg_upgrade;
    // any other was started by someone else and is not ours to stop.
    if fenced_only && !pm.socket_dir.as_ref().is_some_and(|d| is_fence_dir(d)) {
        return;
    }
    let Ok(exe) = std::fs::read_link(format!("/proc/{}/exe", pm.pid)) else {
        return;
    };
    let Some(bindir) = exe.parent() else { return };
    let runner = Runner::new(owner.clone(), None);
    if let Err(e) = stop_with(&runner, &bindir.join("pg_ctl"), datadir) {
        tracing::warn!("could not stop the server on {}: {e}", datadir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_directory_is_private() {
        let me = nix::unistd::geteuid().as_raw();
        let owner = Owner::from_uid(me, nix::unistd::getegid().as_raw());
        let fence = Fence::new(&owner).unwrap();
        let mode = std::fs::metadata(fence.socket_dir())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
