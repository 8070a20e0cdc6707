//! Starting at boot: what starts the old cluster when the host boots (postgresql-common's
//! start.conf, or enabled systemd units), and switching that to the new cluster after
//! success — reversibly, so rollback restores exactly what was there.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A line pgleap adds to a start.conf it changed, so rollback can undo exactly that.
const START_CONF_MARK: &str = "# pgleap:";

/// What starts the old cluster at boot, and how pgleap switches it off after success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub(crate) enum Boot {
    /// postgresql-common: `start.conf` says `was` (`auto`); after success it says `manual`.
    StartConf { path: PathBuf, was: String },
    /// systemd unit files (RHEL/PGDG): the old unit is enabled; after success it is disabled
    /// and the new one enabled. `offline_root`: systemd is not running, so `systemctl
    /// --root` edits the unit links there.
    Units {
        old: String,
        new: Option<String>,
        new_was_enabled: bool,
        offline_root: Option<PathBuf>,
    },
}

impl Boot {
    /// For the plan: what happens at the end.
    pub(crate) fn describe(&self) -> String {
        match self {
            Boot::StartConf { path, was } => {
                format!("{} says {was}; set to manual after success", path.display())
            }
            Boot::Units { old, new, .. } => format!(
                "{old} is enabled; after success it is disabled{}",
                new.as_ref()
                    .map(|n| format!(" and {n} enabled"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// The first line of a start.conf that is not a comment: `auto`, `manual` or `disabled`.
pub(crate) fn start_mode(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
}

/// start.conf switched to `manual`, with a line saying why; [`restore_start_conf`] undoes it.
pub(crate) fn manual_start_conf(text: &str, why: &str) -> String {
    let mut out = Vec::new();
    let mut done = false;
    for l in text.lines() {
        let t = l.trim();
        if !done && !t.is_empty() && !t.starts_with('#') {
            out.push(format!("{START_CONF_MARK} {why}"));
            out.push("manual".to_string());
            done = true;
        } else {
            out.push(l.to_string());
        }
    }
    if !done {
        out.push(format!("{START_CONF_MARK} {why}"));
        out.push("manual".to_string());
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

/// Undoes [`manual_start_conf`]: drops pgleap's line and puts back the mode `was`.
/// `None` when pgleap did not change the file.
pub(crate) fn restore_start_conf(text: &str, was: &str) -> Option<String> {
    if !text.lines().any(|l| l.starts_with(START_CONF_MARK)) {
        return None;
    }
    let mut out = Vec::new();
    let mut after_mark = false;
    for l in text.lines() {
        if l.starts_with(START_CONF_MARK) {
            after_mark = true;
            continue;
        }
        if after_mark && l.trim() == "manual" {
            out.push(was.to_string());
            after_mark = false;
            continue;
        }
        out.push(l.to_string());
    }
    let mut s = out.join("\n");
    s.push('\n');
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const START_CONF: &str =
        "# Automatic startup configuration\n#   auto: automatically start the cluster\n\nauto\n";

    #[test]
    fn start_conf_goes_manual_and_back_exactly() {
        assert_eq!(start_mode(START_CONF), Some("auto"));
        let manual = manual_start_conf(START_CONF, "upgraded to PostgreSQL 17");
        assert_eq!(start_mode(&manual), Some("manual"));
        assert!(manual.contains("# pgleap: upgraded to PostgreSQL 17\nmanual\n"));
        assert_eq!(
            restore_start_conf(&manual, "auto").as_deref(),
            Some(START_CONF)
        );
        // A file pgleap did not change is left alone.
        assert_eq!(restore_start_conf(START_CONF, "auto"), None);
        assert_eq!(start_mode("# only comments\n"), None);
        assert_eq!(start_mode(&manual_start_conf("", "x")), Some("manual"));
    }
}
