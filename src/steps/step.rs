//! What a step is: the [`Step`] trait every step implements, the [`Run`] it acts on going
//! forward (journaled before and after, with fault points on both sides) and the
//! [`Undoing`] it acts on going back.
//!
//! The order of the steps is one table, `steps::order::ORDER`; `steps::run` walks it
//! forward and `steps::undo` walks it backwards.

use std::path::PathBuf;
use std::rc::Rc;

use crate::config::CarryReport;
use crate::error::{Error, Finding, Result};
use crate::exec::interrupt;
use crate::exec::postmaster::{self, Liveness};
use crate::exec::server::{self, Fence};
use crate::inspect::db;
use crate::plan::prepare::Prepared;
use crate::state::journal::{Journal, State};
use crate::steps::servers::{self, Which};
use crate::ui::report::Ui;

/// When a step runs, relative to the downtime window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// The old server still serves its clients.
    Serving,
    /// The downtime window: from stopping the old server to the new one's start.
    Window,
    /// The new cluster has started.
    After,
}

/// One step of an upgrade. Adding a step is one file implementing this and one row in
/// `steps::order::ORDER` (plus a journal [`State`] when it reaches a new one).
pub(crate) trait Step: Sync {
    /// The name shown, journaled while it runs, and used by fault points
    /// (`before:NAME`, `after:NAME`).
    fn name(&self) -> &'static str;
    /// The journal state reached when it finishes; states increase along the order.
    fn reaches(&self) -> State;
    /// Whether it runs while the old server serves, inside the downtime window, or after
    /// the new cluster's start.
    fn phase(&self) -> Phase;
    /// Whether pgleap writes to the new cluster in this step: its next transaction id is then
    /// journaled with the state reached, and what clients write after it is what a rollback
    /// would discard.
    fn writes_new(&self) -> bool {
        false
    }
    /// Whether a failure of this step puts the old cluster back automatically (before the
    /// point of no return), rather than being reported with what to run next.
    fn rolls_back(&self, _e: &Error) -> bool {
        self.phase() != Phase::After
    }
    /// Carries the step out, through [`Run::step`] for its journaled part.
    fn run(&self, run: &mut Run<'_>) -> Result<()>;
    /// Undoes what the step changed outside the new cluster, when it finished or was
    /// interrupted. Called newest first; the new cluster's own files are discarded after all
    /// undos, by identity proof (`steps::undo`).
    fn undo(&self, u: &mut Undoing<'_>) -> Result<()>;
}

/// One upgrade being carried out: the prepared plan, its journal, and what the steps
/// report back for the final summary.
pub(crate) struct Run<'a> {
    pub(crate) p: &'a Prepared,
    pub(crate) ui: Ui,
    pub(crate) journal: Journal,
    pub(crate) log_dir: PathBuf,
    pub(crate) warnings: Vec<Finding>,
    pub(crate) carried: Option<CarryReport>,
    pub(crate) analyzed: Option<db::AnalyzeReport>,
    /// What was done so the old cluster does not start at boot.
    pub(crate) boot: Option<String>,
    /// The downtime estimate scaled to this machine by initdb's time (fresh upgrades).
    pub(crate) estimate: Option<crate::plan::estimate::Estimate>,
    /// What the collations step found and did, and how long it took.
    pub(crate) collations: Option<(crate::inspect::reindex::Report, f64)>,
    /// The step's place in the order and the order's length, for the step lines.
    pub(crate) at: (usize, usize),
    /// The private socket directory of the fenced new server, made when first needed.
    fence: Option<Rc<Fence>>,
    /// Whether the new server is known to be up (started by this run, or brought up again).
    pub(crate) new_up: bool,
}

impl<'a> Run<'a> {
    pub(crate) fn new(
        p: &'a Prepared,
        ui: Ui,
        journal: Journal,
        log_dir: PathBuf,
        warnings: Vec<Finding>,
    ) -> Run<'a> {
        Run {
            p,
            ui,
            journal,
            log_dir,
            warnings,
            carried: None,
            analyzed: None,
            boot: None,
            estimate: None,
            collations: None,
            at: (0, 0),
            fence: None,
            new_up: false,
        }
    }

    /// Runs the journaled part of `step`: honours an interrupt first, journals its start and
    /// end, and offers fault-injection points on both sides.
    pub(crate) fn step<T>(
        &mut self,
        step: &dyn Step,
        what: &str,
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        let name = step.name();
        if interrupt::interrupted() {
            return Err(Error::Interrupted {
                before: name.to_string(),
            });
        }
        interrupt::fault(&format!("before:{name}"));
        let started = self.ui.step(self.at.0, self.at.1, name, what);
        self.journal.begin(name)?;
        let out = f(self)?;
        // The step's work is done but not journaled: a crash here leaves it "running".
        interrupt::fault(&format!("within:{name}"));
        if step.writes_new() {
            self.journal.record.new_next_xid =
                new_next_xid(self.p).or(self.journal.record.new_next_xid);
        }
        let d = self.ui.step_done(started, "");
        self.journal.finish(name, step.reaches(), d.as_secs_f64())?;
        interrupt::fault(&format!("after:{name}"));
        Ok(out)
    }

    pub(crate) fn leave_running(&self) -> bool {
        self.journal.record.old_was_running && !self.p.plan.leave_stopped
    }

    /// The private socket directory for the new server, made on first use.
    pub(crate) fn fence(&mut self) -> Result<Rc<Fence>> {
        if let Some(f) = &self.fence {
            return Ok(Rc::clone(f));
        }
        let f = Rc::new(Fence::new(self.p.runner.owner())?);
        self.fence = Some(Rc::clone(&f));
        Ok(f)
    }

    /// The new server's socket directory, bringing the server up first when this run did
    /// not start it (a resume past its first start).
    pub(crate) fn new_server(&mut self) -> Result<PathBuf> {
        let fence = self.fence()?;
        if !self.new_up {
            ensure_new_running(self, &fence)?;
            self.new_up = true;
        }
        Ok(match postmaster::liveness(&self.p.plan.new.datadir) {
            Liveness::Running(pm) => pm.socket_dir,
            _ => None,
        }
        .unwrap_or_else(|| fence.socket_dir().to_path_buf()))
    }
}

/// On resume past the first start: the new server must be up for the remaining steps.
fn ensure_new_running(run: &Run<'_>, fence: &Fence) -> Result<()> {
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

/// The new cluster's next transaction id, once pgleap's own work on it is done. Best effort:
/// without it, rollback cannot count what clients wrote.
fn new_next_xid(p: &Prepared) -> Option<u64> {
    crate::steps::crossing::next_xid(p)
        .inspect_err(|e| tracing::warn!("cannot read the new cluster's next transaction id: {e}"))
        .ok()
        .flatten()
}

pub(crate) fn step_failed(step: &str, e: Error, state: &str, next: &str) -> Error {
    Error::Step {
        step: step.into(),
        state: state.into(),
        next: next.into(),
        source: Box::new(e),
    }
}

/// Going back: the plan, the journal as it stands, and notes on what was done.
pub(crate) struct Undoing<'a> {
    pub(crate) p: &'a Prepared,
    pub(crate) j: &'a Journal,
    pub(crate) notes: Vec<String>,
}

impl Undoing<'_> {
    /// Stops a server running on the new data directory with `pg_ctl` (one pg_upgrade
    /// started, or one started fenced).
    pub(crate) fn stop_new_fenced(&mut self) -> Result<()> {
        let new = &self.p.plan.new.datadir;
        if matches!(postmaster::liveness(new), Liveness::Running(_)) {
            server::stop(&self.p.runner, &self.p.new.bindir, new)?;
            self.notes.push("stopped the new server".into());
        }
        Ok(())
    }

    /// Stops the new server the way it was started: through its service manager when it
    /// went live, with `pg_ctl` when it was started fenced.
    pub(crate) fn stop_new(&mut self) -> Result<()> {
        let live = self.j.record.old_was_running && !self.p.plan.leave_stopped;
        if !live {
            return self.stop_new_fenced();
        }
        if !matches!(
            postmaster::liveness(&self.p.plan.new.datadir),
            Liveness::Running(_)
        ) {
            return Ok(());
        }
        if let Some(how) = servers::stop(self.p, Which::New)? {
            self.notes.push(format!("stopped the new server ({how})"));
        }
        Ok(())
    }

    /// Stops a server on the old data directory: one pg_upgrade started, or the old one
    /// caught midway through its shutdown.
    pub(crate) fn stop_on_old(&mut self) -> Result<()> {
        let old = &self.p.plan.old.datadir;
        if matches!(postmaster::liveness(old), Liveness::Running(_)) {
            server::stop(&self.p.runner, &self.p.old.bindir, old)?;
            self.notes
                .push("stopped a server left running on the old data directory".into());
        }
        Ok(())
    }
}

/// The role pgleap connects as: the cluster's bootstrap superuser.
pub(crate) fn superuser(p: &Prepared) -> String {
    p.plan
        .initdb
        .as_ref()
        .map_or_else(|| p.runner.owner().name.clone(), |o| o.superuser.clone())
}

/// A libpq connection string for database `db` with pgleap's own session options.
fn own_session(db: &str) -> String {
    let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
    format!(
        "dbname={} options={}",
        quote(db),
        quote(crate::inspect::session::OWN_SESSION_OPTIONS)
    )
}

/// psql's arguments for a session as the new installation's superuser on the server at
/// `socket` and `port`, in database `db`: no psqlrc, stop at the first error, then `rest`
/// (`-c` statements, `-f` files, output options).
pub(crate) fn psql_args(
    p: &Prepared,
    socket: &std::path::Path,
    port: u16,
    db: &str,
    rest: &[&str],
) -> Vec<String> {
    let mut args = vec![
        "-X".to_string(),
        "-v".into(),
        "ON_ERROR_STOP=1".into(),
        "-h".into(),
        socket.display().to_string(),
        "-p".into(),
        port.to_string(),
        "-U".into(),
        superuser(p),
        "-d".into(),
        own_session(db),
    ];
    args.extend(rest.iter().map(ToString::to_string));
    args
}
