//! What `postmaster.pid` says about a server, and whether its process is alive.
//!
//! Read by the inspection of a cluster and by the code that starts, stops and waits for
//! servers; reads `/proc` and the pid file, never writes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};

/// What `postmaster.pid` says about a live server.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Postmaster {
    pub(crate) pid: i32,
    pub(crate) port: Option<u16>,
    pub(crate) socket_dir: Option<PathBuf>,
}

/// Liveness of the server that `postmaster.pid` names.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub(crate) enum Liveness {
    /// No `postmaster.pid`.
    Stopped,
    /// `postmaster.pid` names a live postgres process.
    Running(Postmaster),
    /// `postmaster.pid` exists but its process is gone (or a zombie): a crash or kill.
    Stale { pid: i32 },
}

/// What stands at `postmaster.pid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PidFile {
    /// Nothing (or nothing root can read).
    Absent,
    /// A regular file and its text.
    Text(String),
    /// Something PostgreSQL never writes there: a link, a FIFO, a directory, a huge file.
    /// The data directory is the owner's, so this was planted; PostgreSQL itself would
    /// block on a FIFO there, and following a link would read another cluster's file.
    NotRegular(String),
}

/// The most a real `postmaster.pid` holds (eight short lines), with room to spare.
const PID_FILE_LIMIT: u64 = 4096;

/// Reads `postmaster.pid` without following a link or blocking on a FIFO: the one reader of
/// the file, for root and the owner alike.
pub(crate) fn pid_file(datadir: &Path) -> PidFile {
    use crate::exec::ownerfs::{Follow, read_regular_text};
    match read_regular_text(&datadir.join("postmaster.pid"), Follow::No, PID_FILE_LIMIT) {
        Ok(text) => PidFile::Text(text),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => PidFile::NotRegular(e.to_string()),
        Err(_) => PidFile::Absent,
    }
}

/// Reads `postmaster.pid` and decides whether its process is a live server. A pid file that
/// is not a regular file names no live server: it counts as stale, and the inspection of the
/// cluster refuses it.
pub(crate) fn liveness(datadir: &Path) -> Liveness {
    let text = match pid_file(datadir) {
        PidFile::Absent => return Liveness::Stopped,
        PidFile::NotRegular(_) => return Liveness::Stale { pid: 0 },
        PidFile::Text(text) => text,
    };
    let lines: Vec<&str> = text.lines().collect();
    let Some(pid) = lines.first().and_then(|l| l.trim().parse::<i32>().ok()) else {
        return Liveness::Stale { pid: 0 };
    };
    if !process_alive(pid) {
        return Liveness::Stale { pid };
    }
    Liveness::Running(Postmaster {
        pid,
        port: lines.get(3).and_then(|l| l.trim().parse().ok()),
        socket_dir: lines
            .get(4)
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .map(PathBuf::from),
    })
}

/// True when `pid` is a live, non-zombie postgres process. A killed postmaster can linger as
/// a zombie until reaped, and a stale pid may have been reused by an unrelated program.
pub(crate) fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself hold spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z" | "X" | "x")) {
        return false;
    }
    let comm = stat
        .split_once('(')
        .and_then(|(_, r)| r.rsplit_once(')'))
        .map_or("", |(c, _)| c);
    // The postmaster's comm is "postgres" (or "postmaster" on old builds).
    comm.starts_with("postgres") || comm.starts_with("postmaster")
}

/// Waits up to `timeout` until `pid` is no longer a zombie. A killed postmaster stays a
/// zombie until its parent reaps it, and PostgreSQL will not start while the pid named in
/// `postmaster.pid` exists. True when it is gone (or was never a zombie).
pub(crate) fn wait_reaped(pid: i32, timeout: Duration) -> bool {
    wait_until(timeout, || !is_zombie(pid))
}

fn is_zombie(pid: i32) -> bool {
    pid > 0
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                == Some("Z")
        })
}

/// True when `postmaster.pid` says the server listens on no TCP address (its
/// `listen_addresses` is empty), so only clients that can reach its Unix socket get in.
pub(crate) fn tcp_closed(datadir: &Path) -> bool {
    match pid_file(datadir) {
        PidFile::Text(text) => text.lines().nth(5).is_some_and(|l| l.trim().is_empty()),
        PidFile::Absent | PidFile::NotRegular(_) => false,
    }
}

/// True when a live postmaster serves `datadir`.
pub(crate) fn running(datadir: &Path) -> bool {
    matches!(liveness(datadir), Liveness::Running(_))
}

/// Polls `done` until it holds or `timeout` passes; true when it held.
pub(crate) fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if done() {
            return true;
        }
        if started.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the server is gone: `grace` for its shutdown to begin, then as long as its
/// `postmaster.pid` says `stopping` (a checkpoint can take a while), up to an hour.
pub(crate) fn wait_stopped(datadir: &Path, grace: Duration) -> bool {
    let started = Instant::now();
    loop {
        if !running(datadir) {
            return true;
        }
        let stopping = pid_status(datadir).as_deref() == Some("stopping");
        let limit = if stopping {
            Duration::from_secs(3600)
        } else {
            grace
        };
        if started.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The status word of a live server's `postmaster.pid` (line 8): `starting`, `ready`,
/// `standby` or `stopping`.
pub(crate) fn pid_status(datadir: &Path) -> Option<String> {
    let PidFile::Text(text) = pid_file(datadir) else {
        return None;
    };
    text.lines().nth(7).map(|l| l.trim().to_string())
}

/// Waits until a server started by a service manager or hook accepts connections: its
/// postmaster appears within a minute and reports `ready` (or `standby`) within an hour
/// (crash recovery can take long), the same patience as `pg_ctl start -t 3600`.
pub(crate) fn wait_ready(datadir: &Path, how: &str) -> Result<()> {
    if !wait_until(Duration::from_secs(60), || running(datadir)) {
        return Err(Error::ServerDidNotStart {
            how: how.to_string(),
            datadir: datadir.to_path_buf(),
        });
    }
    let ready = wait_until(Duration::from_secs(3600), || {
        !running(datadir) || matches!(pid_status(datadir).as_deref(), Some("ready" | "standby"))
    });
    if ready && running(datadir) {
        Ok(())
    } else {
        Err(Error::ServerStoppedStarting {
            how: how.to_string(),
            datadir: datadir.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_not_a_postmaster() {
        // This test process is alive but is not postgres: a reused pid must not count.
        assert!(!process_alive(i32::try_from(std::process::id()).unwrap()));
        assert!(!process_alive(0));
    }

    #[test]
    fn a_live_process_is_no_zombie() {
        assert!(!is_zombie(i32::try_from(std::process::id()).unwrap()));
        assert!(wait_reaped(0, std::time::Duration::ZERO));
    }

    #[test]
    fn stale_pid_file_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("postmaster.pid"),
            "999999999\n/x\n1\n5432\n/tmp\n",
        )
        .unwrap();
        assert_eq!(liveness(dir.path()), Liveness::Stale { pid: 999_999_999 });
    }
}
