//! The order of an upgrade's steps: one table. `steps::run` walks it forward (a resume
//! starts after the journaled state); `steps::undo` walks it backwards, undoing each step
//! that finished or was interrupted.

use crate::state::journal::Journal;

use super::analyze::Analyze;
use super::carry_config::CarryConfig;
use super::check::Check;
use super::collations::Collations;
use super::extensions::UpdateExtensions;
use super::finish::Finish;
use super::initdb::Initdb;
use super::pg_upgrade::PgUpgrade;
use super::start_new::StartNew;
use super::step::Step;
use super::stop_old::StopOld;

/// Every step, in the order an upgrade runs them. The downtime window is the rows whose
/// phase is `Window` (stop-old to start-new).
pub(crate) const ORDER: &[&dyn Step] = &[
    &Initdb,
    &CarryConfig,
    &Check,
    &StopOld,
    &PgUpgrade,
    &StartNew,
    &UpdateExtensions,
    &Collations,
    &Analyze,
    &Finish,
];

/// The steps' names, in order (the plan lists them).
pub(crate) fn names() -> Vec<String> {
    ORDER.iter().map(|s| s.name().to_string()).collect()
}

/// Whether `step` finished or was under way when the journal was last written.
pub(crate) fn touched(step: &dyn Step, j: &Journal) -> bool {
    step.reaches() <= j.record.state || j.record.running.as_deref() == Some(step.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::journal::State;
    use crate::steps::step::Phase;

    #[test]
    fn states_and_phases_increase_along_the_order() {
        for w in ORDER.windows(2) {
            assert!(
                w[0].reaches() < w[1].reaches(),
                "{} then {}",
                w[0].name(),
                w[1].name()
            );
            assert!(
                w[0].phase() <= w[1].phase(),
                "{} then {}",
                w[0].name(),
                w[1].name()
            );
        }
        assert!(ORDER[0].reaches() > State::Planned);
        assert_eq!(ORDER[ORDER.len() - 1].reaches(), State::Done);
    }

    #[test]
    fn the_window_is_stop_old_to_start_new() {
        let window: Vec<&str> = ORDER
            .iter()
            .filter(|s| s.phase() == Phase::Window)
            .map(|s| s.name())
            .collect();
        assert_eq!(window, ["stop-old", "pg_upgrade", "start-new"]);
    }

    #[test]
    fn names_are_unique() {
        let mut n = names();
        n.sort();
        n.dedup();
        assert_eq!(n.len(), ORDER.len());
    }
}
