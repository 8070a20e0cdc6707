//! How the host organizes clusters (plain, Debian, RHEL) and runs their servers.

pub(crate) mod boot;
pub(crate) mod debian;
pub(crate) mod layout;
pub(crate) mod root;
pub(crate) mod service;
pub(crate) mod systemd;
