//! The transfer mode: `auto` resolved from the filesystems; an explicit mode checked
//! against the target major and the filesystems it needs.

use std::path::Path;

use crate::error::{Finding, Findings};
use crate::inspect::space;
use crate::plan::Mode;
use crate::preflight::facts::Static;

/// The `mode` family: decides the mode and refuses one this host cannot do.
#[expect(
    clippy::unnecessary_wraps,
    reason = "one signature for every static family"
)]
pub(crate) fn mode(s: &mut Static<'_>, findings: &mut Findings) -> crate::error::Result<()> {
    (s.mode, s.mode_reason) = choose_mode(
        s.requested_mode,
        &s.cluster.datadir,
        s.new_datadir,
        s.new.major,
        findings,
    );
    Ok(())
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
        if !same_fs {
            return (
                Mode::Copy,
                "old and new data are on different filesystems, so files are copied".into(),
            );
        }
        if space::supports_reflink(&new_parent) {
            return (Mode::Clone, "the filesystem shares extents (reflinks): near-instant, and the old cluster stays usable".into());
        }
        return (
            Mode::Copy,
            "the filesystem has no reflinks; copying keeps the old cluster usable (--mode link is faster but the old cluster cannot start again once the new one has)".into(),
        );
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
