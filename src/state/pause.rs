//! The pause of a link-mode upgrade before the new primary's first start, while the
//! standbys are rebuilt with rsync: it lies inside the downtime window (clients are down),
//! but its length is the operator's, so the reports give the window with and without it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ui::report::secs;

/// When the pause began (the first run stopped) and ended (the resuming run went on), in
/// milliseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pause {
    pub(crate) started_ms: u64,
    pub(crate) ended_ms: Option<u64>,
}

impl Pause {
    pub(crate) fn begin() -> Pause {
        Pause {
            started_ms: now_millis(),
            ended_ms: None,
        }
    }

    /// Marks the end, once: a resumed run that is itself resumed keeps the first end.
    pub(crate) fn end(&mut self) -> bool {
        if self.ended_ms.is_some() {
            return false;
        }
        self.ended_ms = Some(now_millis());
        true
    }

    /// Its length, so far when it has not ended.
    pub(crate) fn seconds(&self) -> f64 {
        let end = self.ended_ms.unwrap_or_else(now_millis);
        end.saturating_sub(self.started_ms) as f64 / 1000.0
    }
}

/// Milliseconds since the epoch, as the journal counts them.
fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The downtime without the pause, once the window has closed.
pub(crate) fn downtime_without_pause(downtime: Option<f64>, pause: Option<Pause>) -> Option<f64> {
    let d = downtime?;
    Some(pause.map_or(d, |p| (d - p.seconds()).max(0.0)))
}

/// What follows the downtime in the reports of a paused upgrade: "of which paused for the
/// standbys' rsync: 4m 50s; without the pause: 12.1s"; empty without a pause.
pub(crate) fn downtime_note(downtime: Option<f64>, pause: Option<Pause>) -> String {
    match (pause, downtime_without_pause(downtime, pause)) {
        (Some(p), Some(without)) => format!(
            "of which paused for the standbys' rsync: {}; without the pause: {}",
            secs(Duration::from_secs_f64(p.seconds())),
            secs(Duration::from_secs_f64(without))
        ),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_ends_once_and_counts_until_its_end() {
        let mut p = Pause {
            started_ms: now_millis() - 4000,
            ended_ms: None,
        };
        assert!(p.seconds() >= 4.0);
        assert!(p.end());
        let ended = p.ended_ms;
        assert!(!p.end());
        assert_eq!(p.ended_ms, ended);
        p.ended_ms = Some(p.started_ms + 1500);
        assert!((p.seconds() - 1.5).abs() < f64::EPSILON);
    }
}
