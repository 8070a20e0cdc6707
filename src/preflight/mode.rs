//! The transfer mode: `auto` resolved from the filesystems; an explicit mode checked
//! against the target major and the filesystems it needs.

use std::path::Path;

use crate::error::{Error, Finding, Findings};
use crate::inspect::space;
use crate::plan::{Mode, Plan};
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

/// What pg_upgrade 17+ prints when its check cannot `copy_file_range` the old cluster's
/// `PG_VERSION` into the new data directory (`check_copy_file_range`).
const COPY_FILE_RANGE_REFUSED: &str =
    "could not copy file range between old and new data directories";

/// When `auto` chose copy-file-range and `pg_upgrade --check` refused it (`e`), pg_upgrade's
/// own line saying why; `None` for any other refusal, and for an explicit
/// `--mode copy-file-range`, which is never changed behind the user's back.
pub(crate) fn copy_file_range_refused(plan: &Plan, e: &Error) -> Option<String> {
    may_fall_back(plan.mode_auto, plan.mode, plan.mode_fallback.is_some())
        .then(|| copy_file_range_refusal(e))
        .flatten()
}

/// Only `auto`'s own choice of copy-file-range falls back, and only once.
fn may_fall_back(auto: bool, mode: Mode, fell_back: bool) -> bool {
    auto && mode == Mode::CopyFileRange && !fell_back
}

/// pg_upgrade's line refusing `copy_file_range`, in a refused check's findings.
fn copy_file_range_refusal(e: &Error) -> Option<String> {
    let Error::Refused { findings } = e else {
        return None;
    };
    findings
        .iter()
        .flat_map(|f| f.message.lines())
        .find(|l| l.contains(COPY_FILE_RANGE_REFUSED))
        .map(|l| l.trim().to_string())
}

/// `auto` falls back from copy-file-range to copy, before the window, because pg_upgrade's
/// check refused copy-file-range (`refusal`, its words): the plan says so and why.
pub(crate) fn fall_back_to_copy(plan: &mut Plan, refusal: &str) {
    plan.mode = Mode::Copy;
    plan.mode_reason = format!(
        "pg_upgrade --check refused --copy-file-range ({refusal}), so files are copied; the old cluster stays usable"
    );
    plan.mode_fallback = Some(refusal.to_string());
    // The plan's estimate (reference machine) describes the copy that will run.
    plan.downtime_inputs = plan.downtime_inputs.copied_with(Mode::Copy);
    let e = crate::plan::estimate::estimate(&plan.downtime_inputs, None);
    plan.estimated_downtime_secs = e.whole_seconds();
    plan.downtime_basis = e.basis;
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

    #[test]
    fn only_autos_copy_file_range_falls_back_once() {
        assert!(may_fall_back(true, Mode::CopyFileRange, false));
        assert!(!may_fall_back(false, Mode::CopyFileRange, false));
        assert!(!may_fall_back(true, Mode::CopyFileRange, true));
        assert!(!may_fall_back(true, Mode::Copy, false));
        assert!(!may_fall_back(true, Mode::Clone, false));
    }

    #[test]
    fn finds_pg_upgrades_copy_file_range_refusal() {
        // As pg_upgrade 17 prints it and the check step quotes it.
        let refused = Error::Refused {
            findings: vec![Finding::error(
                "pg-upgrade-check",
                "pg_upgrade --check failed:\n    Checking for new cluster tablespace directories               ok\n    could not copy file range between old and new data directories: Invalid cross-device link",
                "Fix what it reports",
            )],
        };
        assert_eq!(
            copy_file_range_refusal(&refused).as_deref(),
            Some(
                "could not copy file range between old and new data directories: Invalid cross-device link"
            )
        );
        let other = Error::Refused {
            findings: vec![Finding::error(
                "pg-upgrade-check",
                "pg_upgrade --check failed:\n    Checking for prepared transactions\n    The source cluster contains prepared transactions",
                "Fix what it reports",
            )],
        };
        assert_eq!(copy_file_range_refusal(&other), None);
        assert_eq!(copy_file_range_refusal(&Error::SuperuserUnknown), None);
    }

    #[test]
    fn the_fallback_to_copy_re_estimates_for_copy() {
        let side = |major: u32| {
            serde_json::json!({
                "datadir": format!("/srv/{major}"), "bindir": format!("/usr/lib/{major}/bin"),
                "major": major, "version": format!("{major}.1"), "port": 5432,
            })
        };
        let inputs = crate::plan::estimate::Inputs::new(
            Mode::CopyFileRange,
            vec![0, 0, 40],
            2,
            500 * 1024 * 1024,
        );
        let before = crate::plan::estimate::estimate(&inputs, None);
        let mut plan: Plan = serde_json::from_value(serde_json::json!({
            "old": side(16), "new": side(17), "mode": "copy-file-range", "mode_reason": "",
            "mode_auto": true, "jobs": 2,
            "owner": {"uid": 101, "gid": 101, "name": "postgres", "home": "/srv"},
            "work_dir": "/srv/.pgleap", "old_running": true, "old_state": "",
            "tablespaces": [], "initdb": null, "space": [], "relation_bytes": 0,
            "estimated_downtime_secs": before.whole_seconds(), "downtime_inputs": inputs,
            "downtime_basis": before.basis, "analyze": true, "leave_stopped": false,
            "steps": [],
        }))
        .unwrap();
        assert!(plan.downtime_basis.contains("with --copy-file-range"));
        fall_back_to_copy(&mut plan, "could not copy file range");
        assert_eq!(plan.mode, Mode::Copy);
        assert_eq!(plan.downtime_inputs.copy_mode, Some(Mode::Copy));
        assert!(
            plan.downtime_basis
                .contains(" + 500 MiB copied with --copy at 200 MiB/s"),
            "{}",
            plan.downtime_basis
        );
        assert!(!plan.downtime_basis.contains("copy-file-range"));
        // Falling back from one copying mode to the other moves the same bytes.
        assert_eq!(plan.estimated_downtime_secs, before.whole_seconds());
    }
}
