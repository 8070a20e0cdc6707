//! Whether the new server can listen where its configuration says, checked before the old
//! server stops: a port taken by another program, or a socket lock file left in the way, would
//! otherwise make the new server fail to start inside the downtime window.
//!
//! Invariant: read-only. Binding a TCP port to test it releases it at once; nothing is
//! written.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, ToSocketAddrs as _};
use std::path::PathBuf;

use crate::error::{Finding, Findings, Result};
use crate::exec::ownerfs::{Follow, read_regular_text};
use crate::exec::postmaster::Liveness;
use crate::preflight::facts::Static;

/// The `ports` family: refuses, before the old server stops, a new port (`--port`, else the
/// old one) that another program holds.
pub(crate) fn ports(s: &mut Static<'_>, findings: &mut Findings) -> Result<()> {
    let listen = listen(s, s.port_flag.unwrap_or(s.old_port))?;
    let old_server = match &s.cluster.liveness {
        Liveness::Running(pm) => Old {
            pid: Some(pm.pid),
            live_port: Some(pm.port.unwrap_or(s.old_port)),
        },
        Liveness::Stale { pid } => Old {
            pid: Some(*pid),
            live_port: None,
        },
        Liveness::Stopped => Old::default(),
    };
    findings.extend(check(&listen, old_server));
    Ok(())
}

/// Where the new server will listen on `port`: the old server's socket directories and
/// listen addresses (its command line's, else its configuration's), which it carries.
fn listen(s: &Static<'_>, port: u16) -> Result<Listen> {
    let get = |name: &str| match s.cmdline.value(name) {
        Some(v) => Ok(v),
        None => s.cluster.setting(s.runner, s.old, name),
    };
    Ok(Listen {
        port,
        socket_dirs: split_list(&get("unix_socket_directories")?)
            .into_iter()
            .filter(|d| !d.starts_with('@'))
            .map(|d| s.cluster.datadir.join(d))
            .collect(),
        addresses: split_list(&get("listen_addresses")?),
        owner_uid: s.cluster.owner.uid,
    })
}

/// Where the new server will listen.
#[derive(Debug, Clone)]
pub(crate) struct Listen {
    pub(crate) port: u16,
    /// `unix_socket_directories`, split (abstract `@` names left out).
    pub(crate) socket_dirs: Vec<PathBuf>,
    /// `listen_addresses`, split.
    pub(crate) addresses: Vec<String>,
    /// The uid the server runs as.
    pub(crate) owner_uid: u32,
}

/// Splits a list setting (`'/run/postgresql, /tmp'`) into its entries.
pub(crate) fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|v| v.trim().trim_matches(['"', '\'']).trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// The old cluster's postmaster as `postmaster.pid` names it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Old {
    /// Its pid, running or killed (a zombie waited for later): its lock file is its own.
    pub(crate) pid: Option<i32>,
    /// The port it listens on while it runs, until it stops in the window.
    pub(crate) live_port: Option<u16>,
}

/// Refusals for what stands in the way of `listen`; what the old server holds is not in the
/// way.
pub(crate) fn check(listen: &Listen, old: Old) -> Vec<Finding> {
    let mut out = Vec::new();
    let fix = "Stop the program that holds it, or pass --port with a free port";
    for dir in &listen.socket_dirs {
        let lock = dir.join(format!(".s.PGSQL.{}.lock", listen.port));
        let text = match read_regular_text(&lock, Follow::No, 4096) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                out.push(Finding::error(
                    "socket-lock-not-regular",
                    format!(
                        "{} is not the socket lock file PostgreSQL writes: {e}; the new server would hang or fail creating its socket there",
                        lock.display()
                    ),
                    format!(
                        "Remove {} (PostgreSQL writes a regular file there while it listens on port {}), or pass --port with another port.",
                        lock.display(),
                        listen.port
                    ),
                ));
                continue;
            }
            Err(_) => continue,
        };
        if let Some(pid) = lock_holder(&text, listen.owner_uid).filter(|pid| Some(*pid) != old.pid)
        {
            out.push(Finding::error(
                "port-in-use",
                format!(
                    "port {} is in use: {} names process {pid}{}, so the new server could not create its socket there",
                    listen.port,
                    lock.display(),
                    process_name(pid)
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default()
                ),
                fix,
            ));
        }
    }
    // The old server's own listening sockets are on its port: they go when it stops.
    if old.live_port == Some(listen.port) {
        return out;
    }
    for ip in listen.addresses.iter().flat_map(|a| addresses(a)) {
        let taken = matches!(
            TcpListener::bind((ip, listen.port)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse
        );
        if taken {
            out.push(Finding::error(
                "port-in-use",
                format!(
                    "port {} is in use: another program listens on {ip} port {}",
                    listen.port, listen.port
                ),
                fix,
            ));
        }
    }
    out
}

/// The live process a socket lock file's text names, as PostgreSQL itself judges it: it names a live process the server's user could signal (its own; a process of
/// another user cannot be a server of this owner, so PostgreSQL treats the file as stale).
fn lock_holder(text: &str, owner_uid: u32) -> Option<i32> {
    use std::os::unix::fs::MetadataExt as _;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    // PostgreSQL stores a negative pid for a lock taken by a single-user backend.
    let pid = pid.abs();
    let uid = std::fs::metadata(format!("/proc/{pid}")).ok()?.uid();
    (pid > 0 && uid == owner_uid).then_some(pid)
}

fn process_name(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The IP addresses one `listen_addresses` entry binds.
fn addresses(entry: &str) -> Vec<IpAddr> {
    match entry {
        "*" => vec![
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ],
        e => e.parse::<IpAddr>().map_or_else(
            |_| {
                (e, 0)
                    .to_socket_addrs()
                    .map(|a| a.map(|s| s.ip()).collect())
                    .unwrap_or_default()
            },
            |ip| vec![ip],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_file_of_a_live_process_is_in_the_way() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        std::fs::write(dir.path().join(".s.PGSQL.5999.lock"), format!("{me}\n/x\n")).unwrap();
        let listen = Listen {
            port: 5999,
            socket_dirs: vec![dir.path().to_path_buf()],
            addresses: Vec::new(),
            owner_uid: nix::unistd::geteuid().as_raw(),
        };
        let found = check(&listen, Old::default());
        assert_eq!(found.len(), 1);
        assert!(found[0].message.contains(&format!("names process {me}")));
        // The old server's own lock is not in the way: it goes when the old server stops.
        assert!(
            check(
                &listen,
                Old {
                    pid: Some(i32::try_from(me).unwrap()),
                    live_port: Some(5432)
                }
            )
            .is_empty()
        );
        // Another user's process cannot be this owner's server.
        let other = Listen {
            owner_uid: nix::unistd::geteuid().as_raw() + 1,
            ..listen.clone()
        };
        assert!(check(&other, Old::default()).is_empty());
        // A stale lock (dead pid) is removed by PostgreSQL itself.
        std::fs::write(dir.path().join(".s.PGSQL.5999.lock"), "999999999\n").unwrap();
        assert!(check(&listen, Old::default()).is_empty());
    }

    #[test]
    fn a_listening_tcp_port_is_in_use() {
        let held = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        let listen = Listen {
            port,
            socket_dirs: Vec::new(),
            addresses: vec!["127.0.0.1".into()],
            owner_uid: 0,
        };
        assert_eq!(check(&listen, Old::default()).len(), 1);
        assert!(
            check(
                &listen,
                Old {
                    pid: Some(1),
                    live_port: Some(port)
                }
            )
            .is_empty()
        );
        assert_eq!(
            split_list("'/run/postgresql', /tmp"),
            vec!["/run/postgresql", "/tmp"]
        );
    }
}
