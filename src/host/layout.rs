//! Where a cluster lives on its host, and where the new one goes.
//!
//! The host layout is detected once, from the flags and what is on disk, and recorded in the
//! plan: a plain data directory holding its own configuration, a postgresql-common (Debian,
//! Ubuntu) cluster whose configuration lives in `/etc/postgresql/N/NAME`, or a PGDG RPM
//! (RHEL) cluster in `/var/lib/pgsql/N/data`. Every host path is resolved under `--root`
//! (default `/`), so tests build these layouts in a temporary directory; paths written inside
//! configuration files are taken as they are, since the server reads them.
//!
//! The new data directory is the versioned sibling of the old one:
//! `/data/15` → `/data/17`, `/var/lib/postgresql/15/main` → `/var/lib/postgresql/17/main`,
//! `/var/lib/pgsql/15/data` → `/var/lib/pgsql/17/data`. When no path component names the old
//! major, there is no safe guess and the user must say.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Finding;
use crate::host::debian::{
    ClusterId, debian_cluster_of_datadir, debian_confdir, debian_id_of_confdir, resolve_debian,
};
use crate::host::root::under;

/// How the host organizes one cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub(crate) enum Layout {
    /// The configuration lives in the data directory.
    #[default]
    Plain,
    /// A postgresql-common cluster: configuration in `confdir` (`/etc/postgresql/N/NAME`),
    /// started by `pg_ctlcluster` or the systemd unit `postgresql@N-NAME`.
    Debian {
        version: u32,
        name: String,
        confdir: PathBuf,
    },
    /// A PGDG RPM cluster: `/var/lib/pgsql/N/data`, binaries in `/usr/pgsql-N/bin`, systemd
    /// unit `postgresql-N`.
    Rhel { version: u32 },
}

impl Layout {
    /// The directory whose `postgresql.conf` the server reads, when it is not the data
    /// directory.
    pub(crate) fn confdir(&self) -> Option<&Path> {
        match self {
            Layout::Debian { confdir, .. } => Some(confdir),
            _ => None,
        }
    }

    /// The same layout for the new major: Debian's configuration goes to
    /// `<root>/etc/postgresql/NEW/NAME`.
    pub(crate) fn for_major(&self, root: &Path, major: u32) -> Layout {
        match self {
            Layout::Plain => Layout::Plain,
            Layout::Debian { name, .. } => Layout::Debian {
                version: major,
                name: name.clone(),
                confdir: debian_confdir(root, major, name),
            },
            Layout::Rhel { .. } => Layout::Rhel { version: major },
        }
    }

    /// Files of the configuration directory that hold no settings but belong to the cluster
    /// (postgresql-common's start mode, pg_ctl options and server environment).
    pub(crate) fn extra_config_files(&self) -> &'static [&'static str] {
        match self {
            Layout::Debian { .. } => &["start.conf", "pg_ctl.conf", "environment"],
            _ => &[],
        }
    }

    /// One line for humans: `Debian cluster 15/main, config in /etc/postgresql/15/main`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Layout::Plain => "plain data directory (configuration inside it)".into(),
            Layout::Debian {
                version,
                name,
                confdir,
            } => format!(
                "Debian cluster {version}/{name}, config in {}",
                confdir.display()
            ),
            Layout::Rhel { version } => {
                format!(
                    "RHEL/PGDG cluster (/var/lib/pgsql/{version}/data, unit postgresql-{version})"
                )
            }
        }
    }
}

/// The old cluster the user named, and its layout: `--cluster 15/main` names a
/// postgresql-common cluster; `--old-datadir` names a data directory (or a postgresql-common
/// configuration directory, as pg_upgrade accepts), whose layout is then recognized.
pub(crate) fn resolve_old(
    root: &Path,
    cluster: Option<&ClusterId>,
    old_datadir: Option<&Path>,
) -> Result<(PathBuf, Layout), Finding> {
    if let Some(id) = cluster {
        return Ok(debian(id, resolve_debian(root, id)?));
    }
    let Some(dir) = old_datadir else {
        return Err(Finding::error(
            "no-old-cluster",
            "no old cluster named",
            "Pass --old-datadir DIR or --cluster VERSION/NAME",
        ));
    };
    // A configuration directory given as the data directory: /etc/postgresql/15/main.
    if !dir.join("PG_VERSION").exists() {
        if let Some(id) = debian_id_of_confdir(root, dir) {
            return Ok(debian(&id, resolve_debian(root, &id)?));
        }
        return Ok((dir.to_path_buf(), Layout::Plain));
    }
    if let Some((id, confdir)) = debian_cluster_of_datadir(root, dir) {
        return Ok(debian(&id, (dir.to_path_buf(), confdir)));
    }
    if let Some(version) = rhel_version_of_datadir(root, dir) {
        return Ok((dir.to_path_buf(), Layout::Rhel { version }));
    }
    Ok((dir.to_path_buf(), Layout::Plain))
}

/// A postgresql-common cluster's data directory and layout.
fn debian(id: &ClusterId, (datadir, confdir): (PathBuf, PathBuf)) -> (PathBuf, Layout) {
    (
        datadir,
        Layout::Debian {
            version: id.version,
            name: id.name.clone(),
            confdir,
        },
    )
}

/// `<root>/var/lib/pgsql/N/data` → N.
fn rhel_version_of_datadir(root: &Path, datadir: &Path) -> Option<u32> {
    let rel = datadir.strip_prefix(under(root, "var/lib/pgsql")).ok()?;
    let parts: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
    match parts.as_slice() {
        [v, "data"] => v.parse().ok(),
        _ => None,
    }
}

/// Replaces the last path component equal to the old major with the new major.
pub(crate) fn versioned_sibling(old: &Path, old_major: u32, new_major: u32) -> Option<PathBuf> {
    let needle = old_major.to_string();
    let comps: Vec<Component<'_>> = old.components().collect();
    let idx = comps
        .iter()
        .rposition(|c| matches!(c, Component::Normal(s) if s.to_str() == Some(needle.as_str())))?;
    let mut out = PathBuf::new();
    for (i, c) in comps.iter().enumerate() {
        if i == idx {
            out.push(new_major.to_string());
        } else {
            out.push(c.as_os_str());
        }
    }
    Some(out)
}

/// Where logs, the journal and scratch files of one upgrade live: beside the new data
/// directory, never inside the old one.
pub(crate) fn work_dir(new_datadir: &Path, old_major: u32, new_major: u32) -> PathBuf {
    let parent = new_datadir.parent().unwrap_or(Path::new("/"));
    let name = new_datadir
        .file_name()
        .map_or_else(|| "data".into(), |n| n.to_string_lossy().into_owned());
    parent.join(format!(".pgleap-{name}-{old_major}-to-{new_major}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data directory (PG_VERSION only) and, for Debian, its configuration directory.
    fn datadir(root: &Path, rel: &str, major: u32) -> PathBuf {
        let d = root.join(rel);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("PG_VERSION"), format!("{major}\n")).unwrap();
        d
    }

    fn debian_conf(root: &Path, id: &str, data: &Path) -> PathBuf {
        let c = root.join("etc/postgresql").join(id);
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(
            c.join("postgresql.conf"),
            format!(
                "data_directory = '{}'\t\t# use data in another directory\nport = 5432\n",
                data.display()
            ),
        )
        .unwrap();
        c
    }

    #[test]
    fn debian_cluster_by_name_reads_its_data_directory() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let data = datadir(r, "srv/pg/15/main", 15);
        let conf = debian_conf(r, "15/main", &data);
        let id: ClusterId = "15/main".parse().unwrap();
        let (d, layout) = resolve_old(r, Some(&id), None).unwrap();
        assert_eq!(d, data);
        assert_eq!(
            layout,
            Layout::Debian {
                version: 15,
                name: "main".into(),
                confdir: conf.clone()
            }
        );
        assert_eq!(layout.confdir(), Some(conf.as_path()));
        // The configuration directory given as --old-datadir, as pg_upgrade accepts it.
        assert_eq!(resolve_old(r, None, Some(&conf)).unwrap(), (data, layout));
    }

    #[test]
    fn debian_layout_is_recognized_from_the_data_directory() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        // Same version and name: /var/lib/postgresql/15/main ↔ /etc/postgresql/15/main.
        let main = datadir(r, "var/lib/postgresql/15/main", 15);
        debian_conf(r, "15/main", &main);
        let (_, layout) = resolve_old(r, None, Some(&main)).unwrap();
        assert!(matches!(layout, Layout::Debian { ref name, .. } if name == "main"));
        // pg_createcluster -d: another name, found by its data_directory.
        let other = datadir(r, "srv/data15", 15);
        debian_conf(r, "15/reports", &other);
        let (_, layout) = resolve_old(r, None, Some(&other)).unwrap();
        assert!(matches!(layout, Layout::Debian { ref name, .. } if name == "reports"));
        // A data directory no cluster names is plain.
        let plain = datadir(r, "data/15", 15);
        assert_eq!(resolve_old(r, None, Some(&plain)).unwrap().1, Layout::Plain);
    }

    #[test]
    fn unknown_debian_cluster_lists_the_ones_found() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let main = datadir(r, "var/lib/postgresql/15/main", 15);
        debian_conf(r, "15/main", &main);
        let id: ClusterId = "15/nope".parse().unwrap();
        let f = resolve_old(r, Some(&id), None).unwrap_err();
        assert_eq!(f.code, "no-such-cluster");
        assert!(
            f.message.starts_with("there is no cluster 15/nope: "),
            "{}",
            f.message
        );
        assert!(f.fix.ends_with("clusters found: 15/main"), "{}", f.fix);
    }

    #[test]
    fn rhel_layout_is_recognized_under_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let d = datadir(r, "var/lib/pgsql/15/data", 15);
        assert_eq!(
            resolve_old(r, None, Some(&d)).unwrap().1,
            Layout::Rhel { version: 15 }
        );
        // Only under the root: the same shape elsewhere is someone else's directory.
        assert_eq!(
            resolve_old(&r.join("var"), None, Some(&d)).unwrap().1,
            Layout::Plain
        );
    }

    #[test]
    fn new_layout_follows_the_old_one() {
        let old = Layout::Debian {
            version: 15,
            name: "main".into(),
            confdir: "/r/etc/postgresql/15/main".into(),
        };
        assert_eq!(
            old.for_major(Path::new("/r"), 17).confdir(),
            Some(Path::new("/r/etc/postgresql/17/main"))
        );
        assert_eq!(
            Layout::Rhel { version: 15 }.for_major(Path::new("/"), 17),
            Layout::Rhel { version: 17 }
        );
        assert_eq!(
            old.describe(),
            "Debian cluster 15/main, config in /r/etc/postgresql/15/main"
        );
    }

    #[test]
    fn maps_common_layouts() {
        let cases = [
            ("/data/15", 15, 17, "/data/17"),
            (
                "/var/lib/postgresql/15/main",
                15,
                17,
                "/var/lib/postgresql/17/main",
            ),
            ("/var/lib/pgsql/14/data", 14, 18, "/var/lib/pgsql/18/data"),
            // The last component naming the major wins.
            ("/srv/15/pg/15/data", 15, 16, "/srv/15/pg/16/data"),
        ];
        for (old, o, n, want) in cases {
            assert_eq!(
                versioned_sibling(Path::new(old), o, n),
                Some(PathBuf::from(want)),
                "{old}"
            );
        }
    }

    #[test]
    fn refuses_to_guess_without_a_version_component() {
        assert_eq!(
            versioned_sibling(Path::new("/var/lib/postgresql/data"), 15, 17),
            None
        );
        // "pg15" is not "15": partial matches would rename unrelated directories.
        assert_eq!(versioned_sibling(Path::new("/srv/pg15"), 15, 17), None);
    }

    #[test]
    fn work_dir_is_a_hidden_sibling() {
        assert_eq!(
            work_dir(Path::new("/var/lib/postgresql/17/main"), 15, 17),
            PathBuf::from("/var/lib/postgresql/17/.pgleap-main-15-to-17")
        );
    }
}
