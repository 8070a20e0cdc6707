//! Carrying the old cluster's configuration into the new data directory.
//!
//! postgresql.conf, postgresql.auto.conf, pg_hba.conf, pg_ident.conf, included files that live
//! inside the old data or configuration directory, and SSL files are copied; for Debian, the
//! configuration directory `/etc/postgresql/N/NAME` goes to `/etc/postgresql/NEW/NAME` with
//! start.conf, pg_ctl.conf, environment and conf.d. Paths naming the old directories are
//! rewritten, and so is the major in postgresql-common's versioned values (external_pid_file,
//! cluster_name); settings the new server rejects are commented out with a note,
//! learning the valid set from the new server itself (`postgres --describe-config`, and
//! `postgres -C name` for names that list leaves out, then `postgres -C` until it accepts
//! the files). A setting it does not know in an included file outside the data and
//! configuration directories, which pgleap does not carry, is refused. The old files are
//! only read.

use std::path::PathBuf;

use serde::Serialize;

pub(crate) mod carry;
pub(crate) mod files;
pub(crate) mod hba;
pub(crate) mod outside;
pub(crate) mod parse;
pub(crate) mod validate;

/// What carrying the configuration did, for the report.
#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct CarryReport {
    pub(crate) copied: Vec<PathBuf>,
    pub(crate) rewritten: Vec<String>,
    pub(crate) commented: Vec<String>,
    pub(crate) shared_outside: Vec<PathBuf>,
    /// Settings carried from the old server's command line (`name = value`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) command_line: Vec<String>,
}
