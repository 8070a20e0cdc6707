//! Where an upgrade stands: the journal, its lock, and finding it again.

pub(crate) mod journal;
