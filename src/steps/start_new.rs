//! The new cluster's first start (the point of no return in link and swap modes), and
//! bringing it up again when an upgrade resumes past it.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::exec::interrupt;
use crate::exec::postmaster::{self, Liveness};
use crate::exec::server::{self, Fence};
use crate::state::journal::{State, now_millis};
use crate::steps::servers::{self, Which};
use crate::ui::report::secs;

use super::run::{Run, step_failed};

pub(crate) fn start_new(run: &mut Run<'_>, fence: &Fence) -> Result<()> {
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
    let started = run.step("start-new", State::NewStarted, &what, |r| {
        if leave_running {
            servers::start(r.p, Which::New, &log).map(|_| ())
        } else {
            server::start(
                &r.p.runner,
                &r.p.new.bindir,
                &new,
                Some((fence, p.plan.new.port)),
                &log,
            )
        }
    });
    // The point of no return is crossed once a postmaster has actually run on the new
    // cluster (a start refused for a port in use never got that far). If pgleap dies during
    // the start, rollback looks at the new data directory itself (crossing::new_has_run).
    let crossed = !p.plan.mode.old_survives_start()
        && (started.is_ok()
            || !matches!(started, Err(Error::Interrupted { .. }))
                && crate::steps::crossing::new_has_run(p, &run.journal).unwrap_or(true));
    if crossed {
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
    if let Some(ms) = run.journal.record.window_started_ms {
        run.journal.record.downtime_seconds = Some(now_millis().saturating_sub(ms) as f64 / 1000.0);
        run.journal.write()?;
    }
    if let Some(d) = run.journal.record.downtime_seconds {
        run.ui.line(&format!(
            "      downtime: {} (old stopped → new accepting connections)",
            secs(Duration::from_secs_f64(d))
        ));
    }
    Ok(())
}

/// On resume past the first start: the new server must be up for the remaining steps.
pub(crate) fn ensure_new_running(run: &mut Run<'_>, fence: &Fence) -> Result<()> {
    let new = &run.p.plan.new.datadir;
    if matches!(postmaster::liveness(new), Liveness::Running(_)) {
        return Ok(());
    }
    let log = server::logfile(&run.log_dir, "new");
    if run.leave_running() {
        return servers::start(run.p, Which::New, &log).map(|_| ());
    }
    server::start(
        &run.p.runner,
        &run.p.new.bindir,
        &run.p.plan.new.conf_dir(),
        Some((fence, run.p.plan.new.port)),
        &log,
    )
}

pub(crate) fn new_socket(run: &Run<'_>, fence: &Fence) -> PathBuf {
    match postmaster::liveness(&run.p.plan.new.datadir) {
        Liveness::Running(pm) => pm
            .socket_dir
            .unwrap_or_else(|| fence.socket_dir().to_path_buf()),
        _ => fence.socket_dir().to_path_buf(),
    }
}
