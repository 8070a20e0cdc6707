//! postgresql-common (Debian, Ubuntu) clusters: named `VERSION/NAME`, configured in
//! `/etc/postgresql/N/NAME`, their data directory named by `data_directory` there.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::parse::parse_line;
use crate::error::Finding;
use crate::exec::process::Runner;
use crate::host::boot::{Boot, start_mode};
use crate::host::host_layout::{HostLayout, PackagedStart};
use crate::host::root::under;

/// A postgresql-common cluster: configuration in `confdir` (`/etc/postgresql/N/NAME`),
/// started by `pg_ctlcluster` or the systemd unit `postgresql@N-NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Debian {
    pub(crate) version: u32,
    pub(crate) name: String,
    pub(crate) confdir: PathBuf,
}

impl Debian {
    pub(crate) fn new(id: &ClusterId, confdir: PathBuf) -> Debian {
        Debian {
            version: id.version,
            name: id.name.clone(),
            confdir,
        }
    }
}

impl HostLayout for Debian {
    /// The cluster whose `data_directory` is `datadir` (see [`debian_cluster_of_datadir`]).
    fn recognize(root: &Path, datadir: &Path) -> Option<Debian> {
        debian_cluster_of_datadir(root, datadir).map(|(id, confdir)| Debian::new(&id, confdir))
    }

    fn describe(&self) -> String {
        format!(
            "Debian cluster {}/{}, config in {}",
            self.version,
            self.name,
            self.confdir.display()
        )
    }

    /// The configuration goes to `<root>/etc/postgresql/NEW/NAME`.
    fn for_new(&self, root: &Path, major: u32, _new_datadir: &Path) -> Option<Debian> {
        Some(Debian {
            version: major,
            name: self.name.clone(),
            confdir: debian_confdir(root, major, &self.name),
        })
    }

    fn confdir(&self) -> Option<&Path> {
        Some(&self.confdir)
    }

    fn extra_config_files(&self) -> &'static [&'static str] {
        &["start.conf", "pg_ctl.conf", "environment"]
    }

    fn named_major(&self) -> Option<(u32, String)> {
        Some((
            self.version,
            format!(
                "cluster {}/{} ({})",
                self.version,
                self.name,
                self.confdir.display()
            ),
        ))
    }

    fn settings_major(&self) -> Option<u32> {
        Some(self.version)
    }

    fn unit_name(&self) -> Option<String> {
        Some(format!("postgresql@{}-{}", self.version, self.name))
    }

    fn unit_bindir(&self, root: &Path) -> Option<PathBuf> {
        Some(under(
            root,
            &format!("usr/lib/postgresql/{}/bin", self.version),
        ))
    }

    fn pg_ctlcluster(&self) -> Option<(u32, String)> {
        Some((self.version, self.name.clone()))
    }

    fn packaged_start(&self, root: &Path) -> Option<PackagedStart> {
        let (version, name) = (self.version, &self.name);
        Some(PackagedStart {
            bindir: self.unit_bindir(root)?,
            starter: format!("postgresql-common starts cluster {version}/{name}"),
            package: format!("postgresql-{version}"),
            tools: format!("pg_ctlcluster and postgresql@{version}-{name}"),
        })
    }

    /// start.conf set to manual, when it says auto.
    fn plan_boot(&self, _runner: &Runner, _root: &Path, _new: &dyn HostLayout) -> Option<Boot> {
        let path = self.confdir.join("start.conf");
        let text = read_untrusted(&path)?;
        (start_mode(&text) == Some("auto")).then(|| Boot::StartConf {
            path,
            was: "auto".into(),
        })
    }
}

/// A postgresql-common cluster name as `pg_lsclusters` prints it: `15/main`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClusterId {
    pub(crate) version: u32,
    pub(crate) name: String,
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.version, self.name)
    }
}

impl std::str::FromStr for ClusterId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not VERSION/NAME, for example 15/main");
        let (v, name) = s.split_once('/').ok_or_else(bad)?;
        let version: u32 = v.parse().map_err(|_| bad())?;
        // postgresql-common allows names that are one path component.
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(bad());
        }
        Ok(ClusterId {
            version,
            name: name.to_string(),
        })
    }
}

pub(crate) fn debian_confdir(root: &Path, major: u32, name: &str) -> PathBuf {
    under(root, "etc/postgresql")
        .join(major.to_string())
        .join(name)
}

/// The value of the last definition of `name` in a configuration file (includes are not
/// followed: postgresql-common writes `data_directory` in postgresql.conf itself).
pub(crate) fn conf_value(conf: &Path, name: &str) -> Option<String> {
    let text = read_untrusted(conf)?;
    text.lines()
        .filter_map(parse_line)
        .rfind(|s| s.name == name)
        .map(|s| s.value)
}

/// Where a postgresql-common cluster keeps its data: `data_directory` in its postgresql.conf
/// (relative values are relative to the configuration directory), else the default
/// `<root>/var/lib/postgresql/N/NAME`.
fn debian_datadir(root: &Path, confdir: &Path, version: u32, name: &str) -> PathBuf {
    match conf_value(&confdir.join("postgresql.conf"), "data_directory") {
        Some(d) if !d.is_empty() => confdir.join(d),
        _ => under(root, "var/lib/postgresql")
            .join(version.to_string())
            .join(name),
    }
}

/// The postgresql-common clusters under `root`, as `15/main`.
pub(crate) fn debian_clusters(root: &Path) -> Vec<ClusterId> {
    let mut out = Vec::new();
    let Ok(versions) = std::fs::read_dir(under(root, "etc/postgresql")) else {
        return out;
    };
    for v in versions.filter_map(Result::ok) {
        let Some(version) = v.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(names) = std::fs::read_dir(v.path()) else {
            continue;
        };
        for n in names.filter_map(Result::ok) {
            if n.path().join("postgresql.conf").is_file() {
                out.push(ClusterId {
                    version,
                    name: n.file_name().to_string_lossy().into_owned(),
                });
            }
        }
    }
    out.sort_by(|a, b| (a.version, &a.name).cmp(&(b.version, &b.name)));
    out
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

pub(crate) fn resolve_debian(root: &Path, id: &ClusterId) -> Result<(PathBuf, PathBuf), Finding> {
    let confdir = debian_confdir(root, id.version, &id.name);
    let conf = confdir.join("postgresql.conf");
    if !conf.is_file() {
        let found = debian_clusters(root);
        let fix = if found.is_empty() {
            format!(
                "No postgresql-common clusters were found in {}; pass --old-datadir with the data directory instead",
                under(root, "etc/postgresql").display()
            )
        } else {
            format!(
                "Pass --cluster with one of the clusters found: {}",
                found
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        return Err(Finding::error(
            "no-such-cluster",
            format!(
                "there is no cluster {id}: {} does not exist",
                conf.display()
            ),
            fix,
        ));
    }
    let datadir = debian_datadir(root, &confdir, id.version, &id.name);
    Ok((datadir, confdir))
}

/// `<root>/etc/postgresql/N/NAME` → `N/NAME`, when it holds a postgresql.conf.
pub(crate) fn debian_id_of_confdir(root: &Path, dir: &Path) -> Option<ClusterId> {
    let base = under(root, "etc/postgresql");
    let rel = dir.strip_prefix(&base).ok()?;
    let parts: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
    let [v, name] = parts.as_slice() else {
        return None;
    };
    dir.join("postgresql.conf").is_file().then_some(())?;
    Some(ClusterId {
        version: v.parse().ok()?,
        name: (*name).to_string(),
    })
}

/// The postgresql-common cluster whose `data_directory` is `datadir`: first the cluster of
/// the same version and name (`/var/lib/postgresql/15/main` → `/etc/postgresql/15/main`),
/// else any cluster of that version pointing there (`pg_createcluster -d /srv/...`).
pub(crate) fn debian_cluster_of_datadir(
    root: &Path,
    datadir: &Path,
) -> Option<(ClusterId, PathBuf)> {
    let version = crate::inspect::cluster::pg_version_of(datadir)?;
    let mut candidates: Vec<ClusterId> = Vec::new();
    if let Some(name) = datadir.file_name().and_then(|n| n.to_str()) {
        candidates.push(ClusterId {
            version,
            name: name.to_string(),
        });
    }
    candidates.extend(
        debian_clusters(root)
            .into_iter()
            .filter(|c| c.version == version),
    );
    candidates.into_iter().find_map(|id| {
        let confdir = debian_confdir(root, id.version, &id.name);
        let names_it = confdir.join("postgresql.conf").is_file()
            && same_dir(
                &debian_datadir(root, &confdir, id.version, &id.name),
                datadir,
            );
        names_it.then_some((id, confdir))
    })
}

/// A file of a cluster's configuration or data directory, which its owner can write: read
/// only when it is a regular file, without following a link or blocking on a FIFO.
fn read_untrusted(path: &Path) -> Option<String> {
    use crate::exec::ownerfs::{Follow, READ_LIMIT, read_regular_text};
    read_regular_text(path, Follow::No, READ_LIMIT).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_postgresql_common() {
        let id: ClusterId = "15/main".parse().unwrap();
        let d = Debian::new(&id, "/etc/postgresql/15/main".into());
        assert_eq!(d.unit_name().as_deref(), Some("postgresql@15-main"));
        assert_eq!(d.pg_ctlcluster(), Some((15, "main".to_string())));
        assert_eq!(
            d.unit_bindir(Path::new("/")),
            Some(PathBuf::from("/usr/lib/postgresql/15/bin"))
        );
    }

    #[test]
    fn cluster_ids_parse_like_pg_lsclusters() {
        let id: ClusterId = "15/main".parse().unwrap();
        assert_eq!((id.version, id.name.as_str()), (15, "main"));
        assert_eq!(id.to_string(), "15/main");
        for bad in ["15", "main", "15/", "x/main", "15/a/b", "15/.hidden"] {
            assert!(bad.parse::<ClusterId>().is_err(), "{bad}");
        }
    }
}
