//! Progress of long steps on stderr: one line redrawn in place on a terminal, plain
//! timestamped lines (at most every few seconds) otherwise. Never writes to stdout, so
//! `--json` output stays one document.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::inspect::space::{human, user_relation_bytes};
use crate::ui::report::secs;

/// How often plain (non-terminal) output may print a new line.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub(crate) struct Progress {
    tty: bool,
    label: String,
    started: Instant,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    detail: String,
    extra: String,
    last_print: Option<Instant>,
    last_text: String,
    drawn: bool,
}

impl Progress {
    pub(crate) fn new(label: &str) -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            label: label.into(),
            started: Instant::now(),
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What the program says it is doing (its latest output line).
    pub(crate) fn detail(&self, text: &str) {
        self.lock().detail = text.trim().to_string();
        self.draw(false);
    }

    /// A measured figure shown after the detail (bytes copied, rate, time left).
    pub(crate) fn extra(&self, text: String) {
        self.lock().extra = text;
        self.draw(false);
    }

    /// A moment worth keeping on screen (a stage has ended): printed at once, and on a
    /// terminal left standing above the line that is redrawn.
    pub(crate) fn milestone(&self, text: &str) {
        self.lock().detail = text.trim().to_string();
        self.draw(true);
        let mut g = self.lock();
        if self.tty && g.drawn {
            let _ = writeln!(std::io::stderr());
            g.drawn = false;
        }
    }

    fn draw(&self, force: bool) {
        let mut g = self.lock();
        let mut text = format!("{} [{}]", self.label, secs(self.started.elapsed()));
        if !g.detail.is_empty() {
            text.push_str(": ");
            text.push_str(&g.detail);
        }
        if !g.extra.is_empty() {
            text.push_str(" — ");
            text.push_str(&g.extra);
        }
        let now = Instant::now();
        let mut err = std::io::stderr().lock();
        if self.tty {
            if !force
                && g.last_print
                    .is_some_and(|t| now - t < Duration::from_millis(100))
            {
                return;
            }
            let width = terminal_width().saturating_sub(7);
            let shown: String = text.chars().take(width).collect();
            let _ = write!(err, "\r\x1b[K      {shown}");
            let _ = err.flush();
            g.drawn = true;
        } else {
            let core = format!("{}{}", g.detail, g.extra);
            if !force
                && (g.last_print.is_some_and(|t| now - t < PLAIN_EVERY) || core == g.last_text)
            {
                return;
            }
            let _ = writeln!(err, "      {} {text}", clock());
            g.last_text = core;
        }
        g.last_print = Some(now);
    }

    /// Clears the in-place line so the step's own "done" line starts clean.
    pub(crate) fn finish(&self) {
        let g = self.lock();
        if self.tty && g.drawn {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(100)
}

/// `HH:MM:SS` (UTC) for plain progress lines.
fn clock() -> String {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Watches `dirs` grow towards `expected` bytes (the user relation files being copied or
/// cloned) and reports bytes done, rate and time left until `stop` is set.
pub(crate) fn watch_copy(
    progress: &Progress,
    dirs: impl Fn() -> Vec<PathBuf>,
    expected: u64,
    stop: &AtomicBool,
) {
    // The rate is measured from the first bytes seen: before them pg_upgrade is still
    // restoring the schema, which creates the relation files empty.
    let mut first: Option<(Instant, u64)> = None;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(500));
        let done: u64 = dirs().iter().map(|d| user_relation_bytes(d)).sum();
        if done == 0 {
            continue;
        }
        let Some((t0, d0)) = first else {
            first = Some((Instant::now(), done));
            continue;
        };
        let elapsed_ms = u64::try_from(t0.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let rate = done.saturating_sub(d0).saturating_mul(1000) / elapsed_ms;
        let pct = if expected == 0 {
            100.0
        } else {
            (done as f64 * 100.0 / expected as f64).min(100.0)
        };
        let left = if rate == 0 {
            String::new()
        } else {
            let secs_left = expected.saturating_sub(done) as f64 / rate as f64;
            format!(", about {} left", secs(Duration::from_secs_f64(secs_left)))
        };
        progress.extra(format!(
            "{} of {} ({pct:.0}%), {}/s{left}",
            human(done),
            human(expected),
            human(rate)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_hh_mm_ss() {
        let c = clock();
        assert_eq!(c.len(), 8);
        assert_eq!(c.matches(':').count(), 2);
    }
}
