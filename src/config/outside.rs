//! Settings files outside the old data and configuration directories (shared with other
//! clusters, or the administrator's own): read to check them, never carried or edited. A
//! setting the new major does not know or rejects there would stop the new server from
//! starting, so it is refused with the file, line and fix.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::config::parse::{is_directive, parse_line};
use crate::error::{Error, Finding, Result};

/// A settings file outside, and its lines.
pub(crate) fn read_outside(path: &Path) -> Result<(PathBuf, Vec<String>)> {
    use crate::exec::ownerfs::{Follow, READ_LIMIT, read_regular_text};
    // An administrator's file outside may be a link; a FIFO there must not hang pgleap.
    let text = read_regular_text(path, Follow::Links, READ_LIMIT)
        .map_err(|e| Error::io("cannot read", path, e))?;
    Ok((path.to_path_buf(), text.lines().map(String::from).collect()))
}

/// The last line (1-based) of the files outside that sets `name`: the one in effect.
pub(crate) fn find_outside<'a>(
    outside: &'a [(PathBuf, Vec<String>)],
    name: &str,
) -> Option<(&'a Path, usize)> {
    outside.iter().rev().find_map(|(path, lines)| {
        lines
            .iter()
            .rposition(|l| parse_line(l).is_some_and(|s| s.name == name))
            .map(|i| (path.as_path(), i + 1))
    })
}

/// Refuses the settings of the files outside that the new major does not know.
pub(crate) fn refuse_unknown_outside(
    outside: &[(PathBuf, Vec<String>)],
    valid: &BTreeSet<String>,
    major: u32,
) -> Result<()> {
    let mut findings = Vec::new();
    for (path, lines) in outside {
        for (i, line) in lines.iter().enumerate() {
            let Some(s) = parse_line(line) else { continue };
            if !s.name.contains('.') && !is_directive(&s.name) && !valid.contains(&s.name) {
                findings.push(outside_finding(
                    &format!("PostgreSQL {major} has no setting {}", s.name),
                    path,
                    i + 1,
                ));
            }
        }
    }
    if findings.is_empty() {
        Ok(())
    } else {
        Err(Error::Refused { findings })
    }
}

fn outside_finding(what: &str, path: &Path, line: usize) -> Finding {
    Finding::error(
        "config-setting-outside",
        format!(
            "{what}, set in {} line {line}, outside the data directory: pgleap neither carries nor edits that file, and the new server would read it as it is",
            path.display()
        ),
        format!(
            "Comment out line {line} of {} or remove the setting (the old server then uses its default), or move the file into the data directory, then run pgleap again",
            path.display()
        ),
    )
}

/// [`outside_finding`] for a value the new server rejected, quoting its message.
pub(crate) fn outside_refusal(what: &str, path: &Path, line: usize, stderr: &str) -> Error {
    let mut f = outside_finding(what, path, line);
    if let Some(l) = stderr
        .lines()
        .find(|l| l.contains(path.to_string_lossy().as_ref()))
    {
        f.message = format!("{} (the server says: {})", f.message, l.trim());
    }
    f.into()
}
