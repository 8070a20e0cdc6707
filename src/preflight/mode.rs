//! The transfer mode: `auto` resolved from the filesystems; an explicit mode checked
//! against the target major and the filesystems it needs.

use std::path::Path;

use crate::error::{Finding, Findings};
use crate::inspect::space;
use crate::plan::Mode;

/// What `auto` chooses from: the filesystems of the old and new data directories.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Filesystems {
    /// Old and new data on one filesystem.
    pub(crate) same: bool,
    /// That filesystem shares extents (reflinks).
    pub(crate) reflink: bool,
    /// Whether the kernel accepts `copy_file_range` from the old data to the new; `None`
    /// when the target's pg_upgrade has no `--copy-file-range` (before 17).
    pub(crate) copy_file_range: Option<bool>,
}

/// `auto`: clone where reflinks exist, else copy-file-range where the target offers it
/// and the kernel accepts it between the two directories, else copy; with the reason.
pub(crate) fn auto_mode(fs: Filesystems) -> (Mode, String) {
    if fs.reflink {
        return (
            Mode::Clone,
            "the filesystem shares extents (reflinks): near-instant, and the old cluster stays usable".into(),
        );
    }
    let no_reflinks = if fs.same {
        "the filesystem has no reflinks"
    } else {
        "old and new data are on different filesystems (no reflinks across them)"
    };
    let keep = "the old cluster stays usable (--mode link is faster but the old cluster cannot start again once the new one has)";
    match fs.copy_file_range {
        Some(true) => (
            Mode::CopyFileRange,
            format!(
                "{no_reflinks}; the kernel copies with copy_file_range, faster than a plain copy; {keep}"
            ),
        ),
        Some(false) => (
            Mode::Copy,
            format!(
                "{no_reflinks} and the kernel refuses copy_file_range between them, so files are copied; {keep}"
            ),
        ),
        None => (
            Mode::Copy,
            format!(
                "{no_reflinks} and pg_upgrade before 17 has no --copy-file-range, so files are copied; {keep}"
            ),
        ),
    }
}

/// Resolves `auto` and checks an explicit mode against the target and filesystems.
pub(crate) fn choose_mode(
    requested: Mode,
    old: &Path,
    new: &Path,
    new_major: u32,
    findings: &mut Findings,
) -> (Mode, String) {
    let same_fs = space::device_of(old) == space::device_of(new);
    let new_parent = space::existing_ancestor(new);
    if requested == Mode::Auto {
        let fs = Filesystems {
            same: same_fs,
            // Reflinks share extents within one filesystem only.
            reflink: same_fs && space::supports_reflink(&new_parent),
            // 17: pg_upgrade --copy-file-range; probed only where it could be chosen.
            copy_file_range: (new_major >= Mode::CopyFileRange.min_target_major())
                .then(|| space::supports_copy_file_range(old, &new_parent)),
        };
        return auto_mode(fs);
    }
    if new_major < requested.min_target_major() {
        findings.push(Finding::error(
            "mode-unsupported",
            format!(
                "--mode {} needs PostgreSQL {} or newer as the target, not {new_major}",
                requested.name(),
                requested.min_target_major()
            ),
            "Choose --mode link, copy or clone",
        ));
    }
    if requested.needs_same_filesystem() && !same_fs {
        findings.push(Finding::error(
            "cross-device",
            format!(
                "--mode {} needs one filesystem, but {} and {} are on different filesystems",
                requested.name(),
                old.display(),
                new.display()
            ),
            format!(
                "Use --mode copy, or pass --new-datadir on the old data directory's filesystem (mounted at {}, while {} is on the one mounted at {})",
                space::mount_point(old).display(),
                new.display(),
                space::mount_point(new).display()
            ),
        ));
    } else if requested == Mode::Clone && !space::supports_reflink(&new_parent) {
        findings.push(Finding::error(
            "no-reflink",
            format!(
                "--mode clone needs reflinks, which the filesystem of {} does not support",
                new_parent.display()
            ),
            "Use --mode link or copy (or put the data on XFS with reflink=1 or Btrfs)",
        ));
    }
    let reason = match requested {
        Mode::Link => {
            "requested: hard links, fast; the old cluster cannot start again once the new one has"
        }
        Mode::Swap => {
            "requested: moves directories, fastest; the old cluster cannot start again once the new one has"
        }
        Mode::Clone => "requested: reflinks, fast; the old cluster stays usable",
        _ => "requested: full copy; the old cluster stays usable",
    };
    (requested, reason.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(same: bool, reflink: bool, copy_file_range: Option<bool>) -> Filesystems {
        Filesystems {
            same,
            reflink,
            copy_file_range,
        }
    }

    #[test]
    fn auto_prefers_clone_then_copy_file_range_then_copy() {
        assert_eq!(auto_mode(fs(true, true, Some(true))).0, Mode::Clone);
        assert_eq!(auto_mode(fs(true, true, None)).0, Mode::Clone);
        assert_eq!(
            auto_mode(fs(true, false, Some(true))).0,
            Mode::CopyFileRange
        );
        assert_eq!(auto_mode(fs(true, false, None)).0, Mode::Copy);
    }

    #[test]
    fn auto_falls_back_to_copy_when_the_kernel_refuses_copy_file_range() {
        // tmpfs to ext4, for example: Linux answers EXDEV, and pg_upgrade --check would
        // refuse --copy-file-range; the plan copies instead, before anything starts.
        let (mode, why) = auto_mode(fs(false, false, Some(false)));
        assert_eq!(mode, Mode::Copy);
        assert!(
            why.starts_with("old and new data are on different filesystems (no reflinks across them) and the kernel refuses copy_file_range between them"),
            "{why}"
        );
    }

    #[test]
    fn auto_says_why_copy_before_17() {
        let (_, why) = auto_mode(fs(true, false, None));
        assert!(
            why.starts_with(
                "the filesystem has no reflinks and pg_upgrade before 17 has no --copy-file-range"
            ),
            "{why}"
        );
    }
}
