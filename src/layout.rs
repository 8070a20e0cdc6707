//! Where the new data directory goes: the versioned sibling of the old one.
//!
//! `/data/15` → `/data/17`, `/var/lib/postgresql/15/main` → `/var/lib/postgresql/17/main`,
//! `/var/lib/pgsql/15/data` → `/var/lib/pgsql/17/data`. When no path component names the old
//! major, there is no safe guess and the user must say.

use std::path::{Component, Path, PathBuf};

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
