//! Execution: the one process runner, signals, and PostgreSQL servers started and stopped
//! by pgleap (the fence). Imports nothing above `error`.

pub(crate) mod copytree;
pub(crate) mod interrupt;
pub(crate) mod owner;
pub(crate) mod ownerfs;
pub(crate) mod phases;
pub(crate) mod postmaster;
pub(crate) mod process;
pub(crate) mod readahead;
pub(crate) mod server;
pub(crate) mod user;
