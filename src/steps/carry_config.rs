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
