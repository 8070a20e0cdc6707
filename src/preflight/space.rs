//! Free space: what the chosen mode writes on each filesystem against what it has free.

use std::path::Path;

use crate::error::{Finding, Findings};
use crate::inspect::space;
use crate::plan::Mode;
use crate::preflight::facts::Static;

/// The `space` family: what the mode needs on each filesystem, against what is free.
#[expect(
    clippy::unnecessary_wraps,
    reason = "one signature for every static family"
)]
pub(crate) fn space(s: &mut Static<'_>, findings: &mut Findings) -> crate::error::Result<()> {
    s.space = space::needs(s.usage, s.new_datadir, s.tablespaces, s.mode.copies_data());
    let old_datadir = &s.cluster.datadir;
    let cross_device = space::device_of(old_datadir) != space::device_of(s.new_datadir);
    space_findings(&s.space, s.mode, s.new_datadir, cross_device, findings);
    Ok(())
}

/// `cross_device`: the new data directory is on another filesystem than the old one, where
/// link and clone cannot help.
pub(crate) fn space_findings(
    space: &[space::FsNeed],
    mode: Mode,
    new_datadir: &Path,
    cross_device: bool,
    findings: &mut Findings,
) {
    for s in space.iter().filter(|s| !s.enough()) {
        let fix = if !mode.copies_data() {
            "Free space there"
        } else if cross_device && s.path == new_datadir {
            "Free space there, or pass --new-datadir on a filesystem with room (on the old data directory's filesystem, --mode link or clone do not copy relation files)"
        } else {
            "Free space there, or use --mode link or clone (they do not copy relation files)"
        };
        findings.push(Finding::error(
            "no-space",
            format!(
                "not enough free space for --mode {} on the filesystem of {}: needs {}, {} free",
                mode.name(),
                s.path.display(),
                space::human(s.needed),
                space::human(s.free)
            ),
            fix,
        ));
    }
}
