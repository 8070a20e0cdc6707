//! How long each phase of a tool's output took (pg_upgrade's "Copying user relation files"
//! and the rest), timed from its output as it arrives: a phase starts when its header line
//! first appears and ends when the next one does.

use serde::{Deserialize, Serialize};

/// One phase and its duration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PhaseTime {
    pub(crate) name: String,
    pub(crate) seconds: f64,
}

/// Times phases from the lines a tool prints. Lines indented by a space are items of the
/// current phase (files, databases); a header may arrive more than once as more of its
/// line is written (`Copying user relation files`, then the same with `ok` after the
/// padding), and separator lines (`-----`) are no phase.
#[derive(Debug, Default)]
pub(crate) struct PhaseClock {
    current: String,
    started: f64,
    done: Vec<PhaseTime>,
}

impl PhaseClock {
    /// `line` arrived `at` seconds after the tool started.
    pub(crate) fn line(&mut self, line: &str, at: f64) {
        if line.starts_with(' ') {
            return;
        }
        let header = header(line);
        if header.is_empty() || header == "ok" || header.starts_with('-') || header == self.current
        {
            return;
        }
        self.close(at);
        self.current = header;
        self.started = at;
    }

    /// The phases, the last one ending `at` (when the tool exited).
    pub(crate) fn finish(mut self, at: f64) -> Vec<PhaseTime> {
        self.close(at);
        self.done
    }

    fn close(&mut self, at: f64) {
        if !self.current.is_empty() {
            self.done.push(PhaseTime {
                name: std::mem::take(&mut self.current),
                seconds: (at - self.started).max(0.0),
            });
        }
    }
}

/// A header without what follows its padding (an `ok`, or the phase's first item).
fn header(line: &str) -> String {
    let t = line.trim();
    t.split("  ").next().unwrap_or(t).chars().take(80).collect()
}

/// The phase in which pg_upgrade transfers user relation files (copying, linking, cloning
/// or swapping them), with its seconds.
pub(crate) fn transfer(phases: &[PhaseTime]) -> Option<&PhaseTime> {
    // "Copying user relation files with copy_file_range" (17+) among them.
    phases.iter().find(|p| {
        p.name.contains("user relation files") || p.name.starts_with("Swapping data directories")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_each_phase_from_its_first_header_to_the_next() {
        let mut c = PhaseClock::default();
        c.line("Performing Upgrade", 0.0);
        c.line("------------------", 0.0);
        c.line("Setting locale and encoding for new cluster", 0.1);
        c.line(
            "Setting locale and encoding for new cluster                 ok",
            0.2,
        );
        c.line(
            "Copying user relation files                                   /d/base/5/16384",
            1.0,
        );
        c.line("  /d/base/5/16390", 2.0);
        c.line("ok", 4.5);
        c.line("Setting next OID for new cluster", 4.5);
        let phases = c.finish(5.0);
        let got: Vec<(&str, f64)> = phases
            .iter()
            .map(|p| (p.name.as_str(), p.seconds))
            .collect();
        assert_eq!(
            got,
            [
                ("Performing Upgrade", 0.1),
                ("Setting locale and encoding for new cluster", 0.9),
                ("Copying user relation files", 3.5),
                ("Setting next OID for new cluster", 0.5),
            ]
        );
        assert_eq!(transfer(&phases).map(|p| p.seconds), Some(3.5));
    }
}
