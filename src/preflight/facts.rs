//! What the preflight families read: [`Static`], the facts found before anything is started
//! (and what the deciding families among them fill in: the mode, the WAL
//! directories, the space needed, the old server's command line and port), and
//! [`CatalogFacts`], once the old catalog is read.

use std::path::{Path, PathBuf};

use crate::error::Finding;
use crate::exec::process::Runner;
use crate::host::layout::Layout;
use crate::host::service::Host;
use crate::inspect::catalog::Catalog;
use crate::inspect::cluster::{Cluster, ControlData};
use crate::inspect::cmdline::CommandLine;
use crate::inspect::install::Install;
use crate::inspect::space::{FsNeed, Usage};
use crate::plan::Mode;

/// The static families' facts. The first fields are found before the walk; the others are
/// filled in by the family that decides them, in `FAMILIES` order.
pub(crate) struct Static<'a> {
    pub(crate) cluster: &'a Cluster,
    pub(crate) runner: &'a Runner,
    pub(crate) old: &'a Install,
    pub(crate) new: &'a Install,
    pub(crate) new_datadir: &'a Path,
    /// Debian's new configuration directory.
    pub(crate) new_confdir: Option<&'a Path>,
    pub(crate) usage: &'a Usage,
    pub(crate) tablespaces: &'a [PathBuf],
    /// What `pg_controldata` said of the old cluster, or why it cannot be trusted.
    pub(crate) control: &'a std::result::Result<ControlData, Finding>,
    /// `--mode` as given.
    pub(crate) requested_mode: Mode,
    /// `--port` as given (`upgrade` only).
    pub(crate) port_flag: Option<u16>,
    /// Decided by `mode`.
    pub(crate) mode: Mode,
    pub(crate) mode_reason: String,
    /// Decided by `placement`: the old and new WAL directories when the old cluster keeps
    /// its WAL apart.
    pub(crate) waldirs: Option<(PathBuf, PathBuf)>,
    /// Decided by `space`.
    pub(crate) space: Vec<FsNeed>,
    /// Decided by `cmdline`: the old server's command line and port.
    pub(crate) cmdline: CommandLine,
    pub(crate) old_port: u16,
}

/// The catalog families' facts.
pub(crate) struct CatalogFacts<'a> {
    /// `None` when it could not be read (the reason is already a finding).
    pub(crate) catalog: Option<&'a Catalog>,
    pub(crate) runner: &'a Runner,
    pub(crate) new: &'a Install,
    pub(crate) host: &'a Host,
    pub(crate) new_layout: &'a Layout,
}
