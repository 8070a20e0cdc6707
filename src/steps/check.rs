//! Before the window: `pg_upgrade --check` against the new cluster, while the old server
//! still serves.

use crate::error::Result;
use crate::state::journal::State;

use super::pg_upgrade::pg_upgrade;
use super::step::{Phase, Run, Step, Undoing};

pub(crate) struct Check;

impl Step for Check {
    fn name(&self) -> &'static str {
        "check"
    }
    fn reaches(&self) -> State {
        State::Checked
    }
    fn phase(&self) -> Phase {
        Phase::Serving
    }

    fn run(&self, run: &mut Run<'_>) -> Result<()> {
        let new = run.p.plan.new.datadir.clone();
        let confdir = run.p.plan.new.conf_dir();
        let judged = run.step(self, "pg_upgrade --check", |r| {
            pg_upgrade(r.p, &new, &confdir, &r.p.plan.work_dir, &r.log_dir, true)?;
            super::collations::check_new(r, &confdir, &new)
        })?;
        if let Some(s) = judged {
            // What the collations step after the window repairs, also in a resumed upgrade.
            run.journal.record.plan.collations = s;
            run.journal.write()?;
        }
        Ok(())
    }

    /// pg_upgrade --check starts the new cluster: a server it left there is stopped.
    fn undo(&self, u: &mut Undoing<'_>) -> Result<()> {
        u.stop_new_fenced()
    }
}
