//! What every host layout answers: the [`HostLayout`] trait. Each layout is one file
//! (`plain.rs`, `debian.rs`, `rhel.rs`) implementing it and one line in the registry,
//! `host::layout::Layout`.

use std::path::{Path, PathBuf};

use crate::exec::process::Runner;
use crate::host::boot::Boot;

/// How the host's packages start a cluster at boot: for the warning when the new major's
/// binaries are not where they look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PackagedStart {
    /// The bin directory the host's tools start the cluster with.
    pub(crate) bindir: PathBuf,
    /// Who starts it, as a sentence's subject: `postgresql-common starts cluster 17/main`.
    pub(crate) starter: String,
    /// The package to install, and the tools that then start the cluster.
    pub(crate) package: String,
    pub(crate) tools: String,
}

/// One way a host organizes a cluster: where its configuration lives, what names and starts
/// it, and what keeps it from starting at boot.
pub(crate) trait HostLayout {
    /// One line for humans: `Debian cluster 15/main, config in /etc/postgresql/15/main`.
    fn describe(&self) -> String;

    /// The layout of the data directory `datadir` under `root`, when it is this one.
    fn recognize(root: &Path, datadir: &Path) -> Option<Self>
    where
        Self: Sized;

    /// The same layout for the new major and the new data directory under `root`; `None`
    /// when the host would not run a cluster there (the new one is then plain).
    fn for_new(&self, root: &Path, major: u32, new_datadir: &Path) -> Option<Self>
    where
        Self: Sized;

    /// The directory whose `postgresql.conf` the server reads, when it is not the data
    /// directory.
    fn confdir(&self) -> Option<&Path> {
        None
    }

    /// Files of the configuration directory that hold no settings but belong to the cluster
    /// (postgresql-common's start mode, pg_ctl options and server environment).
    fn extra_config_files(&self) -> &'static [&'static str] {
        &[]
    }

    /// The major the host's own name for the cluster says it holds, and that name as shown
    /// (`cluster 15/main (/etc/postgresql/15/main)`): it must match `PG_VERSION`.
    fn named_major(&self) -> Option<(u32, String)> {
        None
    }

    /// The major written into versioned settings (postgresql-common's paths such as
    /// `/var/run/postgresql/15-main.pg_stat_tmp`), rewritten to the new major when carried.
    fn settings_major(&self) -> Option<u32> {
        None
    }

    /// The systemd unit of the cluster: Debian `postgresql@15-main`, RHEL `postgresql-15`.
    fn unit_name(&self) -> Option<String> {
        None
    }

    /// The bindir the distribution's unit runs: units take no `--bindir`.
    fn unit_bindir(&self, _root: &Path) -> Option<PathBuf> {
        None
    }

    /// postgresql-common's `pg_ctlcluster VERSION NAME`, when the layout has one.
    fn pg_ctlcluster(&self) -> Option<(u32, String)> {
        None
    }

    /// How the host's packages start this (new) cluster at boot.
    fn packaged_start(&self, _root: &Path) -> Option<PackagedStart> {
        None
    }

    /// What keeps this (old) cluster from starting at boot beside `new` after the upgrade,
    /// when it starts at boot today. `runner` asks `systemctl is-enabled` as pgleap's user.
    fn plan_boot(&self, _runner: &Runner, _root: &Path, _new: &dyn HostLayout) -> Option<Boot> {
        None
    }
}
