//! After the window: pg_upgrade's update_extensions.sql, run against the new server. A
//! failure is a warning with the command to run: the upgrade itself is done.

use std::path::Path;

use crate::error::{Error, Finding, Result};
use crate::exec::process::Opts;
use crate::state::journal::State;

use super::step::{Phase, Run, Step, Undoing, psql_args};

pub(crate) struct UpdateExtensions;

impl Step for UpdateExtensions {
    fn name(&self) -> &'static str {
        "update-extensions"
    }
    fn reaches(&self) -> State {
        State::ExtensionsUpdated
    }
    fn phase(&self) -> Phase {
        Phase::After
    }
    fn writes_new(&self) -> bool {
        true
    }

    fn run(&self, run: &mut Run<'_>) -> Result<()> {
        let socket = run.new_server()?;
        super::replication::recreate_physical_slots(run, &socket);
        super::replication::resume_subscriptions(run, &socket)?;
        update_extensions(self, run, &socket)
    }

    /// Nothing outside the new cluster: the updated extensions are discarded with it.
    fn undo(&self, _u: &mut Undoing<'_>) -> Result<()> {
        Ok(())
    }
}

/// Runs pg_upgrade's update_extensions.sql; a failure is a warning (the upgrade is done).
fn update_extensions(step: &UpdateExtensions, run: &mut Run<'_>, socket: &Path) -> Result<()> {
    let p = run.p;
    let script = p.plan.work_dir.join("update_extensions.sql");
    let res = run.step(step, "ALTER EXTENSION ... UPDATE", |r| {
        if !script.exists() {
            return Ok(());
        }
        let script = script.display().to_string();
        let args = psql_args(p, socket, p.plan.new.port, "postgres", &["-f", &script]);
        let opts = Opts {
            log_name: Some("update-extensions"),
            ..Opts::default()
        };
        r.p.runner.run(&r.p.new.psql(), &args, &opts).map(|_| ())
    });
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
