//! The host layout: a postgresql-common cluster names the major its data directory holds,
//! and the new major's binaries are where postgresql-common will look for them.

use std::path::Path;

use crate::error::{Finding, Findings};
use crate::host::layout::{self};
use crate::host::service;
use crate::inspect::cluster::Cluster;
use crate::inspect::install::Install;
use crate::preflight::facts::CatalogFacts;

/// The `host` family: how the host will run the new cluster.
pub(crate) fn host(c: &CatalogFacts<'_>, findings: &mut Findings) {
    host_findings(c.host, c.new_layout, c.new, findings);
}

/// postgresql-common names the cluster by its major: it must be the one in PG_VERSION.
pub(crate) fn check_layout_version(
    layout: &layout::Layout,
    cluster: &Cluster,
) -> Result<(), Finding> {
    match layout.named_major() {
        Some((major, named)) if major != cluster.major => Err(Finding::error(
            "cluster-version-mismatch",
            format!(
                "{named} names {} as its data directory, which holds PostgreSQL {}",
                cluster.datadir.display(),
                cluster.major
            ),
            "Fix data_directory in its postgresql.conf, or pass --old-datadir",
        )),
        _ => Ok(()),
    }
}

/// Warnings about how the host will run the new cluster.
pub(crate) fn host_findings(
    host: &service::Host,
    new_layout: &layout::Layout,
    new: &Install,
    findings: &mut Findings,
) {
    if let Some(start) = new_layout.packaged_start(&host.root) {
        let same =
            std::fs::canonicalize(&start.bindir).ok() == std::fs::canonicalize(&new.bindir).ok();
        if !same && host.root == Path::new("/") {
            findings.push(Finding::warning(
                "new-bindir-not-debian",
                format!(
                    "{} with {}, but PostgreSQL {} is at {}",
                    start.starter,
                    start.bindir.display(),
                    new.major,
                    new.bindir.display()
                ),
                format!(
                    "Install {} so that {} can start the new cluster at boot",
                    start.package, start.tools
                ),
            ));
        }
    }
}
