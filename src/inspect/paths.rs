//! Paths as the kernel resolves them: symlinks, `.` and `..` followed, so that two names of
//! one directory are seen as one.
//!
//! Invariant: every check that two directories must not overlap (old and new data, WAL,
//! tablespaces) compares these canonical forms, never the names as typed.

use std::path::{Component, Path, PathBuf};

/// `path` with each existing prefix resolved (symlinks, `.`, `..`) and the part that does not
/// exist yet appended as written, `.` and `..` applied to it.
pub(crate) fn canonical(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::from("/");
    let mut exists = true;
    for c in abs.components() {
        match c {
            Component::RootDir | Component::Prefix(_) | Component::CurDir => {}
            // `out` is already resolved, so its parent is the real `..`.
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => {
                out.push(name);
                if exists {
                    match std::fs::canonicalize(&out) {
                        Ok(real) => out = real,
                        Err(_) => exists = false,
                    }
                }
            }
        }
    }
    out
}

/// True when one of `a` and `b` is the other or lies inside it, once both are resolved.
pub(crate) fn overlap(a: &Path, b: &Path) -> bool {
    let (a, b) = (canonical(a), canonical(b));
    a.starts_with(&b) || b.starts_with(&a)
}

/// True when `inner` is `outer` or lies inside it, once both are resolved.
pub(crate) fn inside(inner: &Path, outer: &Path) -> bool {
    canonical(inner).starts_with(canonical(outer))
}

/// A path as given, made absolute; with `.` or `..` in it, resolved (so that `/data/15/../17`
/// is the sibling `/data/17` it names, not a directory below `/data/15`).
pub(crate) fn normalized(path: &Path) -> PathBuf {
    let dotted = path
        .components()
        .any(|c| matches!(c, Component::CurDir | Component::ParentDir));
    if dotted {
        canonical(path)
    } else {
        std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
    }
}

/// Where a symlink such as `pg_wal` points, resolved; `None` when `path` is no symlink.
pub(crate) fn symlink_target(path: &Path) -> Option<PathBuf> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    meta.file_type().is_symlink().then(|| canonical(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_symlinks_and_dots_of_existing_prefixes() {
        let root = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(root.path()).unwrap();
        let old = root.join("data/16");
        std::fs::create_dir_all(&old).unwrap();
        std::os::unix::fs::symlink(&old, root.join("link")).unwrap();
        // Through a symlink into the old directory: inside it.
        assert_eq!(canonical(&root.join("link/17")), old.join("17"));
        assert!(overlap(&root.join("link/17"), &old));
        // A sibling spelled through the old directory: not inside it.
        let sibling = old.join("../17");
        assert_eq!(canonical(&sibling), root.join("data/17"));
        assert!(!overlap(&sibling, &old));
        assert_eq!(normalized(&sibling), root.join("data/17"));
        // Missing parts keep their `..` semantics.
        assert_eq!(canonical(&root.join("x/y/../z")), root.join("x/z"));
        assert!(inside(&old.join("base"), &root.join("link")));
        assert_eq!(symlink_target(&root.join("link")), Some(old.clone()));
        assert_eq!(symlink_target(&old), None);
    }
}
