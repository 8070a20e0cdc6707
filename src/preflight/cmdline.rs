//! The options the old server was started with (`postmaster.opts`): settings pgleap cannot
//! carry are refused, and the port the old server runs on is learned.

use crate::error::{Findings, Result};
use crate::exec::process::Runner;
use crate::inspect::cluster::Cluster;
use crate::inspect::cmdline::{self, CommandLine};
use crate::inspect::install::Install;
use crate::preflight::facts::Static;

/// The `cmdline` family. Runs before any fenced start of the old server, which would
/// overwrite `postmaster.opts`.
pub(crate) fn cmdline(s: &mut Static<'_>, findings: &mut Findings) -> Result<()> {
    let datadir = &s.cluster.datadir;
    s.cmdline = cmdline::read(datadir).unwrap_or_default();
    findings.extend(cmdline::refusal(&s.cmdline, datadir));
    s.old_port = old_port(s.runner, s.cluster, s.old, &s.cmdline)?;
    Ok(())
}

/// The port the old server runs on, else the one its command line or configuration sets.
fn old_port(
    runner: &Runner,
    cluster: &Cluster,
    old: &Install,
    cmdline: &CommandLine,
) -> Result<u16> {
    if let Some(p) = cluster.postmaster().and_then(|p| p.port).or(cmdline.port()) {
        return Ok(p);
    }
    Ok(cluster
        .setting(runner, old, "port")?
        .parse()
        .unwrap_or(5432))
}
