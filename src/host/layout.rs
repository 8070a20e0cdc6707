//! Where a cluster lives on its host, and where the new one goes.
//!
//! The host layout is detected once, from the flags and what is on disk, and recorded in the
//! plan: a plain data directory holding its own configuration (`plain.rs`), a
//! postgresql-common (Debian, Ubuntu) cluster whose configuration lives in
//! `/etc/postgresql/N/NAME` (`debian.rs`), or a PGDG RPM (RHEL) cluster in
//! `/var/lib/pgsql/N/data` (`rhel.rs`). Each implements `host_layout::HostLayout`; the
//! `layouts!` line below registers them, in the order they are recognized. Every host path is resolved under `--root`
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
use crate::host::boot::Boot;
use crate::host::debian::{ClusterId, Debian, debian_id_of_confdir, resolve_debian};
use crate::host::host_layout::HostLayout;
use crate::host::plain::Plain;
use crate::host::rhel::Rhel;

/// Declares [`Layout`], the host layouts in the order they are recognized (the last one
/// recognizes every data directory).
macro_rules! layouts {
    ($($variant:ident($ty:ty)),+ $(,)?) => {
        /// How the host organizes one cluster, as the plan and journal record it
        /// (`{"kind": "debian", ...}`); it derefs to its [`HostLayout`].
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(tag = "kind", rename_all = "kebab-case")]
        pub(crate) enum Layout {
            $($variant($ty)),+
        }

        impl std::ops::Deref for Layout {
            type Target = dyn HostLayout;

            fn deref(&self) -> &Self::Target {
                match self {
                    $(Layout::$variant(l) => l),+
                }
            }
        }

        impl Layout {
            /// The layout of the data directory `datadir` under `root`.
            fn recognize(root: &Path, datadir: &Path) -> Layout {
                $(if let Some(l) = <$ty>::recognize(root, datadir) {
                    return Layout::$variant(l);
                })+
                Layout::default()
            }

            /// The same layout for the new major and data directory (plain where the host
            /// would not run a cluster there).
            pub(crate) fn for_new(&self, root: &Path, major: u32, new_datadir: &Path) -> Layout {
                match self {
                    $(Layout::$variant(l) => l
                        .for_new(root, major, new_datadir)
                        .map_or_else(Layout::default, Layout::$variant)),+
                }
            }
        }
    };
}

layouts! {
    Debian(Debian),
    Rhel(Rhel),
    Plain(Plain),
}

impl Default for Layout {
    fn default() -> Layout {
        Layout::Plain(Plain {})
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
        return Ok((dir.to_path_buf(), Layout::default()));
    }
    Ok((dir.to_path_buf(), Layout::recognize(root, dir)))
}

/// A postgresql-common cluster's data directory and layout.
fn debian(id: &ClusterId, (datadir, confdir): (PathBuf, PathBuf)) -> (PathBuf, Layout) {
    (datadir, Layout::Debian(Debian::new(id, confdir)))
}

/// True when a journaled `boot` names this cluster's own start.conf or units (a journal is
/// the owner's to edit; boot settings are changed by root).
pub(crate) fn boot_belongs(boot: &Boot, root: &Path, old: &Layout, new: &Layout) -> bool {
    match boot {
        Boot::StartConf { path, .. } => {
            old.confdir().map(|c| c.join("start.conf")).as_ref() == Some(path)
        }
        Boot::Units {
            old: o,
            new: n,
            offline_root,
            ..
        } => {
            old.unit_name().as_ref() == Some(o)
                && n.as_ref()
                    .is_none_or(|n| new.unit_name().as_ref() == Some(n))
                && offline_root.as_ref().is_none_or(|r| r == root)
        }
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
            Layout::Debian(Debian {
                version: 15,
                name: "main".into(),
                confdir: conf.clone()
            })
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
        assert!(matches!(layout, Layout::Debian(ref d) if d.name == "main"));
        // pg_createcluster -d: another name, found by its data_directory.
        let other = datadir(r, "srv/data15", 15);
        debian_conf(r, "15/reports", &other);
        let (_, layout) = resolve_old(r, None, Some(&other)).unwrap();
        assert!(matches!(layout, Layout::Debian(ref d) if d.name == "reports"));
        // A data directory no cluster names is plain.
        let plain = datadir(r, "data/15", 15);
        assert_eq!(
            resolve_old(r, None, Some(&plain)).unwrap().1,
            Layout::default()
        );
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
            Layout::Rhel(Rhel { version: 15 })
        );
        // Only under the root: the same shape elsewhere is someone else's directory.
        assert_eq!(
            resolve_old(&r.join("var"), None, Some(&d)).unwrap().1,
            Layout::default()
        );
    }

    #[test]
    fn new_layout_follows_the_old_one() {
        let old = Layout::Debian(Debian {
            version: 15,
            name: "main".into(),
            confdir: "/r/etc/postgresql/15/main".into(),
        });
        let new = Path::new("/r/var/lib/postgresql/17/main");
        assert_eq!(
            old.for_new(Path::new("/r"), 17, new).confdir(),
            Some(Path::new("/r/etc/postgresql/17/main"))
        );
        let rhel = Layout::Rhel(Rhel { version: 15 });
        assert_eq!(
            rhel.for_new(Path::new("/"), 17, Path::new("/var/lib/pgsql/17/data")),
            Layout::Rhel(Rhel { version: 17 })
        );
        // A RHEL unit starts only the default data directory: elsewhere, the new one is plain.
        assert_eq!(
            rhel.for_new(Path::new("/"), 17, Path::new("/srv/17/data")),
            Layout::default()
        );
        assert_eq!(
            old.describe(),
            "Debian cluster 15/main, config in /r/etc/postgresql/15/main"
        );
    }

    #[test]
    fn the_journal_keeps_its_layout_records() {
        for (layout, json) in [
            (Layout::default(), r#"{"kind":"plain"}"#),
            (
                Layout::Rhel(Rhel { version: 15 }),
                r#"{"kind":"rhel","version":15}"#,
            ),
            (
                Layout::Debian(Debian {
                    version: 15,
                    name: "main".into(),
                    confdir: "/etc/postgresql/15/main".into(),
                }),
                r#"{"kind":"debian","version":15,"name":"main","confdir":"/etc/postgresql/15/main"}"#,
            ),
        ] {
            assert_eq!(serde_json::to_string(&layout).unwrap(), json);
            assert_eq!(serde_json::from_str::<Layout>(json).unwrap(), layout);
        }
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
