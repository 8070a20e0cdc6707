//! `pgleap check`: compute the plan and run every preflight check, including
//! `pg_upgrade --check` against a scratch new cluster. Works while the old server runs.
//!
//! Invariant: the old data directory is never written by pgleap; the scratch cluster lives
//! in a temporary directory beside the target (so link and clone capability are tested on
//! the right filesystem) and is removed afterwards.

use serde_json::json;

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::config::CarryReport;
use crate::error::{Error, Result};
use crate::exec::interrupt;
use crate::exec::postmaster::{self, Liveness};
use crate::exec::process::Owner;
use crate::exec::server;
use crate::inspect::space;
use crate::plan::args::CheckArgs;
use crate::plan::estimate::Estimate;
use crate::plan::prepare::{Prepared, Purpose, prepare};
use crate::steps;
use crate::ui::report::Ui;

/// Stops, when dropped, a server that an interrupted or failed check may leave running on
/// `dir`: the scratch cluster (declared after the scratch directory, so it runs before that
/// is removed), or the old cluster when it had been stopped and was started, fenced, by
/// pgleap or pg_upgrade --check.
struct StopOnDrop(PathBuf, Owner, bool);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        server::stop_any(&self.0, &self.1, self.2);
    }
}

/// Puts back, when dropped, the old cluster's `postmaster.opts` as it was before `check`
/// started it: the fenced start and `pg_upgrade --check` each rewrite the file, and the
/// command line it records is what `upgrade` carries to the new cluster and what rollback
/// restarts the old server with. Declared before the guard that stops the server, so that it
/// runs after it. The owner writes the file back.
struct RestoreOpts {
    path: PathBuf,
    text: String,
    /// The file's permission bits: 0640 in a cluster with group access (`initdb -g`).
    mode: u32,
    owner: Owner,
}

impl RestoreOpts {
    fn new(datadir: &Path, owner: Owner) -> Option<RestoreOpts> {
        let path = datadir.join("postmaster.opts");
        let text = crate::inspect::cmdline::read_nofollow(&path)?;
        let mode = std::fs::symlink_metadata(&path).ok()?.mode() & 0o777;
        Some(RestoreOpts {
            path,
            text,
            mode,
            owner,
        })
    }
}

impl Drop for RestoreOpts {
    fn drop(&mut self) {
        if crate::inspect::cmdline::read_nofollow(&self.path).as_deref() == Some(&self.text) {
            return;
        }
        if let Err(e) =
            crate::exec::ownerfs::write(&self.owner, &self.path, self.text.as_bytes(), self.mode)
        {
            tracing::warn!("cannot restore {}: {e}", self.path.display());
        }
    }
}

/// What a command that only reads the old cluster holds while it does: a shared lock on it
/// (refused while an upgrade of the cluster runs), and for a stopped cluster the guards that
/// stop the fenced server it may start and put its `postmaster.opts` back. Fields drop in
/// order: the server stops, then the file is restored, then the lock goes.
pub(crate) struct OldHeld {
    _stop: Option<StopOnDrop>,
    _opts: Option<RestoreOpts>,
    _lock: Option<crate::state::oldlock::OldLock>,
}

pub(crate) fn hold_old(args: &CheckArgs) -> Result<OldHeld> {
    // Resolved the way prepare will (--cluster, --root); prepare reports any problem.
    let old = crate::host::root::host_root(args.target.root.as_deref())
        .and_then(|root| crate::plan::prepare::old_target(&root, args))
        .ok()
        .map(|(d, _)| d);
    let owner_of = |d: &Path| {
        std::fs::metadata(d)
            .ok()
            .map(|m| Owner::from_uid(m.uid(), m.gid()))
    };
    // Before anything is started: an upgrade of this cluster may be inside its window.
    let lock = match &old {
        Some(d) if d.is_dir() => crate::state::oldlock::OldLock::shared(d)?,
        _ => None,
    };
    let stopped = old.filter(|d| !matches!(postmaster::liveness(d), Liveness::Running(_)));
    let opts = stopped
        .as_ref()
        .and_then(|d| owner_of(d).and_then(|o| RestoreOpts::new(d, o)));
    let stop = stopped.and_then(|d| owner_of(&d).map(|o| StopOnDrop(d, o, true)));
    Ok(OldHeld {
        _stop: stop,
        _opts: opts,
        _lock: lock,
    })
}

pub(crate) fn execute(args: &CheckArgs) -> Result<()> {
    // A signal kills the running child at once; `Cleanup` then stops what it started.
    interrupt::install(interrupt::OnSignal::Abort);
    let ui = Ui { json: args.json };
    let _held = hold_old(args)?;
    let mut p = prepare(args, Purpose::Check)?;
    p.plan.steps = crate::steps::order::names();
    let (carried, estimate) = if !p.findings.has_errors() && p.plan.initdb.is_some() {
        let (c, e) = scratch_check(&mut p, ui)?;
        ui.line(&format!(
            "downtime estimate for this machine: {:.1}s ({})",
            e.seconds, e.basis
        ));
        (Some(c), Some(e))
    } else {
        (None, None)
    };
    ui.plan(&p.plan);
    ui.findings(&p.findings.0);
    let ok = !p.findings.has_errors();
    let mut doc = json!({ "ok": ok, "plan": p.plan, "findings": p.findings, "config": carried, "downtime_estimate": estimate });
    if let Err(e) = p.findings.clone().into_result() {
        // The shape of every failure under --json, with the plan and configuration besides.
        doc["exit_code"] = e.exit_code().into();
        doc["error"] = e.to_string().into();
    }
    ui.json(&doc);
    if ok && p.plan.initdb.is_none() {
        ui.line("check incomplete: the static checks passed, but the catalog checks and pg_upgrade --check could not run (see the warnings above).");
    } else if ok {
        ui.line("check passed: the upgrade can run.");
    }
    p.findings.into_result().map(|_| ())
}

/// pg_upgrade --check against a scratch cluster beside where the new one will be: initdb,
/// the configuration carried, then the check. Its findings join the plan's.
fn scratch_check(p: &mut Prepared, ui: Ui) -> Result<(CarryReport, Estimate)> {
    let parent =
        space::existing_ancestor(p.plan.new.datadir.parent().unwrap_or(&p.plan.new.datadir));
    // The owner makes (and later removes) the scratch directory: its parent is the owner's
    // to write.
    let scratch =
        crate::exec::ownerfs::OwnerTempDir::new(p.runner.owner(), &parent, ".pgleap-check-")?;
    // Logs of a check outlive the scratch cluster only when it fails.
    let logs = tempfile::Builder::new()
        .prefix("pgleap-check-")
        .tempdir()
        .map_err(|e| Error::io("cannot create a log directory", std::env::temp_dir(), e))?;
    steps::create_owned_dir(logs.path(), p.runner.owner())?;
    p.runner.set_log_dir(logs.path().to_path_buf());
    let new = scratch.path().join("data");
    // Debian: the scratch cluster's configuration directory, like /etc/postgresql/17/main.
    let confdir = if p.plan.new.confdir.is_some() {
        let c = scratch.path().join("etc");
        steps::create_owned_dir(&c, p.runner.owner())?;
        c
    } else {
        new.clone()
    };
    let _scratch_guard = StopOnDrop(new.clone(), p.runner.owner().clone(), false);
    ui.line("checking: initdb of a scratch cluster, configuration carry-over, pg_upgrade --check");
    let started = std::time::Instant::now();
    steps::initdb::initdb(p, &new)?;
    let mut estimate = crate::plan::estimate::estimate(
        &p.plan.downtime_inputs,
        Some(started.elapsed().as_secs_f64()),
    );
    let report = steps::carry_config::carry_config(p, &new, &confdir)?;
    for c in &report.commented {
        p.findings.push(crate::error::Finding::warning(
            "config-setting-dropped",
            format!("the carried configuration sets {c}, which PostgreSQL {} rejects; upgrade comments it out", p.new.major),
            "Review the setting for the new major",
        ));
    }
    let check = |p: &Prepared, mode| {
        steps::pg_upgrade::pg_upgrade(p, mode, &new, &confdir, scratch.path(), logs.path(), true)
    };
    // Tests change the filesystems here, between the plan's probes and pg_upgrade's check.
    crate::exec::interrupt::fault("check:scratch-ready");
    // pg_upgrade --check and the collation probe are timed, with initdb, for the estimate
    // (as upgrade does; not after a fallback).
    let check_started = std::time::Instant::now();
    let mut checked = check(p, p.plan.mode);
    let check_secs = check_started.elapsed();
    let mut fell_back = false;
    if let Err(e) = &checked
        && let Some(refusal) = crate::preflight::mode::copy_file_range_refused(&p.plan, e)
    {
        // As upgrade does: auto's copy-file-range refused, copy instead (the scratch
        // directory, with pg_upgrade's probe file, is removed afterwards).
        crate::preflight::mode::fall_back_to_copy(&mut p.plan, &refusal);
        estimate = estimate.redone(&p.plan.downtime_inputs);
        fell_back = true;
        ui.line(&format!(
            "pg_upgrade --check refused --copy-file-range ({refusal}): upgrade falls back to --copy, before the window"
        ));
        checked = check(p, crate::plan::Mode::Copy);
    }
    let checked =
        checked.and_then(|_| steps::check::carried_config_loads(p, &confdir, &new, logs.path()));
    match checked {
        Ok(()) => {
            // The new installation's libraries decide the drift; its scratch cluster answers.
            let probe_started = std::time::Instant::now();
            let probes = steps::collations::probe_new(p, &confdir, &new, logs.path())?;
            p.plan.collations = steps::collations::judge_against_new(p, &probes);
            if !fell_back {
                let secs = (check_secs + probe_started.elapsed()).as_secs_f64();
                estimate = estimate.with_check(&p.plan.downtime_inputs, secs);
            }
        }
        Err(Error::Refused { findings }) => {
            let kept = logs.keep();
            ui.line(&format!(
                "pg_upgrade --check logs kept in {}",
                kept.display()
            ));
            p.findings.0.extend(findings);
        }
        Err(e) => return Err(e),
    }
    Ok((report, estimate))
}
