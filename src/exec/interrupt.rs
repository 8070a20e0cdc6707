//! Signals and fault injection.
//!
//! The first SIGINT or SIGTERM asks the upgrade to stop at the next safe point (a step
//! boundary). Children run in their own process group, so a terminal's Ctrl-C does not kill
//! pg_upgrade midway. A second signal kills the running child and exits at once: the journal
//! was written at the last step boundary, so this is no worse than a crash, from which
//! `pgleap upgrade` (resume) and `pgleap rollback` both recover.
//!
//! `PGLEAP_FAULT=<point>` kills pgleap with SIGKILL at a named point (`before:<step>`,
//! `after:<step>`); `PGLEAP_FAULT=<point>:pause=<file>` waits there until `file` exists.
//! Tests use them to prove every crash point is recoverable. `rehearse:delete-row` makes
//! `rehearse` delete one row from its upgraded copy, to prove the proof of preservation notices.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// A line on stderr that is lost, not a panic, when stderr is closed.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static CHILD: AtomicI32 = AtomicI32::new(0);

use crate::error::EXIT_INTERRUPTED;

/// What the first signal does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnSignal {
    /// Finish the running step, then stop (upgrade: its steps are journaled).
    SafePoint,
    /// Kill the running child now (check: nothing to keep; its guard cleans up).
    Abort,
}

/// Installs the SIGINT/SIGTERM handler thread.
pub(crate) fn install(on_signal: OnSignal) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        tracing::warn!("cannot install signal handlers");
        return;
    };
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if on_signal == OnSignal::Abort {
                INTERRUPTED.store(true, Ordering::SeqCst);
                say!("pgleap: signal {sig} received: stopping");
                kill_child();
                continue;
            }
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                say!(
                    "pgleap: second signal: aborting now; run pgleap status to see where the upgrade stands"
                );
                kill_child();
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
            say!(
                "pgleap: signal {sig} received: stopping at the next safe point (send it again to abort now)"
            );
        }
    });
}

pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Records the running child (its pid is also its process group).
pub(crate) fn set_child(pid: u32) {
    CHILD.store(i32::try_from(pid).unwrap_or(0), Ordering::SeqCst);
}

pub(crate) fn clear_child() {
    CHILD.store(0, Ordering::SeqCst);
}

fn kill_child() {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// A named point where tests may crash or pause pgleap.
pub(crate) fn fault(point: &str) {
    let Ok(spec) = std::env::var("PGLEAP_FAULT") else {
        return;
    };
    let (at, action) = match spec.split_once(":pause=") {
        Some((at, file)) => (at.to_string(), Some(file.to_string())),
        None => (spec.clone(), None),
    };
    if at != point {
        return;
    }
    if let Some(file) = action {
        say!("pgleap: fault point {point}: waiting for {file}");
        while !std::path::Path::new(&file).exists() {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    } else {
        say!("pgleap: fault point {point}: killing pgleap");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// True when `PGLEAP_FAULT` names `point`, for fault points that do something other than
/// kill or pause pgleap (a rehearsal's deliberately damaged copy).
pub(crate) fn fault_armed(point: &str) -> bool {
    std::env::var("PGLEAP_FAULT").is_ok_and(|spec| spec == point)
}
