//! systemd: the units of a cluster (Debian `postgresql@15-main`, RHEL `postgresql-15`),
//! whether systemd runs, and `systemctl` run as pgleap's own user (it manages the system).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::exec::process::{Opts, Runner};
use crate::host::root::under;
use crate::inspect::install::is_executable;

/// Directories holding systemd unit files, in systemd's order of precedence.
const UNIT_DIRS: [&str; 4] = [
    "etc/systemd/system",
    "run/systemd/system",
    "lib/systemd/system",
    "usr/lib/systemd/system",
];
/// True when a unit file for `unit` is installed under `root` (for `name@instance`, the
/// template `name@.service` counts).
pub(crate) fn unit_file_exists(root: &Path, unit: &str) -> bool {
    let mut files = vec![format!("{unit}.service")];
    if let Some((template, _)) = unit.split_once('@') {
        files.push(format!("{template}@.service"));
    }
    UNIT_DIRS
        .iter()
        .any(|d| files.iter().any(|f| under(root, d).join(f).exists()))
}

pub(crate) fn systemd_running(root: &Path) -> bool {
    root == Path::new("/") && Path::new("/run/systemd/system").is_dir()
}

pub(crate) fn systemctl() -> Option<PathBuf> {
    ["/usr/bin/systemctl", "/bin/systemctl"]
        .iter()
        .map(PathBuf::from)
        .find(|p| is_executable(p))
}

pub(crate) fn systemctl_args(offline_root: Option<&Path>, verb: &str, unit: &str) -> Vec<String> {
    let mut a = Vec::new();
    if let Some(r) = offline_root {
        a.push(format!("--root={}", r.display()));
    }
    a.push(verb.to_string());
    a.push(format!("{unit}.service"));
    a
}

pub(crate) fn unit_enabled(runner: &Runner, offline_root: Option<&Path>, unit: &str) -> bool {
    let Some(sc) = systemctl() else {
        return false;
    };
    runner
        .run_unchecked(
            &sc,
            &systemctl_args(offline_root, "is-enabled", unit),
            &Opts {
                as_invoker: true,
                log_name: Some("systemctl-is-enabled"),
                ..Opts::default()
            },
        )
        .is_ok_and(|o| o.stdout().trim() == "enabled")
}

pub(crate) fn run_systemctl(
    runner: &Runner,
    offline_root: Option<&Path>,
    verb: &str,
    unit: &str,
) -> Result<()> {
    let sc = systemctl().ok_or(Error::SystemctlMissing)?;
    runner.run(
        &sc,
        &systemctl_args(offline_root, verb, unit),
        &Opts {
            as_invoker: true,
            log_name: Some("systemctl"),
            ..Opts::default()
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_files_and_templates_are_found_under_the_root() {
        let root = tempfile::tempdir().unwrap();
        assert!(!unit_file_exists(root.path(), "postgresql@15-main"));
        let dir = root.path().join("lib/systemd/system");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("postgresql@.service"), "").unwrap();
        assert!(unit_file_exists(root.path(), "postgresql@15-main"));
        assert!(!unit_file_exists(root.path(), "postgresql-15"));
        let dir = root.path().join("usr/lib/systemd/system");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("postgresql-15.service"), "").unwrap();
        assert!(unit_file_exists(root.path(), "postgresql-15"));
    }
}
