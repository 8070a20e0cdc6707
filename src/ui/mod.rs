//! The one place that speaks to the user: reports and progress.

pub(crate) mod progress;
pub(crate) mod replication;
pub(crate) mod report;
pub(crate) mod standby;
