//! Before the window: the old cluster's configuration carried into the new one.

use std::path::Path;

use crate::config::CarryReport;
use crate::config::carry;
use crate::config::files::Dirs;
use crate::error::Result;
use crate::plan::prepare::Prepared;

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
    )
}
