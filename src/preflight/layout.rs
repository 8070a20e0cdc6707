//! The host layout: a postgresql-common cluster names the major its data directory holds,
//! and the new major's binaries are where postgresql-common will look for them.

use std::path::Path;

use crate::error::{Finding, Findings};
use crate::host::layout::{self};
use crate::host::root::under;
use crate::host::service;
use crate::inspect::cluster::Cluster;
use crate::inspect::install::Install;

/// postgresql-common names the cluster by its major: it must be the one in PG_VERSION.
pub(crate) fn check_layout_version(
    layout: &layout::Layout,
    cluster: &Cluster,
) -> Result<(), Finding> {
    match layout {
        layout::Layout::Debian {
            version,
            name,
            confdir,
        } if *version != cluster.major => Err(Finding::error(
            "cluster-version-mismatch",
            format!(
                "cluster {version}/{name} ({}) names {} as its data directory, which holds PostgreSQL {}",
                confdir.display(),
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
    if let layout::Layout::Debian { version, name, .. } = new_layout {
        let debian_bindir = under(&host.root, &format!("usr/lib/postgresql/{version}/bin"));
        let same =
            std::fs::canonicalize(&debian_bindir).ok() == std::fs::canonicalize(&new.bindir).ok();
        if !same && host.root == Path::new("/") {
            findings.push(Finding::warning(
                "new-bindir-not-debian",
                format!(
                    "postgresql-common starts cluster {version}/{name} with {}, but PostgreSQL {version} is at {}",
                    debian_bindir.display(),
                    new.bindir.display()
                ),
                format!(
                    "Install postgresql-{version} so that pg_ctlcluster and postgresql@{version}-{name} can start the new cluster at boot"
                ),
            ));
        }
    }
}
