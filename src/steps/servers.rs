//! Starting and stopping the plan's servers the way the host runs them (pg_ctl, systemd,
//! pg_ctlcluster or the user's hooks), and keeping the old cluster from starting at boot.
//! What to use was decided into the plan by `host::service`; this carries it out.

use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::exec::postmaster;
use crate::exec::process::Opts;
use crate::exec::server;
use crate::host::boot::{self, Boot};
use crate::host::service::{self, Control, Manager};
use crate::host::systemd;
use crate::inspect::install::Install;
use crate::plan::Side;
use crate::plan::prepare::Prepared;

/// Which cluster of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    Old,
    New,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Old => "old",
            Which::New => "new",
        }
    }
}

fn side(p: &Prepared, which: Which) -> (&Side, &Install, &Control) {
    match which {
        Which::Old => (&p.plan.old, &p.old, &p.plan.host.old),
        Which::New => (&p.plan.new, &p.new, &p.plan.host.new),
    }
}

/// Stops a running server through what manages it; returns what was done (`None`: it was not
/// running). A server a service manager did not start (started by hand) is then stopped with
/// `pg_ctl`.
pub(crate) fn stop(p: &Prepared, which: Which) -> Result<Option<String>> {
    let (s, install, control) = side(p, which);
    if !postmaster::running(&s.datadir) {
        return Ok(None);
    }
    let how = control.stop.describe("stop");
    match &control.stop {
        Manager::PgCtl => {
            server::stop(&p.runner, &install.bindir, &s.datadir)?;
            return Ok(Some(how));
        }
        m => run_manager(p, which, m, "stop")?,
    }
    // systemctl and pg_ctlcluster return once the server is down; a hook may only ask
    // (runit's `sv down`), so it gets a minute to begin the shutdown.
    let hook = matches!(control.stop, Manager::Hook { .. });
    let grace = Duration::from_secs(if hook { 60 } else { 2 });
    if postmaster::wait_stopped(&s.datadir, grace) {
        return Ok(Some(how));
    }
    if hook {
        return Err(Error::StopCommandIneffective {
            side: which.name(),
            datadir: s.datadir.clone(),
        });
    }
    // Started by hand, not by the service manager: it did not stop it.
    server::stop(&p.runner, &install.bindir, &s.datadir)?;
    Ok(Some(format!(
        "{how} left it running (it was not started by it); stopped with pg_ctl"
    )))
}

/// Starts a server with its own configuration through what manages it, and waits until it
/// accepts connections. `logfile` is used by `pg_ctl`; the others log where they log.
pub(crate) fn start(p: &Prepared, which: Which, logfile: &Path) -> Result<String> {
    let (s, install, control) = side(p, which);
    let how = control.start.describe("start");
    match &control.start {
        Manager::PgCtl => {
            // The old server comes back as it ran, command-line options included.
            server::start_as_ran(
                &p.runner,
                &install.bindir,
                &s.conf_dir(),
                &s.options,
                logfile,
            )?;
            return Ok(how);
        }
        m => run_manager(p, which, m, "start")?,
    }
    postmaster::wait_ready(&s.datadir, &how)?;
    Ok(how)
}

fn run_manager(p: &Prepared, which: Which, m: &Manager, action: &str) -> Result<()> {
    let (s, install, _) = side(p, which);
    match m {
        Manager::PgCtl => unreachable!("pg_ctl is run by the callers"),
        Manager::Systemd { unit } => {
            systemd::run_systemctl(&p.runner, None, action, unit)?;
        }
        Manager::PgCtlCluster { version, name } => {
            let mut args = vec!["--bindir".to_string(), install.bindir.display().to_string()];
            if action == "stop" {
                args.extend(["-m".to_string(), "fast".to_string()]);
            }
            args.extend([version.to_string(), name.clone(), action.to_string()]);
            p.runner.run_detached(
                Path::new(service::PG_CTLCLUSTER),
                &args,
                &Opts {
                    log_name: Some("pg_ctlcluster"),
                    ..Opts::default()
                },
            )?;
        }
        Manager::Hook { command } => {
            let env = vec![
                ("PGLEAP_HOOK_ACTION", action.to_string()),
                ("PGLEAP_HOOK_SIDE", which.name().to_string()),
                ("PGLEAP_HOOK_MAJOR", s.major.to_string()),
                ("PGLEAP_HOOK_DATADIR", s.datadir.display().to_string()),
                ("PGLEAP_HOOK_CONFDIR", s.conf_dir().display().to_string()),
                ("PGLEAP_HOOK_BINDIR", install.bindir.display().to_string()),
                ("PGLEAP_HOOK_PORT", s.port.to_string()),
                ("PGLEAP_HOOK_OWNER", p.runner.owner().name.clone()),
                ("PGDATA", s.conf_dir().display().to_string()),
                ("PGPORT", s.port.to_string()),
            ];
            p.runner.run_detached(
                Path::new("/bin/sh"),
                &["-c", command.as_str()],
                &Opts {
                    as_invoker: true,
                    env,
                    log_name: Some(if action == "stop" {
                        "hook-stop"
                    } else {
                        "hook-start"
                    }),
                    ..Opts::default()
                },
            )?;
        }
    }
    Ok(())
}

/// After success: keeps the old cluster from starting at boot beside the new one. Returns
/// what was done.
pub(crate) fn disable_old_at_boot(p: &Prepared) -> Result<Option<String>> {
    let Some(boot) = &p.plan.host.boot else {
        return Ok(None);
    };
    match boot {
        Boot::StartConf { path, .. } => {
            let text = read_start_conf(p, path)?;
            if boot::start_mode(&text) == Some("manual") {
                return Ok(None);
            }
            let why = format!(
                "upgraded to PostgreSQL {} at {}; pgleap rollback restores the line below",
                p.plan.new.major,
                p.plan.new.datadir.display()
            );
            write_start_conf(p, path, &boot::manual_start_conf(&text, &why))?;
            daemon_reload(p)?;
            Ok(Some(format!(
                "set {} to manual: the old cluster no longer starts at boot",
                path.display()
            )))
        }
        Boot::Units {
            old,
            new,
            offline_root,
            ..
        } => {
            let root = offline_root.as_deref();
            if systemd::unit_enabled(&p.runner, root, old) {
                systemd::run_systemctl(&p.runner, root, "disable", old)?;
            }
            if let Some(n) = new {
                if !systemd::unit_enabled(&p.runner, root, n) {
                    systemd::run_systemctl(&p.runner, root, "enable", n)?;
                }
            }
            Ok(Some(format!(
                "disabled {old}{} at boot",
                new.as_ref()
                    .map(|n| format!(" and enabled {n}"))
                    .unwrap_or_default()
            )))
        }
    }
}

/// start.conf sits in the owner's configuration directory: read and written as the owner
/// (by root itself only where root alone controls its directory).
fn read_start_conf(p: &Prepared, path: &Path) -> Result<String> {
    let bytes = crate::exec::ownerfs::read_where(p.runner.owner(), path)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn write_start_conf(p: &Prepared, path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::symlink_metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
    crate::exec::ownerfs::write_where(p.runner.owner(), path, text.as_bytes(), mode)
}

/// Rollback: undoes [`disable_old_at_boot`] (nothing when it did not run).
pub(crate) fn restore_boot(p: &Prepared) -> Result<Option<String>> {
    let Some(boot) = &p.plan.host.boot else {
        return Ok(None);
    };
    match boot {
        Boot::StartConf { path, was } => {
            let Ok(text) = read_start_conf(p, path) else {
                return Ok(None);
            };
            let Some(restored) = boot::restore_start_conf(&text, was) else {
                return Ok(None);
            };
            write_start_conf(p, path, &restored)?;
            daemon_reload(p)?;
            Ok(Some(format!("restored {} to {was}", path.display())))
        }
        Boot::Units {
            old,
            new,
            new_was_enabled,
            offline_root,
        } => {
            let root = offline_root.as_deref();
            let mut done = Vec::new();
            if !systemd::unit_enabled(&p.runner, root, old) {
                systemd::run_systemctl(&p.runner, root, "enable", old)?;
                done.push(format!("enabled {old}"));
            }
            if let Some(n) = new.as_ref().filter(|_| !new_was_enabled) {
                if systemd::unit_enabled(&p.runner, root, n) {
                    systemd::run_systemctl(&p.runner, root, "disable", n)?;
                    done.push(format!("disabled {n}"));
                }
            }
            Ok((!done.is_empty()).then(|| format!("{} at boot again", done.join(" and "))))
        }
    }
}

/// systemd's postgresql-common generator reads start.conf: tell it after a change.
fn daemon_reload(p: &Prepared) -> Result<()> {
    if systemd::systemd_running(&p.plan.host.root) && nix::unistd::geteuid().is_root() {
        let sc = systemd::systemctl().ok_or(Error::SystemctlMissing)?;
        p.runner.run(
            &sc,
            &["daemon-reload"],
            &Opts {
                as_invoker: true,
                log_name: Some("systemctl-daemon-reload"),
                ..Opts::default()
            },
        )?;
    }
    Ok(())
}
