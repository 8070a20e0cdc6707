//! Where each physical standby keeps its data, so that its rebuild procedure names real
//! hosts and paths: `--standby NAME=[HOST:]DIR`, else the primary's own paths on the
//! standby's host. And whether the upgrade pauses before the new primary's first start so
//! that the standbys can be rebuilt with the rsync of PostgreSQL's pg_upgrade documentation.
//!
//! That rsync (`--hard-links --size-only` of the old and new directories together) recreates
//! the primary's layout below the standby's: the standby's old data directory must sit at
//! the same place relative to the directory both of the primary's data directories share
//! (`16` beside `17`, or `16/main` beside `17/main`), and its new one lands there too.

use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Finding;
use crate::exec::process::{Opts, Runner};
use crate::exec::user::Owner;
use crate::inspect::cluster::Tablespace;
use crate::inspect::install::Install;
use crate::inspect::replication::Sender;

use super::replication::{Section, StandbyPolicy, standbys};

/// One `--standby NAME=[HOST:]DIR` as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StandbyArg {
    /// The standby's `application_name`, as `pg_stat_replication` shows it.
    pub(crate) name: String,
    /// Its host; `None` for the primary's own host.
    pub(crate) host: Option<String>,
    /// Its old data directory, absolute.
    pub(crate) dir: PathBuf,
}

impl FromStr for StandbyArg {
    type Err = String;

    fn from_str(s: &str) -> Result<StandbyArg, String> {
        let (name, place) = s
            .split_once('=')
            .filter(|(n, _)| !n.is_empty())
            .ok_or_else(|| format!("{s:?} is not NAME=[HOST:]DIR"))?;
        // An IPv6 address goes in brackets: [2001:db8::5]:/srv/16.
        let split = match place.strip_prefix('[') {
            Some(rest) => rest.split_once("]:"),
            None => place.split_once(':').filter(|(h, _)| !h.contains('/')),
        };
        let (host, dir) = match split {
            Some((h, d)) => (Some(h.to_string()).filter(|h| !h.is_empty()), d),
            None => (None, place),
        };
        let dir = PathBuf::from(dir);
        if !dir.is_absolute() || dir.components().any(|c| c == Component::ParentDir) {
            return Err(format!(
                "{s:?}: the standby's data directory must be an absolute path without '..'"
            ));
        }
        Ok(StandbyArg {
            name: name.to_string(),
            host,
            dir,
        })
    }
}

impl std::fmt::Display for StandbyArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Some(h) if h.contains(':') => write!(f, "{}=[{h}]:{}", self.name, self.dir.display()),
            Some(h) => write!(f, "{}={h}:{}", self.name, self.dir.display()),
            None => write!(f, "{}={}", self.name, self.dir.display()),
        }
    }
}

/// One standby's data, resolved: where its old data directory is and where its new one goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Place {
    pub(crate) name: String,
    /// Its host; `None` when it runs on the primary's host.
    pub(crate) host: Option<String>,
    /// Whether `--standby` gave it (else the primary's paths on the standby's host).
    pub(crate) given: bool,
    pub(crate) old_dir: PathBuf,
    pub(crate) new_dir: PathBuf,
    /// On this host: where the standby keeps what lives outside its data directory, read
    /// from its own links; `None` on another host (the primary's paths there) or unread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) own: Option<OwnPaths>,
}

/// A standby's own locations outside its data directory, from its `pg_wal` and `pg_tblspc`
/// links (a standby on the primary's host has its own: `pg_basebackup --waldir` and
/// `--tablespace-mapping`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OwnPaths {
    /// Where its `pg_wal` points, when it is a link.
    pub(crate) wal: Option<PathBuf>,
    /// Each of the primary's tablespaces the standby has a link for.
    pub(crate) tablespaces: Vec<OwnTablespace>,
    /// When the primary keeps its configuration apart (Debian's `/etc/postgresql`): the
    /// configuration files the standby keeps in its own data directory, which the rsync
    /// from the primary's would delete and a base backup would not bring.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) config: Vec<String>,
}

/// The configuration files a data directory may hold.
const CONFIG_FILES: [&str; 3] = ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"];

/// One tablespace: its OID (kept by pg_upgrade from 15 on, so the new cluster's too), the
/// primary's location and the standby's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OwnTablespace {
    pub(crate) oid: String,
    pub(crate) primary: PathBuf,
    pub(crate) standby: PathBuf,
}

/// Reads, as the owner, the `pg_wal` and `pg_tblspc` links of each standby on this host, so
/// that its rsync procedure names its own WAL directory and tablespaces rather than the
/// primary's, and (when the primary's configuration is apart) which configuration files it
/// keeps in its data directory. A standby whose links cannot be read keeps `own: None` (the procedure then
/// says what to copy instead of copying).
pub(crate) fn read_own_paths(
    section: &mut Section,
    owner: &Owner,
    primary: &[Tablespace],
    config_apart: bool,
) {
    for place in &mut section.standby_places {
        if place.host.is_some() {
            continue;
        }
        let read = crate::exec::ownerfs::links(owner, &place.old_dir).and_then(|top| {
            let spaces = crate::exec::ownerfs::links(owner, &place.old_dir.join("pg_tblspc"))?;
            Ok((top, spaces))
        });
        match read {
            Ok((top, spaces)) => {
                let wal = top.into_iter().find(|(n, _)| n == "pg_wal").map(|(_, t)| t);
                let tablespaces = primary
                    .iter()
                    .filter_map(|t| {
                        let (_, standby) = spaces.iter().find(|(oid, _)| *oid == t.oid)?;
                        Some(OwnTablespace {
                            oid: t.oid.clone(),
                            primary: t.location.clone(),
                            standby: standby.clone(),
                        })
                    })
                    .collect();
                let config = CONFIG_FILES
                    .iter()
                    .filter(|_| config_apart)
                    .filter(|f| crate::exec::ownerfs::read(owner, &place.old_dir.join(f)).is_ok())
                    .map(ToString::to_string)
                    .collect();
                place.own = Some(OwnPaths {
                    wal,
                    tablespaces,
                    config,
                });
            }
            Err(e) => tracing::warn!(
                "cannot read the links of the standby directory {}: {e}",
                place.old_dir.display()
            ),
        }
    }
}

/// The settings the old major has and the new one does not (`vacuum_defer_cleanup_age` and
/// `promote_trigger_file`, gone in 16; `old_snapshot_threshold`, gone in 17): a standby's
/// own `postgresql.auto.conf` re-applied as it is would keep the new standby from starting.
/// Listed by `postgres --describe-config` of the old binaries and not of the new ones, each
/// confirmed unknown by the new `postgres -C` (a name the list leaves out, or an old name
/// still accepted such as 18's `ssl_ecdh_curve`, stays).
pub(crate) fn settings_gone(runner: &Runner, old: &Install, new: &Install) -> Vec<String> {
    let listed = |install: &Install| -> Option<Vec<String>> {
        let out = runner
            .run(
                &install.postgres(),
                &["--describe-config"],
                &Opts {
                    log_name: Some("describe-config"),
                    ..Opts::default()
                },
            )
            .ok()?;
        Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split('\t').next())
                .filter(|n| !n.is_empty())
                .map(str::to_ascii_lowercase)
                .collect(),
        )
    };
    let (Some(had), Some(has)) = (listed(old), listed(new)) else {
        return Vec::new();
    };
    let mut gone: Vec<String> = had
        .into_iter()
        .filter(|n| !has.contains(n) && unknown_to(runner, new, n))
        .collect();
    gone.sort();
    gone.dedup();
    gone
}

/// Whether `postgres -C name` of `install` says it does not know the setting. No file is
/// read: an empty configuration file, and `/` (root's) as the data directory, whose
/// `postgresql.auto.conf` does not exist; `-C` answers before looking at the directory.
fn unknown_to(runner: &Runner, install: &Install, name: &str) -> bool {
    runner
        .run_unchecked(
            &install.postgres(),
            &["--config-file=/dev/null", "-D", "/", "-C", name],
            &Opts {
                log_name: Some("known-setting"),
                ..Opts::default()
            },
        )
        .is_ok_and(|out| {
            !out.status.success()
                && out
                    .stderr()
                    .contains("unrecognized configuration parameter")
        })
}

/// The directory both primary data directories share, and each one's path below it.
pub(crate) fn common_root(old: &Path, new: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut root = PathBuf::new();
    for (a, b) in old.components().zip(new.components()) {
        if a != b {
            break;
        }
        root.push(a);
    }
    // Each side keeps at least its last component (a new directory below the old one is
    // refused elsewhere).
    while old == root || new == root {
        root.pop();
    }
    let rel = |p: &Path| {
        p.strip_prefix(&root)
            .map(Path::to_path_buf)
            .unwrap_or_default()
    };
    (root.clone(), rel(old), rel(new))
}

/// The standby's root (the directory the rsync writes into) for its old data directory, when
/// that ends like the primary's.
pub(crate) fn standby_root(standby_old: &Path, rel_old: &Path) -> Option<PathBuf> {
    let mut root = standby_old.to_path_buf();
    let mut rel = rel_old.to_path_buf();
    while rel.file_name().is_some() {
        if root.file_name() != rel.file_name() {
            return None;
        }
        root.pop();
        rel.pop();
    }
    Some(root)
}

/// Whether the client address is this host: a Unix socket, loopback, or the address of one
/// of this host's interfaces (its paths cannot then be the primary's).
fn on_this_host(s: &Sender, local: &[IpAddr]) -> bool {
    s.client_addr.as_deref().is_none_or(|a| {
        a.parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || local.contains(&ip))
    })
}

/// The addresses of this host's network interfaces.
fn local_addresses() -> Vec<IpAddr> {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    interfaces
        .filter_map(|i| i.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect()
}

/// Resolves each connected standby's place, with the refusals for what cannot be: a
/// `--standby` naming no connected standby, a standby on this host without `--standby` (its
/// directory cannot be the primary's), a directory that does not end like the primary's.
pub(crate) fn resolve(
    section: &mut Section,
    given: &[StandbyArg],
    (old, new): (&Path, &Path),
    findings: &mut Vec<Finding>,
) {
    let connected: Vec<&Sender> = standbys(&section.facts).collect();
    if section.policies.standbys == StandbyPolicy::Refuse || connected.is_empty() {
        return;
    }
    let names: Vec<String> = connected
        .iter()
        .map(|s| format!("'{}'", s.application_name))
        .collect();
    for g in given {
        if !connected.iter().any(|s| s.application_name == g.name) {
            findings.push(Finding::error(
                "standby-unknown",
                format!(
                    "--standby {g} names no standby streaming from the old cluster (connected: {})",
                    names.join(", ")
                ),
                "Give each standby by its application_name as pg_stat_replication shows it (primary_conninfo's application_name, else its cluster_name, else walreceiver)",
            ));
        }
    }
    let (_, rel_old, rel_new) = common_root(old, new);
    let local = local_addresses();
    let mut places = Vec::new();
    for s in connected {
        let arg = given.iter().find(|g| g.name == s.application_name);
        let here = on_this_host(s, &local);
        let place = match arg {
            Some(a) => Place {
                name: s.application_name.clone(),
                host: a.host.clone(),
                given: true,
                old_dir: a.dir.clone(),
                new_dir: PathBuf::new(),
                own: None,
            },
            None if here => {
                findings.push(Finding::error(
                    "standby-dir",
                    format!(
                        "the standby '{}' runs on this host ({}), so its data directory is not the primary's {}, and pgleap cannot tell which it is",
                        s.application_name,
                        s.client_addr.as_deref().unwrap_or("over a Unix socket"),
                        old.display()
                    ),
                    format!(
                        "Pass --standby {}=DIR with the standby's data directory, so that its rebuild procedure names it",
                        s.application_name
                    ),
                ));
                continue;
            }
            None => Place {
                name: s.application_name.clone(),
                host: s.client_addr.clone(),
                given: false,
                old_dir: old.to_path_buf(),
                new_dir: PathBuf::new(),
                own: None,
            },
        };
        let Some(root) = standby_root(&place.old_dir, &rel_old) else {
            findings.push(Finding::error(
                "standby-dir",
                format!(
                    "the standby '{}' keeps its data in {}, which does not end in {} as the primary's {} does: its rebuild recreates the primary's layout below the standby's directory (old and new data directories side by side, as rsync copies them)",
                    place.name,
                    place.old_dir.display(),
                    rel_old.display(),
                    old.display()
                ),
                format!(
                    "Rename the standby's data directory so that it ends in {} (stop it, mv, start it again), then run pgleap again",
                    rel_old.display()
                ),
            ));
            continue;
        };
        places.push(Place {
            new_dir: root.join(&rel_new),
            ..place
        });
    }
    section.standby_places = places;
}

/// Whether the upgrade pauses after pg_upgrade, before the new primary's first start, so
/// that the standbys are rebuilt with rsync: link mode (the standby's files are reused as
/// hard links), `--standbys rebuild-later` and a standby connected.
pub(crate) fn pauses(section: Option<&Section>, link: bool) -> bool {
    section.is_some_and(|r| {
        link && r.policies.standbys == StandbyPolicy::RebuildLater
            && standbys(&r.facts).next().is_some()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_host_and_dir() {
        let a: StandbyArg = "sb1=db2.example.com:/var/lib/postgresql/16/main"
            .parse()
            .unwrap();
        assert_eq!(a.name, "sb1");
        assert_eq!(a.host.as_deref(), Some("db2.example.com"));
        assert_eq!(a.dir, Path::new("/var/lib/postgresql/16/main"));
        let b: StandbyArg = "walreceiver=/srv/standby/16".parse().unwrap();
        assert_eq!(b.host, None);
        assert_eq!(b.to_string(), "walreceiver=/srv/standby/16");
        let c: StandbyArg = "sb2=[2001:db8::5]:/srv/16".parse().unwrap();
        assert_eq!(c.host.as_deref(), Some("2001:db8::5"));
        assert_eq!(c.dir, Path::new("/srv/16"));
        assert_eq!(c.to_string(), "sb2=[2001:db8::5]:/srv/16");
        assert!("walreceiver=relative/16".parse::<StandbyArg>().is_err());
        assert!("=/srv/16".parse::<StandbyArg>().is_err());
        assert!("walreceiver".parse::<StandbyArg>().is_err());
        assert!("w=/srv/../16".parse::<StandbyArg>().is_err());
    }

    #[test]
    fn a_standby_connecting_from_an_address_of_this_host_is_on_this_host() {
        let sender = |addr: Option<&str>| Sender {
            pid: 1,
            user: "postgres".into(),
            application_name: "walreceiver".into(),
            client_addr: addr.map(Into::into),
            state: "streaming".into(),
            slot: None,
            logical: false,
        };
        let local = local_addresses();
        assert!(local.iter().any(IpAddr::is_loopback), "{local:?}");
        for ip in &local {
            assert!(on_this_host(&sender(Some(&ip.to_string())), &local), "{ip}");
        }
        assert!(on_this_host(&sender(None), &local));
        assert!(on_this_host(&sender(Some("127.0.0.2")), &local));
        assert!(!on_this_host(&sender(Some("192.0.2.77")), &local));
    }

    #[test]
    fn the_rsync_root_keeps_the_primarys_layout() {
        let (root, o, n) = common_root(Path::new("/srv/data/16"), Path::new("/srv/data/17"));
        assert_eq!(
            (root.as_path(), o.as_path(), n.as_path()),
            (Path::new("/srv/data"), Path::new("16"), Path::new("17"))
        );
        let (root, o, n) = common_root(
            Path::new("/var/lib/postgresql/16/main"),
            Path::new("/var/lib/postgresql/17/main"),
        );
        assert_eq!(root, Path::new("/var/lib/postgresql"));
        assert_eq!(
            (o.as_path(), n.as_path()),
            (Path::new("16/main"), Path::new("17/main"))
        );
        assert_eq!(
            standby_root(Path::new("/sb/16/main"), &o),
            Some(PathBuf::from("/sb"))
        );
        assert_eq!(standby_root(Path::new("/sb/16/other"), &o), None);
        assert_eq!(standby_root(Path::new("/sb/main"), &o), None);
    }
}
