//! Read-only facts: the old cluster on disk, the installations, the catalog, disk usage.
//! Never imports plan, preflight, steps or commands.

pub(crate) mod analyze;
pub(crate) mod archive;
pub(crate) mod backup;
pub(crate) mod catalog;
pub(crate) mod checkpoint;
pub(crate) mod cluster;
pub(crate) mod cmdline;
pub(crate) mod collation;
pub(crate) mod db;
pub(crate) mod fence;
pub(crate) mod install;
pub(crate) mod paths;
pub(crate) mod pgerr;
pub(crate) mod pgpass;
pub(crate) mod proof;
pub(crate) mod reindex;
pub(crate) mod replication;
pub(crate) mod session;
pub(crate) mod settings;
pub(crate) mod space;
