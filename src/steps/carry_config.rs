//! Before the window: the old cluster's configuration carried into the new one.

use std::path::Path;

use crate::config::CarryReport;
use crate::config::carry;
use crate::config::files::Dirs;
use crate::error::Result;
use crate::plan::prepare::Prepared;
use crate::state::journal::State;

use super::step::{Phase, Run, Step, Undoing};

/// The old cluster's configuration carried into the new one, while the old server serves.
pub(crate) struct CarryConfig;

impl Step for CarryConfig {
    fn name(&self) -> &'static str {
        "carry-config"
    }
    fn reaches(&self) -> State {
        State::ConfigCarried
    }
    fn phase(&self) -> Phase {
        Phase::Serving
    }

    fn run(&self, run: &mut Run<'_>) -> Result<()> {
        let new = run.p.plan.new.datadir.clone();
        let confdir = run.p.plan.new.conf_dir();
        let what = if run.p.plan.new.confdir.is_some() {
            format!(
                "postgresql.conf, pg_hba.conf, pg_ident.conf, start.conf, pg_ctl.conf, environment, conf.d into {}",
                confdir.display()
            )
        } else {
            "postgresql.conf, pg_hba.conf, pg_ident.conf, includes".to_string()
        };
        let carried = run.step(self, &what, |r| carry_config(r.p, &new, &confdir))?;
        for c in &carried.commented {
            run.ui.line(&format!(
                "      commented out {c}: the new major rejects it"
            ));
        }
        for c in &carried.command_line {
            run.ui.line(&format!(
                "      carried {c} from the old server's command line into postgresql.auto.conf"
            ));
        }
        run.carried = Some(carried);
        Ok(())
    }

    /// Nothing outside the new cluster: its files (and Debian's new configuration directory)
    /// are discarded with it, by identity proof.
    fn undo(&self, _u: &mut Undoing<'_>) -> Result<()> {
        Ok(())
    }
}

/// Carries the configuration into the new data directory and, for Debian, the new
/// configuration directory `confdir` (the data directory itself otherwise).
pub(crate) fn carry_config(p: &Prepared, datadir: &Path, confdir: &Path) -> Result<CarryReport> {
    carry::carry(
        &p.runner,
        &Dirs {
            old_data: &p.plan.old.datadir,
            old_conf: &p.plan.old.conf_dir(),
            new_data: datadir,
            new_conf: confdir,
        },
        &p.plan.layout,
        &p.new,
        p.plan.new.port,
        &command_line_settings(&p.plan.old.options),
    )
}

/// The settings the old server's command line gave, but its port: the new one's is set apart.
fn command_line_settings(options: &[String]) -> Vec<(String, String)> {
    let cl = crate::inspect::cmdline::CommandLine {
        args: options.to_vec(),
    };
    cl.settings()
        .0
        .into_iter()
        .filter(|g| g.name != "port")
        .map(|g| (g.name, g.value))
        .collect()
}
