//! How the host organizes clusters and runs their servers: one file per host layout
//! (`plain`, `debian`, `rhel`) behind the `host_layout::HostLayout` trait, registered in
//! `layout.rs`; systemd, boot and the choice of what starts and stops each server beside them.

pub(crate) mod boot;
pub(crate) mod debian;
pub(crate) mod host_layout;
pub(crate) mod layout;
pub(crate) mod plain;
pub(crate) mod rhel;
pub(crate) mod root;
pub(crate) mod service;
pub(crate) mod systemd;
