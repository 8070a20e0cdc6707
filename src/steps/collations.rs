//! Collation drift around the window. Before it: ask a fenced server of the new installation
//! (on `check`'s scratch cluster, or on the freshly initialized new cluster before
//! pg_upgrade) what version its libraries give each locale in use. After it, while clients are
//! served: the `collations` step rebuilds exactly the indexes that sort by a drifted
//! collation and refreshes the recorded versions (`--collations reindex`), or reports the
//! commands (`report`). A failure there is a warning: the upgrade itself is done.

use std::path::Path;

use crate::error::{Error, Finding, Result};
use crate::exec::server::{self, Fence};
use crate::inspect::collation::{Database, Probe};
use crate::inspect::db;
use crate::inspect::reindex::Report;
use crate::plan::collations::{CollationMode, Section, script, section};
use crate::plan::prepare::Prepared;
use crate::state::journal::State;

use super::step::{Phase, Run, Step, Undoing, superuser};

/// The step after the window that repairs (or reports) collation drift.
pub(crate) struct Collations;

impl Step for Collations {
    fn name(&self) -> &'static str {
        "collations"
    }
    fn reaches(&self) -> State {
        State::CollationsRepaired
    }
    fn phase(&self) -> Phase {
        Phase::After
    }
    fn writes_new(&self) -> bool {
        true
    }

    fn run(&self, run: &mut Run<'_>) -> Result<()> {
        let socket = run.new_server()?;
        repair(self, run, &socket)
    }

    /// Nothing outside the new cluster: rebuilt indexes are discarded with it.
    fn undo(&self, _u: &mut Undoing<'_>) -> Result<()> {
        Ok(())
    }
}

/// The `provider:locale` of every versioned collation in `facts`, once each.
fn specs(facts: &[Database]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for db in facts {
        let all = std::iter::once(&db.default).chain(db.collations.iter().map(|c| &c.version));
        for v in all.filter(|v| v.versioned() && v.recorded.is_some()) {
            let s = format!("{}:{}", v.provider, v.locale);
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

/// Starts the cluster configured in `confdir` (a fresh initdb of the new installation)
/// fenced, asks it for the version of every collation the old cluster records one for, and
/// stops it. Nothing to ask: no start.
pub(crate) fn probe_new(
    p: &Prepared,
    confdir: &Path,
    datadir: &Path,
    logs: &Path,
) -> Result<Vec<Probe>> {
    let specs = specs(&p.collation_facts);
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let fence = Fence::new(p.runner.owner())?;
    let port = server::spare_port(50433, p.plan.old.port);
    let log = logs.join("server-collation-probe.log");
    server::start_scratch(&p.runner, &p.new.bindir, confdir, (&fence, port), &log)?;
    crate::exec::interrupt::fault("collation-probe-up");
    let target = db::Target::new(
        fence.socket_dir(),
        port,
        vec![superuser(p), p.runner.owner().name.clone()],
    );
    let mut req = vec!["collation-versions".to_string()];
    for s in &specs {
        req.push("--locale".into());
        req.push(s.clone());
    }
    let req: Vec<&str> = req.iter().map(String::as_str).collect();
    let answer = db::call::<Vec<Probe>>(&p.runner, &req, &target);
    let stopped = server::stop(&p.runner, &p.new.bindir, datadir);
    let probes = answer?;
    stopped?;
    Ok(probes)
}

/// The plan's collation section judged again against the new installation's versions, and
/// its finding in place of the one judged against the old server.
pub(crate) fn judge_against_new(p: &mut Prepared, probes: &[Probe]) -> Section {
    let s = section(
        &p.collation_facts,
        probes,
        p.plan.collations.mode,
        p.plan.jobs,
    );
    p.findings.0.retain(|f| f.code != "collation-drift");
    p.findings
        .extend(crate::preflight::collation::drift_finding(&s));
    s
}

/// Before the window, on the new cluster that pg_upgrade will fill: its libraries' versions
/// against what the old cluster recorded. With `--collations refuse`, drift refuses here
/// (the old server still serves, and the new directory is removed); otherwise it is said.
/// The section judged against the new installation, for the journal (`None`: nothing to
/// ask).
pub(crate) fn check_new(r: &Run<'_>, confdir: &Path, datadir: &Path) -> Result<Option<Section>> {
    let probes = probe_new(r.p, confdir, datadir, &r.log_dir)?;
    if probes.is_empty() {
        return Ok(None);
    }
    let s = section(
        &r.p.collation_facts,
        &probes,
        r.p.plan.collations.mode,
        r.p.plan.jobs,
    );
    match crate::preflight::collation::drift_finding(&s) {
        Some(f) if f.is_error() => Err(Error::Refused { findings: vec![f] }),
        Some(_) => {
            r.ui.line(&format!(
                "      collation drift against the new installation: {} indexes, {} bytes (estimated {:.1}s to rebuild)",
                s.indexes.len(),
                s.index_bytes,
                s.estimated_reindex_seconds
            ));
            Ok(Some(s))
        }
        None => Ok(Some(s)),
    }
}

/// The `collations` step: rebuild and refresh (`reindex`), or say what to run (`report`).
fn repair(step: &Collations, run: &mut Run<'_>, socket: &Path) -> Result<()> {
    let p = run.p;
    // The journal's section: judged against the new installation before the window.
    let planned = run.journal.record.plan.collations.clone();
    let mode = planned.mode;
    let drifted: Vec<(String, String)> = planned
        .drifted
        .iter()
        .map(|d| (d.database.clone(), d.collation.clone()))
        .collect();
    let drifted = serde_json::to_string(&drifted).unwrap_or_else(|_| "[]".into());
    let what = match mode {
        CollationMode::Reindex => {
            "REINDEX INDEX CONCURRENTLY what sorts by a drifted collation, then refresh the versions"
        }
        _ => "what sorts by a drifted collation (report only)",
    };
    let target = db::Target::new(
        socket,
        p.plan.new.port,
        vec![superuser(p), p.runner.owner().name.clone()],
    );
    let started = std::time::Instant::now();
    let result = run.step(step, what, |r| {
        if mode == CollationMode::Reindex {
            rebuild_and_refresh(r, &target, &drifted)
        } else {
            call(
                r.p,
                &target,
                &["reindex", "--dry-run", "--drifted", &drifted],
            )
        }
    });
    match result {
        Ok(report) => {
            say(run, &report, started.elapsed().as_secs_f64());
            Ok(())
        }
        Err(e @ Error::Interrupted { .. }) => Err(e),
        Err(e) => {
            let commands = script(&planned.commands);
            run.warnings.push(Finding::warning(
                "collations-failed",
                format!("repairing collation drift failed: {e}"),
                format!("Run the repair yourself (psql script):\n{commands}"),
            ));
            run.journal.set_state(State::CollationsRepaired)
        }
    }
}

/// Rebuilds, then (past a fault point for the tests) refreshes the versions of the
/// collations whose indexes all rebuilt.
fn rebuild_and_refresh(r: &Run<'_>, target: &db::Target, drifted: &str) -> Result<Report> {
    let jobs = r.p.plan.jobs.to_string();
    let progress = crate::ui::progress::Progress::new("reindex");
    let on_output = |line: &str| {
        if let Some(rest) = line.strip_prefix("reindex: ") {
            progress.detail(rest);
        }
    };
    let rebuilt = db::call_with_progress::<Report>(
        &r.p.runner,
        &["reindex", "--jobs", &jobs, "--drifted", drifted],
        target,
        Some(&on_output),
    );
    progress.finish();
    let mut report = rebuilt?;
    crate::exec::interrupt::fault("reindexed:collations");
    let failed: Vec<(String, String)> = report
        .failed
        .iter()
        .map(|f| (f.database.clone(), f.index.clone()))
        .collect();
    let failed = serde_json::to_string(&failed).unwrap_or_else(|_| "[]".into());
    let refreshed = call(r.p, target, &["reindex", "--refresh", "--failed", &failed])?;
    report.refreshed = refreshed.refreshed;
    report.left.extend(refreshed.left);
    Ok(report)
}

fn call(p: &Prepared, target: &db::Target, req: &[&str]) -> Result<Report> {
    db::call::<Report>(&p.runner, req, target)
}

/// Prints what the step found and did, keeps it for the report, and turns failed rebuilds
/// into warnings that name the keys and the fix.
fn say(run: &mut Run<'_>, report: &Report, seconds: f64) {
    let ui = run.ui;
    if report.drifted.is_empty() {
        ui.line("      no collation version changed");
    }
    for d in &report.drifted {
        ui.line(&format!("      drifted: {d}"));
    }
    if !report.rebuilt.is_empty() || !report.refreshed.is_empty() {
        ui.line(&format!(
            "      rebuilt {} of {} indexes, refreshed {} collation versions",
            report.rebuilt.len(),
            report.indexes,
            report.refreshed.len()
        ));
    }
    for c in &report.cleaned {
        ui.line(&format!(
            "      dropped {c}, left by an interrupted rebuild"
        ));
    }
    for f in &report.failed {
        run.warnings.push(Finding::warning(
            "reindex-failed",
            format!(
                "rebuilding {} in {} failed: {}{}{}",
                f.index,
                f.database,
                f.message,
                f.detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default(),
                if f.duplicates.is_empty() {
                    String::new()
                } else {
                    format!("; duplicated keys: {}", f.duplicates.join(", "))
                }
            ),
            f.fix.clone(),
        ));
    }
    if !report.left.is_empty() {
        let commands = script(&report.left);
        if run.journal.record.plan.collations.mode == CollationMode::Reindex {
            ui.line(&format!(
                "      left to run by hand (psql script):\n{commands}"
            ));
        } else {
            ui.line(&format!(
                "      to repair (or pass --collations reindex), run this psql script:\n{commands}"
            ));
        }
    }
    run.collations = Some((report.clone(), seconds));
}
