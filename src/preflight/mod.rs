//! Preflight checks: every refusal and warning, one file per family.
//!
//! Invariant: the preflight reads and never writes; every check that can refuse produces a
//! `Finding` rather than an early return, so the user sees all problems at once.

pub(crate) mod extensions;
pub(crate) mod layout;
pub(crate) mod mode;
pub(crate) mod owner;
pub(crate) mod space;
pub(crate) mod target;
pub(crate) mod versions;
