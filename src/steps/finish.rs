//! The last step, once the new cluster serves: stop it if asked, and keep the old cluster
//! from starting at boot beside it (only now that the upgrade has succeeded).

use crate::error::Result;
use crate::exec::server;
use crate::state::journal::State;
use crate::steps::servers;

use super::step::{Phase, Run, Step, Undoing};

pub(crate) struct Finish;

impl Step for Finish {
    fn name(&self) -> &'static str {
        "finish"
    }
    fn reaches(&self) -> State {
        State::Done
    }
    fn phase(&self) -> Phase {
        Phase::After
    }

    fn run(&self, run: &mut Run<'_>) -> Result<()> {
        let socket = run.new_server()?;
        let leave_running = run.leave_running();
        if leave_running {
            super::archiving::check_new(run, &socket);
        }
        let mut what = if leave_running {
            "new cluster left running".to_string()
        } else {
            "stopping the new cluster".to_string()
        };
        if let Some(b) = &run.p.plan.host.boot {
            what.push_str("; ");
            what.push_str(&b.describe());
        }
        let boot = run.step(self, &what, |r| {
            if !leave_running {
                server::stop(&r.p.runner, &r.p.new.bindir, &r.p.plan.new.datadir)?;
            }
            servers::disable_old_at_boot(r.p)
        })?;
        if let Some(b) = &boot {
            run.ui.line(&format!("      {b}"));
        }
        run.boot = boot;
        Ok(())
    }

    /// The new server stops first, so that it never runs while the old cluster starts at
    /// boot again; then the old cluster's boot setting comes back.
    fn undo(&self, u: &mut Undoing<'_>) -> Result<()> {
        u.stop_new()?;
        u.notes.extend(servers::restore_boot(u.p)?);
        Ok(())
    }
}
