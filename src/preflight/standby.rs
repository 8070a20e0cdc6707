//! Where each physical standby keeps its data, so that its rebuild procedure names real
//! hosts and paths: `--standby NAME=[HOST:]DIR`, else the primary's own paths on the
//! standby's host. And whether the upgrade pauses before the new primary's first start so
//! that the standbys can be rebuilt with the rsync of PostgreSQL's pg_upgrade documentation.
//!
//! That rsync (`--hard-links --size-only` of the old and new directories together) recreates
//! the primary's layout below the standby's: the standby's old data directory must sit at
//! the same place relative to the directory both of the primary's data directories share
//! (`16` beside `17`, or `16/main` beside `17/main`), and its new one lands there too.

use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Finding;
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

/// Whether the client address is this host (a Unix socket, or loopback).
fn on_this_host(s: &Sender) -> bool {
    s.client_addr.as_deref().is_none_or(|a| {
        a.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    })
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
    let mut places = Vec::new();
    for s in connected {
        let arg = given.iter().find(|g| g.name == s.application_name);
        let here = on_this_host(s);
        let place = match arg {
            Some(a) => Place {
                name: s.application_name.clone(),
                host: a.host.clone(),
                given: true,
                old_dir: a.dir.clone(),
                new_dir: PathBuf::new(),
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
