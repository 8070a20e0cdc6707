//! Finding an upgrade's journal again from what the user names: the old data directory,
//! and the new one when it is not the default versioned sibling.

use std::path::Path;

use crate::error::Result;
use crate::host::layout;
use crate::state::journal::{FILE, Journal};

/// Finds the journal of an upgrade of `old_datadir`: in the work directory beside
/// `new_datadir` when given, else beside each versioned sibling of the old data directory.
pub(crate) fn locate(old_datadir: &Path, new_datadir: Option<&Path>) -> Result<Option<Journal>> {
    let mut candidates = Vec::new();
    let old_major = crate::inspect::cluster::pg_version_of(old_datadir);
    match (new_datadir, old_major) {
        (Some(new), Some(old)) => {
            for m in old + 1..=old + 20 {
                candidates.push(layout::work_dir(new, old, m));
            }
        }
        (Some(new), None) => {
            // The old directory is gone (finalized): any work directory for this target.
            let name = new
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            if let Ok(rd) = std::fs::read_dir(new.parent().unwrap_or(Path::new("/"))) {
                for e in rd.filter_map(std::result::Result::ok) {
                    if e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!(".pgleap-{name}-"))
                    {
                        candidates.push(e.path());
                    }
                }
            }
        }
        (None, Some(old)) => {
            for m in old + 1..=old + 20 {
                if let Some(sib) = layout::versioned_sibling(old_datadir, old, m) {
                    candidates.push(layout::work_dir(&sib, old, m));
                }
            }
        }
        (None, None) => {
            // The old directory is gone (finalized) and no new one named: try the versioned
            // siblings for every pair of majors.
            for old in 10..30 {
                for new in old + 1..=30 {
                    if let Some(sib) = layout::versioned_sibling(old_datadir, old, new) {
                        candidates.push(layout::work_dir(&sib, old, new));
                    }
                }
            }
        }
    }
    for c in candidates {
        // A candidate this user may not read is not theirs to resume: the preflight then
        // refuses with the real reason (wrong user, unreadable directory).
        if std::fs::metadata(c.join(FILE))
            .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
        {
            continue;
        }
        if let Some(j) = Journal::load(&c)? {
            if j.record.plan.old.datadir == old_datadir
                || (old_major.is_none() && new_datadir.is_some())
            {
                return Ok(Some(j));
            }
        }
    }
    Ok(None)
}
