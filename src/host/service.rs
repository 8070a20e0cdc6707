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

use crate::exec::process::Runner;
use crate::host::boot::Boot;
use crate::host::layout::Layout;
use crate::host::systemd::{systemd_running, unit_file_exists};
use crate::inspect::install::is_executable;

/// Debian's cluster control tool (postgresql-common).
pub(crate) const PG_CTLCLUSTER: &str = "/usr/bin/pg_ctlcluster";
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

/// Gathers what the host offers a cluster of `layout`.
pub(crate) fn facts(root: &Path, layout: &Layout) -> Facts {
    let under_root = root != Path::new("/");
    let installed = || {
        layout
            .unit_bindir(root)
            .is_some_and(|b| is_executable(&b.join("pg_ctl")) && is_executable(&b.join("psql")))
    };
    let unit = layout
        .unit_name()
        .filter(|u| unit_file_exists(root, u) && installed());
    let pg_ctlcluster = layout
        .pg_ctlcluster()
        .filter(|_| is_executable(Path::new(PG_CTLCLUSTER)) && installed());
    Facts {
        under_root,
        systemd_running: systemd_running(root),
        unit,
        pg_ctlcluster,
    }
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
        boot: old.plan_boot(runner, root, &**new),
        stop_command: stop_command.map(str::to_string),
        start_command: start_command.map(str::to_string),
    }
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
    fn facts_under_a_root_never_name_systemd() {
        let root = tempfile::tempdir().unwrap();
        let f = facts(
            root.path(),
            &Layout::Rhel(crate::host::rhel::Rhel { version: 15 }),
        );
        assert!(f.under_root);
        assert!(!f.systemd_running);
        assert_eq!(f.unit, None, "no unit file, no pg_ctl under the root");
    }
}
