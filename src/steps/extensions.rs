//! After the window: pg_upgrade's update_extensions.sql, run against the new server. A
//! failure is a warning with the command to run: the upgrade itself is done.

use std::path::Path;

use crate::error::{Error, Finding, Result};
use crate::exec::process::Opts;
use crate::plan::prepare::Prepared;
use crate::state::journal::State;

use super::run::Run;

pub(crate) fn superuser(p: &Prepared) -> String {
    p.plan
        .initdb
        .as_ref()
        .map_or_else(|| p.runner.owner().name.clone(), |o| o.superuser.clone())
}

/// Runs pg_upgrade's update_extensions.sql; a failure is a warning (the upgrade is done).
pub(crate) fn update_extensions(run: &mut Run<'_>, socket: &Path) -> Result<()> {
    let p = run.p;
    let script = p.plan.work_dir.join("update_extensions.sql");
    let res = run.step(
        "update-extensions",
        State::ExtensionsUpdated,
        "ALTER EXTENSION ... UPDATE",
        |r| {
            if !script.exists() {
                return Ok(());
            }
            let args = [
                "-X".to_string(),
                "-v".into(),
                "ON_ERROR_STOP=1".into(),
                "-h".into(),
                socket.display().to_string(),
                "-p".into(),
                p.plan.new.port.to_string(),
                "-U".into(),
                superuser(p),
                "-d".into(),
                "postgres".into(),
                "-f".into(),
                script.display().to_string(),
            ];
            let opts = Opts {
                log_name: Some("update-extensions"),
                ..Opts::default()
            };
            r.p.runner.run(&r.p.new.psql(), &args, &opts).map(|_| ())
        },
    );
    match res {
        Err(e @ Error::Interrupted { .. }) => Err(e),
        Err(e) => {
            run.warnings.push(Finding::warning(
                "update-extensions-failed",
                format!("updating extensions failed: {e}"),
                format!("Run it yourself: psql -f {} postgres", script.display()),
            ));
            run.journal.set_state(State::ExtensionsUpdated)
        }
        Ok(()) => Ok(()),
    }
}
