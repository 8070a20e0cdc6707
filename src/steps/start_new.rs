//! The new cluster's first start (the point of no return in link and swap modes): with its
//! real settings when clients come back now, fenced otherwise.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::exec::interrupt;
use crate::exec::server::{self};
use crate::state::journal::{State, now_millis};
use crate::steps::servers::{self, Which};
use crate::ui::report::secs;

use super::step::{Phase, Run, Step, Undoing, step_failed};

pub(crate) struct StartNew;

impl Step for StartNew {
    fn name(&self) -> &'static str {
        "start-new"
    }
    fn reaches(&self) -> State {
        State::NewStarted
    }
    fn phase(&self) -> Phase {
        Phase::Window
    }
    fn writes_new(&self) -> bool {
        true
    }
    /// Asked to stop with pg_upgrade done but the new cluster never started: the safe point
    /// is the old cluster, running again as it was. Any other failure is reported with what
    /// to run next (`pgleap rollback` or a resume).
    fn rolls_back(&self, e: &Error) -> bool {
        matches!(e, Error::Interrupted { .. })
    }

    fn run(&self, run: &mut Run<'_>) -> Result<()> {
        start_new(self, run)?;
        run.new_up = true;
        Ok(())
    }

    /// Stops the new server the way it was started.
    fn undo(&self, u: &mut Undoing<'_>) -> Result<()> {
        u.stop_new()
    }
}

fn start_new(step: &StartNew, run: &mut Run<'_>) -> Result<()> {
    let fence = run.fence()?;
    let p = run.p;
    let new = p.plan.new.conf_dir();
    let leave_running = run.leave_running();
    let log = server::logfile(&run.log_dir, "new");
    let what = if leave_running {
        "with its real settings; clients are back"
    } else {
        "fenced, for extension updates and ANALYZE"
    };
    if interrupt::interrupted() {
        return Err(Error::Interrupted {
            before: "start-new".into(),
        });
    }
    let what = if leave_running {
        format!("{what} ({})", p.plan.host.new.start.describe("start"))
    } else {
        what.to_string()
    };
    let started = run.step(step, &what, |r| {
        if leave_running {
            servers::start(r.p, Which::New, &log).map(|_| ())?;
        } else {
            server::start(
                &r.p.runner,
                &r.p.new.bindir,
                &new,
                Some((fence.as_ref(), p.plan.new.port)),
                &log,
            )?;
        }
        // The new server accepts connections: the window is over. Journaled with the step's
        // end, in one write: the downtime and, in link and swap modes, the point of no return.
        let r = &mut r.journal.record;
        if let Some(ms) = r.window_started_ms {
            r.downtime_seconds = Some(now_millis().saturating_sub(ms) as f64 / 1000.0);
        }
        r.point_of_no_return |= !p.plan.mode.old_survives_start();
        Ok(())
    });
    // The point of no return is crossed once a postmaster has actually run on the new
    // cluster (a start refused for a port in use never got that far). If pgleap dies during
    // the start, rollback looks at the new data directory itself (crossing::new_has_run).
    let crossed = !p.plan.mode.old_survives_start()
        && (started.is_ok()
            || !matches!(started, Err(Error::Interrupted { .. }))
                && crate::steps::crossing::new_has_run(p, &run.journal).unwrap_or(true));
    // A successful start journaled it with the step's end.
    if crossed && started.is_err() {
        run.journal.record.point_of_no_return = true;
        run.journal.write()?;
    }
    started.map_err(|e| {
        let state = if p.plan.mode.old_survives_start() {
            format!(
                "the old cluster at {} is stopped and intact; pgleap rollback brings it back",
                p.plan.old.datadir.display()
            )
        } else if !crossed {
            format!(
                "no server ran on the new cluster, so the old cluster at {} is stopped and intact; pgleap rollback brings it back",
                p.plan.old.datadir.display()
            )
        } else {
            format!(
                "pg_upgrade completed in --{} mode; the old cluster must not be started",
                p.plan.mode.name()
            )
        };
        step_failed(
            "start-new",
            e,
            &state,
            &format!(
                "read {} and fix the cause, then run pgleap upgrade again to resume",
                log.display()
            ),
        )
    })?;
    if let Some(d) = run.journal.record.downtime_seconds {
        let pause = crate::state::pause::downtime_note(
            run.journal.record.downtime_seconds,
            run.journal.record.pause,
        );
        run.ui.line(&format!(
            "      downtime: {} (old stopped → new accepting connections{}{pause})",
            secs(Duration::from_secs_f64(d)),
            if pause.is_empty() { "" } else { "; " }
        ));
    }
    Ok(())
}
