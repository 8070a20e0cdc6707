//! How servers are started and stopped on this host, and how the old cluster is kept from
//! starting at boot once the new one has taken over.
//!
//! Decided once into the plan (`Host`) from facts gathered on the host; the decision itself
//! (`choose`) is a pure function. Order: the user's `--stop-command`/`--start-command` when
//! given (an explicit hook beats anything detected); systemd when it is running
//! (`/run/systemd/system`) and the cluster's unit is installed; Debian's `pg_ctlcluster` for
//! a postgresql-common cluster; else `pg_ctl`. Under `--root` no service manager applies: they
//! manage the real host, not a directory.
//!
//! Invariant: service managers (`systemctl`) and the user's hooks run as pgleap's own user,
//! since they manage the system; every PostgreSQL program, `pg_ctlcluster` included, runs as
//! the cluster owner.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::exec::process::{Opts, Runner};
use crate::host::layout::Layout;
use crate::host::root::under;
use crate::inspect::install::is_executable;

/// Debian's cluster control tool (postgresql-common).
pub(crate) const PG_CTLCLUSTER: &str = "/usr/bin/pg_ctlcluster";
/// Directories holding systemd unit files, in systemd's order of precedence.
const UNIT_DIRS: [&str; 4] = [
    "etc/systemd/system",
    "run/systemd/system",
    "lib/systemd/system",
    "usr/lib/systemd/system",
];
/// A line pgleap adds to a start.conf it changed, so rollback can undo exactly that.
const START_CONF_MARK: &str = "# pgleap:";

/// What starts or stops one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub(crate) enum Manager {
    /// `pg_ctl -D <config dir>`: nothing else manages the server.
    PgCtl,
    /// `systemctl start|stop <unit>`.
    Systemd { unit: String },
    /// `pg_ctlcluster --bindir <bindir> VERSION NAME start|stop`.
    PgCtlCluster { version: u32, name: String },
    /// The user's command, run with `/bin/sh -c`.
    Hook { command: String },
}

/// How one cluster is started and stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Control {
    pub(crate) start: Manager,
    pub(crate) stop: Manager,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            start: Manager::PgCtl,
            stop: Manager::PgCtl,
        }
    }
}

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

/// Everything about the host the steps need: where paths are resolved, how each server is
/// controlled, and what keeps the old cluster from starting at boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Host {
    /// The directory every host path is resolved under (`--root`), `/` normally.
    pub(crate) root: PathBuf,
    pub(crate) old: Control,
    pub(crate) new: Control,
    pub(crate) boot: Option<Boot>,
    /// The hooks as given, so a resumed upgrade plans with them again.
    pub(crate) stop_command: Option<String>,
    pub(crate) start_command: Option<String>,
}

impl Default for Host {
    fn default() -> Self {
        Host {
            root: PathBuf::from("/"),
            old: Control::default(),
            new: Control::default(),
            boot: None,
            stop_command: None,
            start_command: None,
        }
    }
}

/// What the host offers one cluster, gathered by [`facts`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Facts {
    /// `--root` names a directory: no service manager of this host applies to it.
    pub(crate) under_root: bool,
    pub(crate) systemd_running: bool,
    /// The systemd unit that runs this cluster, when its unit file and the binaries it runs
    /// are installed.
    pub(crate) unit: Option<String>,
    /// The postgresql-common cluster (version, name), when `pg_ctlcluster` and the
    /// binaries it expects (`/usr/lib/postgresql/N/bin`: it checks readiness with that psql)
    /// are installed.
    pub(crate) pg_ctlcluster: Option<(u32, String)>,
}

/// Decides what starts or stops a cluster: an explicit hook, else systemd when it runs and
/// has the unit, else `pg_ctlcluster`, else `pg_ctl`.
pub(crate) fn choose(f: &Facts, hook: Option<&str>) -> Manager {
    if let Some(command) = hook {
        return Manager::Hook {
            command: command.to_string(),
        };
    }
    if f.under_root {
        return Manager::PgCtl;
    }
    if let (true, Some(unit)) = (f.systemd_running, &f.unit) {
        return Manager::Systemd { unit: unit.clone() };
    }
    if let Some((version, name)) = &f.pg_ctlcluster {
        return Manager::PgCtlCluster {
            version: *version,
            name: name.clone(),
        };
    }
    Manager::PgCtl
}

/// The systemd unit of a cluster: Debian `postgresql@15-main`, RHEL `postgresql-15`.
pub(crate) fn unit_name(layout: &Layout) -> Option<String> {
    match layout {
        Layout::Plain => None,
        Layout::Debian { version, name, .. } => Some(format!("postgresql@{version}-{name}")),
        Layout::Rhel { version } => Some(format!("postgresql-{version}")),
    }
}

/// The bindir a distribution's unit runs: units take no `--bindir`.
fn unit_bindir(root: &Path, layout: &Layout) -> Option<PathBuf> {
    match layout {
        Layout::Plain => None,
        Layout::Debian { version, .. } => {
            Some(under(root, &format!("usr/lib/postgresql/{version}/bin")))
        }
        Layout::Rhel { version } => Some(under(root, &format!("usr/pgsql-{version}/bin"))),
    }
}

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

/// Gathers what the host offers a cluster of `layout`.
pub(crate) fn facts(root: &Path, layout: &Layout) -> Facts {
    let under_root = root != Path::new("/");
    let installed = || {
        unit_bindir(root, layout)
            .is_some_and(|b| is_executable(&b.join("pg_ctl")) && is_executable(&b.join("psql")))
    };
    let unit = unit_name(layout).filter(|u| unit_file_exists(root, u) && installed());
    let pg_ctlcluster = match layout {
        Layout::Debian { version, name, .. }
            if is_executable(Path::new(PG_CTLCLUSTER)) && installed() =>
        {
            Some((*version, name.clone()))
        }
        _ => None,
    };
    Facts {
        under_root,
        systemd_running: systemd_running(root),
        unit,
        pg_ctlcluster,
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

/// Plans how each cluster is controlled and what keeps the old one from starting at boot.
/// `runner` asks `systemctl is-enabled` (as pgleap's user) for unit-managed clusters.
pub(crate) fn plan_host(
    runner: &Runner,
    root: &Path,
    old: &Layout,
    new: &Layout,
    stop_command: Option<&str>,
    start_command: Option<&str>,
) -> Host {
    let old_facts = facts(root, old);
    let new_facts = facts(root, new);
    Host {
        root: root.to_path_buf(),
        old: Control {
            start: choose(&old_facts, start_command),
            stop: choose(&old_facts, stop_command),
        },
        new: Control {
            start: choose(&new_facts, start_command),
            stop: choose(&new_facts, stop_command),
        },
        boot: plan_boot(runner, root, old, new),
        stop_command: stop_command.map(str::to_string),
        start_command: start_command.map(str::to_string),
    }
}

fn plan_boot(runner: &Runner, root: &Path, old: &Layout, new: &Layout) -> Option<Boot> {
    match old {
        Layout::Debian { confdir, .. } => {
            let path = confdir.join("start.conf");
            let text = std::fs::read_to_string(&path).ok()?;
            (start_mode(&text) == Some("auto")).then(|| Boot::StartConf {
                path,
                was: "auto".into(),
            })
        }
        Layout::Rhel { .. } => {
            let old_unit = unit_name(old)?;
            if !unit_file_exists(root, &old_unit) || systemctl().is_none() {
                return None;
            }
            let offline_root = (!systemd_running(root)).then(|| root.to_path_buf());
            let enabled = |u: &str| unit_enabled(runner, offline_root.as_deref(), u);
            if !enabled(&old_unit) {
                return None;
            }
            let new_unit = unit_name(new).filter(|u| unit_file_exists(root, u));
            Some(Boot::Units {
                new_was_enabled: new_unit.as_deref().is_some_and(enabled),
                old: old_unit,
                new: new_unit,
                offline_root,
            })
        }
        Layout::Plain => None,
    }
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
    let sc = systemctl().ok_or_else(|| Error::Other("systemctl is not installed".into()))?;
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

impl Manager {
    /// What runs, for the plan: `systemctl stop postgresql@15-main`.
    pub(crate) fn describe(&self, action: &str) -> String {
        match self {
            Manager::PgCtl => format!("pg_ctl {action}"),
            Manager::Systemd { unit } => format!("systemctl {action} {unit}"),
            Manager::PgCtlCluster { version, name } => {
                format!("pg_ctlcluster {version} {name} {action}")
            }
            Manager::Hook { command } => format!("--{action}-command {command:?}"),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn debian() -> Facts {
        Facts {
            under_root: false,
            systemd_running: true,
            unit: Some("postgresql@15-main".into()),
            pg_ctlcluster: Some((15, "main".into())),
        }
    }

    #[test]
    fn systemd_only_when_running_and_the_unit_exists() {
        assert_eq!(
            choose(&debian(), None),
            Manager::Systemd {
                unit: "postgresql@15-main".into()
            }
        );
        // A container: the unit file is installed but systemd is not running.
        let f = Facts {
            systemd_running: false,
            ..debian()
        };
        assert_eq!(
            choose(&f, None),
            Manager::PgCtlCluster {
                version: 15,
                name: "main".into()
            }
        );
        // systemd runs, but no unit (or not the binaries it would run).
        let f = Facts {
            unit: None,
            ..debian()
        };
        assert!(matches!(choose(&f, None), Manager::PgCtlCluster { .. }));
        let f = Facts {
            unit: None,
            pg_ctlcluster: None,
            ..debian()
        };
        assert_eq!(choose(&f, None), Manager::PgCtl);
    }

    #[test]
    fn hooks_win_and_root_disables_service_managers() {
        assert_eq!(
            choose(&debian(), Some("sv stop pg")),
            Manager::Hook {
                command: "sv stop pg".into()
            }
        );
        let f = Facts {
            under_root: true,
            ..debian()
        };
        assert_eq!(choose(&f, None), Manager::PgCtl);
        assert!(matches!(choose(&f, Some("x")), Manager::Hook { .. }));
        assert_eq!(choose(&Facts::default(), None), Manager::PgCtl);
    }

    #[test]
    fn unit_names_follow_the_distributions() {
        let d = Layout::Debian {
            version: 15,
            name: "main".into(),
            confdir: "/etc/postgresql/15/main".into(),
        };
        assert_eq!(unit_name(&d).as_deref(), Some("postgresql@15-main"));
        assert_eq!(
            unit_name(&Layout::Rhel { version: 17 }).as_deref(),
            Some("postgresql-17")
        );
        assert_eq!(unit_name(&Layout::Plain), None);
    }

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

    #[test]
    fn facts_under_a_root_never_name_systemd() {
        let root = tempfile::tempdir().unwrap();
        let f = facts(root.path(), &Layout::Rhel { version: 15 });
        assert!(f.under_root);
        assert!(!f.systemd_running);
        assert_eq!(f.unit, None, "no unit file, no pg_ctl under the root");
    }

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
