//! `pgleap upgrade`: run the plan. Preparation (initdb, configuration, pg_upgrade --check)
//! happens while the old server still serves; the downtime window holds only stop-old,
//! pg_upgrade and start-new; extension updates and ANALYZE run after clients are back.
//!
//! Invariant: before the new cluster's first start a failure puts the old cluster back as
//! it was found (running again if it was running) and moves the half-built new directory
//! aside; pgleap never deletes or edits the old data directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::cli::UpgradeArgs;
use crate::config::CarryReport;
use crate::db;
use crate::error::{Error, Result};
use crate::plan::STEPS;
use crate::preflight::Finding;
use crate::prepare::{Prepared, Purpose, prepare};
use crate::process::Opts;
use crate::report::{Ui, secs};
use crate::server::{self, Fence};
use crate::steps;

#[derive(Debug, Serialize)]
struct StepTiming {
    name: &'static str,
    seconds: f64,
}

struct Run<'a> {
    p: &'a Prepared,
    ui: Ui,
    log_dir: PathBuf,
    timings: Vec<StepTiming>,
    warnings: Vec<Finding>,
}

impl Run<'_> {
    fn step<T>(
        &mut self,
        name: &'static str,
        what: &str,
        f: impl FnOnce(&Self) -> Result<T>,
    ) -> Result<T> {
        let n = STEPS.iter().position(|s| *s == name).map_or(0, |i| i + 1);
        let started = self.ui.step(n, STEPS.len(), name, what);
        let out = f(self)?;
        let d = self.ui.step_done(started, "");
        self.timings.push(StepTiming {
            name,
            seconds: d.as_secs_f64(),
        });
        Ok(out)
    }
}

pub(crate) fn execute(args: &UpgradeArgs) -> Result<()> {
    let ui = Ui {
        json: args.common.json,
    };
    let purpose = Purpose::Upgrade {
        port: args.port,
        analyze: !args.no_analyze,
        leave_stopped: args.leave_stopped,
    };
    let mut p = prepare(&args.common, purpose)?;
    ui.plan(&p.plan);
    ui.findings(&p.findings.0);
    if p.findings.has_errors() {
        return p.findings.clone().into_result().map(|_| ());
    }
    let log_dir = p.plan.work_dir.join("logs");
    steps::create_owned_dir(&p.plan.work_dir, p.runner.owner())?;
    steps::create_owned_dir(&log_dir, p.runner.owner())?;
    p.runner.set_log_dir(log_dir.clone());
    let mut run = Run {
        p: &p,
        ui,
        log_dir,
        timings: Vec::new(),
        warnings: p.findings.0.clone(),
    };

    let carried = run.build_new().map_err(|e| undo_before_stop(&run, e))?;
    let window = Instant::now();
    run.switch().map_err(|e| undo_after_stop(&run, e))?;
    let fence = Fence::new(p.runner.owner())?;
    let socket = run.start_new(&fence)?;
    let downtime = window.elapsed();
    run.ui.line(&format!(
        "      downtime: {} (old stopped → new accepting connections)",
        secs(downtime)
    ));
    let analyzed = run.after_start(&socket);
    let leave_running = run.leave_running();
    run.step(
        "finish",
        if leave_running {
            "new cluster left running"
        } else {
            "stopping the new cluster"
        },
        |r| {
            if leave_running {
                Ok(())
            } else {
                server::stop(&r.p.runner, &r.p.new, &r.p.plan.new.datadir)
            }
        },
    )?;
    drop(fence);
    run.report(downtime, &carried, analyzed.as_ref());
    Ok(())
}

impl Run<'_> {
    fn leave_running(&self) -> bool {
        self.p.plan.old_running && !self.p.plan.leave_stopped
    }

    /// While the old server still serves: initdb, configuration, pg_upgrade --check.
    fn build_new(&mut self) -> Result<CarryReport> {
        let new = self.p.plan.new.datadir.clone();
        self.step(
            "initdb",
            &format!("{} with the old cluster's options", new.display()),
            |r| steps::initdb(r.p, &new),
        )?;
        let carried = self.step(
            "carry-config",
            "postgresql.conf, pg_hba.conf, pg_ident.conf, includes",
            |r| steps::carry_config(r.p, &new),
        )?;
        for c in &carried.commented {
            self.ui.line(&format!(
                "      commented out {c}: the new major rejects it"
            ));
        }
        self.step("check", "pg_upgrade --check", |r| {
            steps::pg_upgrade(r.p, &new, &r.p.plan.work_dir, &r.log_dir, true)
        })?;
        Ok(carried)
    }

    /// The downtime window up to the new cluster's start: stop old, pg_upgrade.
    fn switch(&mut self) -> Result<()> {
        let new = self.p.plan.new.datadir.clone();
        self.step(
            "stop-old",
            "fast shutdown of the old server; clients are cut off",
            |r| steps::stop_old(r.p),
        )?;
        let what = format!(
            "--{} with {} jobs",
            self.p.plan.mode.name(),
            self.p.plan.jobs
        );
        self.step("pg_upgrade", &what, |r| {
            steps::pg_upgrade(r.p, &new, &r.p.plan.work_dir, &r.log_dir, false)
        })?;
        Ok(())
    }

    /// Starts the new cluster (for real when it stays running, else fenced); returns the
    /// socket directory to reach it.
    fn start_new(&mut self, fence: &Fence) -> Result<PathBuf> {
        let p = self.p;
        let new = p.plan.new.datadir.clone();
        let leave_running = self.leave_running();
        let log = server::logfile(&self.log_dir, "new");
        let what = if leave_running {
            "with its real settings; clients are back"
        } else {
            "fenced, for extension updates and ANALYZE"
        };
        self.step("start-new", what, |r| {
            let fenced = (!leave_running).then_some((fence, p.plan.new.port));
            server::start(&r.p.runner, &r.p.new, &new, fenced, &log)
        })
        .map_err(|e| {
            step_failed(
                "start-new",
                e,
                &after_start_state(p),
                &format!(
                    "read {} and fix the cause, then start it: pg_ctl start -D {}",
                    log.display(),
                    new.display()
                ),
            )
        })?;
        if !leave_running {
            return Ok(fence.socket_dir().to_path_buf());
        }
        Ok(match crate::cluster::liveness(&new) {
            crate::cluster::Liveness::Running(pm) => {
                pm.socket_dir.unwrap_or_else(|| PathBuf::from("/tmp"))
            }
            _ => PathBuf::from("/tmp"),
        })
    }

    /// While clients are served: update_extensions.sql, then ANALYZE. Failures here are
    /// warnings: the upgrade itself is done.
    fn after_start(&mut self, socket: &Path) -> Option<db::AnalyzeReport> {
        let p = self.p;
        let superuser = p
            .plan
            .initdb
            .as_ref()
            .map(|o| o.superuser.clone())
            .unwrap_or_default();
        let script = p.plan.work_dir.join("update_extensions.sql");
        if script.exists() {
            let args = [
                "-X".to_string(),
                "-v".into(),
                "ON_ERROR_STOP=1".into(),
                "-h".into(),
                socket.display().to_string(),
                "-p".into(),
                p.plan.new.port.to_string(),
                "-U".into(),
                superuser.clone(),
                "-d".into(),
                "postgres".into(),
                "-f".into(),
                script.display().to_string(),
            ];
            let res = self.step("update-extensions", "ALTER EXTENSION ... UPDATE", |r| {
                let opts = Opts {
                    log_name: Some("update-extensions"),
                    ..Opts::default()
                };
                r.p.runner.run(&r.p.new.psql(), &args, &opts).map(|_| ())
            });
            if let Err(e) = res {
                self.warnings.push(Finding::warning(
                    "update-extensions-failed",
                    format!("updating extensions failed: {e}"),
                    format!("Run it yourself: psql -f {} postgres", script.display()),
                ));
            }
        }
        if !p.plan.analyze {
            return None;
        }
        // 18: pg_upgrade carries optimizer statistics; only what it did not carry is missing.
        let missing_only = p.new.major >= 18;
        let what = if missing_only {
            "relations without statistics, in stages"
        } else {
            "all relations, in stages (minimal statistics first)"
        };
        let target = db::Target::new(
            socket,
            p.plan.new.port,
            vec![superuser, p.runner.owner().name.clone()],
        );
        let jobs = p.plan.jobs.to_string();
        let mut req = vec!["analyze", "--jobs", jobs.as_str(), "--stages"];
        if missing_only {
            req.push("--missing-only");
        }
        match self.step("analyze", what, |r| {
            db::call::<db::AnalyzeReport>(&r.p.runner, &req, &target)
        }) {
            Ok(a) => {
                self.ui.line(&format!(
                    "      analyzed {} relations in {} databases",
                    a.relations, a.databases
                ));
                Some(a)
            }
            Err(e) => {
                self.warnings.push(Finding::warning(
                    "analyze-failed",
                    format!("ANALYZE failed: {e}"),
                    format!(
                        "Run it yourself: vacuumdb --all --analyze-in-stages{}",
                        if missing_only {
                            " --missing-stats-only"
                        } else {
                            ""
                        }
                    ),
                ));
                None
            }
        }
    }

    fn report(
        &self,
        downtime: Duration,
        carried: &CarryReport,
        analyzed: Option<&db::AnalyzeReport>,
    ) {
        let p = self.p;
        self.ui.findings(&self.warnings);
        let old_note = old_cluster_note(p);
        self.ui.line(&format!(
            "\nUpgraded {} (PostgreSQL {}) to {} (PostgreSQL {}) in --{} mode; downtime {}.\n{}\nLogs: {}",
            p.plan.old.datadir.display(),
            p.plan.old.major,
            p.plan.new.datadir.display(),
            p.plan.new.major,
            p.plan.mode.name(),
            secs(downtime),
            old_note,
            self.log_dir.display()
        ));
        self.ui.json(&json!({
            "ok": true,
            "plan": p.plan,
            "steps": self.timings,
            "downtime_seconds": downtime.as_secs_f64(),
            "new_running": self.leave_running(),
            "config": carried,
            "analyze": analyzed,
            "warnings": self.warnings,
            "old_cluster": old_note,
            "log_dir": self.log_dir,
        }));
    }
}

fn old_cluster_note(p: &Prepared) -> String {
    let old = p.plan.old.datadir.display();
    if p.plan.mode.old_survives_start() {
        format!(
            "The old cluster at {old} is intact: to go back, stop the new cluster and start the old one (pg_ctl start -D {old}). Remove it when satisfied."
        )
    } else {
        format!(
            "The old cluster at {old} shares data files with the new one (--{} mode) and must not be started again; going back means restoring a backup. Remove it when satisfied.",
            p.plan.mode.name()
        )
    }
}

fn after_start_state(p: &Prepared) -> String {
    if p.plan.mode.old_survives_start() {
        format!(
            "the old cluster at {} is stopped and intact",
            p.plan.old.datadir.display()
        )
    } else {
        format!(
            "pg_upgrade completed in --{} mode; the old cluster must not be started",
            p.plan.mode.name()
        )
    }
}

fn step_failed(step: &str, e: Error, state: &str, next: &str) -> Error {
    Error::Step {
        step: step.into(),
        state: state.into(),
        next: next.into(),
        source: Box::new(e),
    }
}

/// A failure before the old server was stopped: the old cluster was never touched, so only
/// the new directory is removed (it was created by this run).
fn undo_before_stop(run: &Run<'_>, e: Error) -> Error {
    let new = &run.p.plan.new.datadir;
    let removed = std::fs::remove_dir_all(new);
    if let Error::Refused { .. } = e {
        if removed.is_ok() {
            return e;
        }
    }
    let state = format!(
        "the old cluster is untouched ({}); {}",
        if run.p.plan.old_running {
            "still running"
        } else {
            "stopped"
        },
        match removed {
            Ok(()) => format!("the new directory {} was removed", new.display()),
            Err(err) => format!(
                "the new directory {} could not be removed: {err}",
                new.display()
            ),
        }
    );
    step_failed(
        "preparation",
        e,
        &state,
        &format!(
            "fix the cause (logs in {}), then run pgleap upgrade again",
            run.log_dir.display()
        ),
    )
}

/// A failure inside the downtime window, before the new cluster ever started: undo
/// pg_upgrade's link-mode rename of pg_control, move the new directory aside, and start the
/// old server again if it was running.
fn undo_after_stop(run: &Run<'_>, e: Error) -> Error {
    let p = run.p;
    let old = &p.plan.old.datadir;
    let mut notes = Vec::new();
    let control = old.join("global/pg_control");
    let renamed = old.join("global/pg_control.old");
    if renamed.exists() && !control.exists() {
        // Link mode: pg_upgrade disables the old cluster by renaming pg_control; the new
        // cluster never started, so the old data files are unchanged.
        match std::fs::rename(&renamed, &control) {
            Ok(()) => notes.push("restored global/pg_control from pg_control.old".to_string()),
            Err(err) => notes.push(format!("could not restore global/pg_control: {err}")),
        }
    }
    let aside = aside_path(&p.plan.new.datadir);
    match std::fs::rename(&p.plan.new.datadir, &aside) {
        Ok(()) => notes.push(format!(
            "the unfinished new directory was moved to {}",
            aside.display()
        )),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => notes.push(format!("could not move the new directory aside: {err}")),
    }
    if p.plan.old_running {
        let log = server::logfile(&run.log_dir, "old");
        match server::start(&p.runner, &p.old, old, None, &log) {
            Ok(()) => notes.push("the old server is running again".into()),
            Err(err) => notes.push(format!("the old server could not be started again: {err}")),
        }
    } else {
        notes.push("the old cluster is stopped, as it was".into());
    }
    step_failed(
        "upgrade",
        e,
        &notes.join("; "),
        &format!(
            "fix the cause (logs in {}), then run pgleap upgrade again",
            run.log_dir.display()
        ),
    )
}

fn aside_path(new: &Path) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let name = new
        .file_name()
        .map_or_else(|| "data".into(), |n| n.to_string_lossy().into_owned());
    new.with_file_name(format!("{name}.failed-{stamp}"))
}
