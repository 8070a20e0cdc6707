//! The window opens: the old server stops through what manages it, and must have shut
//! down cleanly.

use crate::error::{Error, Result};
use crate::exec::server::{self};
use crate::plan::prepare::Prepared;
use crate::steps::servers::{self, Which};

/// Stops the old server (through what manages it) and verifies pg_control says it shut down
/// cleanly. Returns what stopped it.
pub(crate) fn stop_old(p: &Prepared) -> Result<Option<String>> {
    let how = match crate::exec::postmaster::liveness(&p.plan.old.datadir) {
        crate::exec::postmaster::Liveness::Stopped => None,
        crate::exec::postmaster::Liveness::Running(_) => servers::stop(p, Which::Old)?,
        crate::exec::postmaster::Liveness::Stale { .. } => {
            server::stop(&p.runner, &p.old.bindir, &p.plan.old.datadir)?;
            None
        }
    };
    let control = p.cluster.control_data(&p.runner, &p.old)?;
    if !control.cleanly_shut_down() {
        return Err(Error::UncleanShutdown {
            datadir: p.plan.old.datadir.clone(),
            state: control.state,
        });
    }
    Ok(how)
}
