//! Where an upgrade stands: the journal, its lock, and finding it again.

pub(crate) mod identity;
pub(crate) mod journal;
pub(crate) mod locate;
pub(crate) mod lock;
pub(crate) mod oldlock;
pub(crate) mod pause;
pub(crate) mod trust;
