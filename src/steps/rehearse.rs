//! `rehearse`: the whole upgrade on a copy of the old cluster, timed, with proof that the
//! upgraded copy holds what the copy held.
//!
//! The real plan is prepared first (its refusals refuse the rehearsal, its warnings are the
//! report's); then the copy (see `rehearse_copy`), its proof captured on a fenced start; then
//! the same steps `upgrade` carries out (`run::carry_out`) on the
//! copy, in link mode, on a spare port, with a plain layout and no hooks, its journal and logs
//! in the scratch area; then the proof again on the upgraded copy, fenced.
//!
//! Invariant: the old cluster is only read; its journal and lock are not touched. Every
//! server the rehearsal starts is fenced (private socket, no TCP).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Finding, Result};
use crate::exec::copytree::Copied;
use crate::exec::process::Opts;
use crate::exec::server::{self, Fence};
use crate::inspect::db;
use crate::inspect::proof::{self, Capture, Item};
use crate::inspect::space::{self, FsNeed};
use crate::plan::Mode;
use crate::plan::args::{CheckArgs, Target};
use crate::plan::prepare::{Prepared, Purpose, prepare};
use crate::preflight::replication::StandbyPolicy;
use crate::state::journal::{Journal, StepRecord};
use crate::state::lock::Lock;
use crate::steps::rehearse_copy::{self as copy, Method, Scratch};
use crate::steps::rehearse_report::{
    CopyReport, Downtime, Pipeline, ProofReport, downtime, kept_note, proof_report, real_pressure,
    upgrade_command,
};
use crate::steps::run::carry_out;
use crate::steps::step::Run;
use crate::ui::report::Ui;

/// What the user asked of the rehearsal beside the upgrade's own options.
#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    pub(crate) keep: bool,
    pub(crate) smoke_sql: Option<PathBuf>,
    pub(crate) scratch: Option<PathBuf>,
    pub(crate) max_rate: Option<String>,
}

/// The rehearsal's outcome, as reported.
#[derive(Debug, Serialize)]
pub(crate) struct Rehearsal {
    pub(crate) ok: bool,
    pub(crate) old_datadir: PathBuf,
    pub(crate) scratch: PathBuf,
    pub(crate) copy: CopyReport,
    pub(crate) steps: Vec<StepRecord>,
    pub(crate) downtime: Downtime,
    pub(crate) predicted_total_seconds: f64,
    /// The real upgrade's needs, then the rehearsal's own.
    pub(crate) space: Vec<FsNeed>,
    pub(crate) scratch_space: FsNeed,
    pub(crate) warnings: Vec<Finding>,
    pub(crate) proof: ProofReport,
    pub(crate) smoke: Option<Smoke>,
    pub(crate) upgrade_command: String,
    /// With --keep: how to start the upgraded copy (fenced).
    pub(crate) kept: Option<String>,
    pub(crate) notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Smoke {
    pub(crate) file: PathBuf,
    pub(crate) ok: bool,
    pub(crate) seconds: f64,
    pub(crate) output: String,
}

pub(crate) fn rehearse(args: &CheckArgs, o: &Options, ui: Ui) -> Result<Rehearsal> {
    let purpose = Purpose::Upgrade {
        port: None,
        analyze: true,
        leave_stopped: false,
    };
    let mut real = prepare(args, purpose)?;
    ui.plan(&real.plan);
    if real.findings.has_errors() {
        return Err(Error::Refused {
            findings: real.findings.0.clone(),
        });
    }
    let dir = o.scratch.as_ref().map_or_else(
        || copy::default_scratch(&real.plan.old.datadir),
        |d| std::path::absolute(d).unwrap_or_else(|_| d.clone()),
    );
    refuse_overlap(&real, &dir)?;
    let mut notes = Vec::new();
    notes.extend(copy::clean_leftovers(&dir, real.runner.owner())?);
    let method = choose_method(&real, &dir);
    let need = space_need(&real, &dir, method);
    if !need.enough() {
        return Err(no_space(&need));
    }
    let mut scratch = copy::create(&dir, &real, o.keep)?;
    real.runner.set_log_dir(scratch.logs());
    let (copy_report, pipeline, smoke, items) = match on_copy(args, o, &real, &scratch, method, ui)
    {
        Ok(done) => done,
        Err(e) => {
            // A failure is kept for its logs (the next rehearse removes it); an
            // interrupt is not.
            let interrupted = e.exit_code() == crate::error::EXIT_INTERRUPTED;
            scratch.keep |= !interrupted;
            // The copy's own state and next command do not concern the user.
            let (step, e) = match e {
                Error::Step { step, source, .. } => (Some(step), *source),
                e => (None, e),
            };
            return Err(Error::RehearsalStopped {
                step,
                scratch: dir,
                kept: scratch.keep,
                source: Box::new(e),
            });
        }
    };
    let pressure = real_pressure(&real);
    let downtime = downtime(&real, &pipeline, pressure.as_ref(), &copy_report);
    let report = Rehearsal {
        ok: false,
        old_datadir: real.plan.old.datadir.clone(),
        scratch: dir.clone(),
        predicted_total_seconds: pipeline.steps.iter().map(|s| s.seconds).sum::<f64>()
            + downtime.checkpoint_seconds
            + downtime.file_copy_seconds,
        copy: copy_report,
        steps: pipeline.steps,
        downtime,
        space: real.plan.space.clone(),
        scratch_space: need,
        warnings: [real.findings.0.clone(), pipeline.warnings].concat(),
        proof: proof_report(items),
        smoke,
        upgrade_command: upgrade_command(args, &real),
        kept: o.keep.then(|| kept_note(&real, &scratch)),
        notes,
    };
    drop(scratch);
    Ok(finish(report))
}

fn finish(mut r: Rehearsal) -> Rehearsal {
    r.ok = r.proof.equal && r.smoke.as_ref().is_none_or(|s| s.ok);
    r
}

/// The copy, then the pipeline and the proof on it.
fn on_copy(
    args: &CheckArgs,
    o: &Options,
    real: &Prepared,
    scratch: &Scratch,
    method: Method,
    ui: Ui,
) -> Result<(CopyReport, Pipeline, Option<Smoke>, Vec<Item>)> {
    ui.line(&format!(
        "rehearsing in {}: copying the cluster by {}",
        scratch.dir.display(),
        method.describe()
    ));
    let started = Instant::now();
    let copied = copy::make_copy(real, scratch, method, o.max_rate.as_deref())?;
    let copy_report = copy_report(method, copied, started.elapsed().as_secs_f64());
    ui.line(&format!(
        "      copied {} in {:.1}s",
        space::human(copied.bytes),
        copy_report.seconds
    ));
    // A signal during the copy (pg_basebackup is not interrupted) ends the rehearsal here.
    if crate::exec::interrupt::interrupted() {
        return Err(Error::Interrupted {
            before: "the copy's first start".into(),
        });
    }
    copy::bring_config(real, &scratch.old())?;
    copy::isolate_config(real, &scratch.old())?;
    copy::check_points_at_copy(real, &scratch.old())?;
    let (pipeline, (smoke, items)) = upgrade_copy(args, o, real, scratch, ui)?;
    Ok((copy_report, pipeline, smoke, items))
}

/// Refuses a scratch area overlapping the cluster.
fn refuse_overlap(p: &Prepared, dir: &Path) -> Result<()> {
    let datadir = &p.plan.old.datadir;
    let mut used: Vec<&Path> = vec![datadir.as_path()];
    used.extend(p.plan.tablespaces.iter().map(PathBuf::as_path));
    if let Some(w) = &p.plan.old.waldir {
        used.push(w);
    }
    if let Some(u) = used
        .into_iter()
        .find(|u| dir.starts_with(u) || u.starts_with(dir))
    {
        return Err(Error::Refused {
            findings: vec![Finding::error(
                "rehearse-scratch-overlaps",
                format!(
                    "the scratch area {} overlaps {}, which the old cluster uses",
                    dir.display(),
                    u.display()
                ),
                "Pass --scratch with a directory outside the data directory, its tablespaces and its WAL directory",
            )],
        });
    }
    Ok(())
}

/// Reflinks between pg_backup_start and pg_backup_stop when the scratch area shares a
/// reflink-capable filesystem with the data directory; else pg_basebackup for a running
/// server and a file copy (reflinks where possible) for a stopped one.
fn choose_method(p: &Prepared, dir: &Path) -> Method {
    if !p.plan.old_running {
        return Method::FileCopy;
    }
    let probe = space::existing_ancestor(dir);
    if space::device_of(&probe) == space::device_of(&p.plan.old.datadir)
        && space::supports_reflink(&probe)
    {
        Method::ReflinkBackup
    } else {
        Method::BaseBackup
    }
}

/// The copy (nothing for what reflinks share) and the upgraded copy's new catalog, on the
/// scratch area's filesystem.
fn space_need(p: &Prepared, dir: &Path, method: Method) -> FsNeed {
    let probe = space::existing_ancestor(dir);
    let device = space::device_of(&probe);
    let reflinks = method == Method::ReflinkBackup
        || (method == Method::FileCopy && space::supports_reflink(&probe));
    let copy = copy::copy_bytes(p, device, reflinks);
    let usage = space::Usage::measure(&p.cluster);
    let catalog = space::needs(&usage, dir, &[], false)
        .first()
        .map_or(0, |n| n.needed);
    FsNeed {
        path: dir.to_path_buf(),
        device,
        needed: copy + catalog,
        free: space::free_bytes(&probe),
    }
}

fn no_space(need: &FsNeed) -> Error {
    Error::Refused {
        findings: vec![Finding::error(
            "rehearse-no-space",
            format!(
                "not enough free space for the rehearsal's copy on the filesystem of {}: needs {}, {} free",
                need.path.display(),
                space::human(need.needed),
                space::human(need.free)
            ),
            "Free space there, or pass --scratch with a directory on a filesystem with room (on the data directory's own filesystem with reflinks, the copy takes almost no space)",
        )],
    }
}

fn copy_report(method: Method, copied: Copied, seconds: f64) -> CopyReport {
    CopyReport {
        method,
        description: method.describe(),
        bytes: copied.bytes,
        reflinked_files: copied.reflinked,
        seconds,
    }
}

/// Proof before, the pipeline, then the deliberate damage a test may ask for, the proof
/// after and the smoke queries, on the upgraded copy started fenced.
#[allow(clippy::type_complexity)]
fn upgrade_copy(
    args: &CheckArgs,
    o: &Options,
    real: &Prepared,
    scratch: &Scratch,
    ui: Ui,
) -> Result<(Pipeline, (Option<Smoke>, Vec<Item>))> {
    let runner = &real.runner;
    let copy_port = real.plan.old.port;
    let fence = Fence::new(runner.owner())?;
    let log = scratch.logs().join("server-copy.log");
    server::start(
        runner,
        &real.old.bindir,
        &scratch.old(),
        Some((&fence, copy_port)),
        &log,
    )?;
    ui.line("      capturing the copy's contents (the proof's \"before\")");
    let (before, schemas_before) = capture(real, fence.socket_dir(), copy_port)?;
    if !real.plan.old_running {
        server::stop(runner, &real.old.bindir, &scratch.old())?;
    }
    let port = spare_port(copy_port);
    let pipeline = run_pipeline(args, real, scratch, port, ui)?;
    let fence = Fence::new(runner.owner())?;
    let log = scratch.logs().join("server-upgraded.log");
    let new = scratch.new_datadir();
    server::start(runner, &real.new.bindir, &new, Some((&fence, port)), &log)?;
    if crate::exec::interrupt::fault_armed("rehearse:delete-row") {
        delete_a_row(real, &before, fence.socket_dir(), port)?;
    }
    ui.line("      capturing the upgraded copy's contents (the proof's \"after\")");
    let (after, schemas_after) = capture(real, fence.socket_dir(), port)?;
    let smoke = o
        .smoke_sql
        .as_ref()
        .map(|file| smoke(real, file, fence.socket_dir(), port));
    server::stop(runner, &real.new.bindir, &new)?;
    let schemas: BTreeMap<String, (String, String)> = schemas_before
        .into_iter()
        .filter_map(|(db, b)| schemas_after.get(&db).map(|a| (db, (b, a.clone()))))
        .collect();
    let items = proof::compare(&before, &after, &schemas);
    Ok((pipeline, (smoke, items)))
}

/// The same pipeline `upgrade` runs, on the copy: link mode, a spare port, its journal and
/// logs in the scratch area, the new cluster left stopped.
fn run_pipeline(
    args: &CheckArgs,
    real: &Prepared,
    scratch: &Scratch,
    port: u16,
    ui: Ui,
) -> Result<Pipeline> {
    let copy_args = CheckArgs {
        target: Target {
            old_datadir: Some(scratch.old()),
            cluster: None,
            root: None,
            new_datadir: Some(scratch.new_datadir()),
        },
        stop_command: None,
        start_command: None,
        old_bindir: Some(real.plan.old.bindir.clone()),
        new_bindir: Some(real.plan.new.bindir.clone()),
        new_version: None,
        mode: Mode::Link,
        // The same collation repair, timed on the copy.
        collations: args.collations,
        jobs: u32::try_from(real.plan.jobs).ok(),
        username: args.username.clone(),
        slots: args.slots,
        subscriptions: args.subscriptions,
        // A rehearsal never pauses for standbys: nothing is rebuilt from the copy.
        standbys: match args.standbys {
            StandbyPolicy::RebuildLater => StandbyPolicy::Basebackup,
            s => s,
        },
        standby: Vec::new(),
        json: args.json,
    };
    let purpose = Purpose::Upgrade {
        port: Some(port),
        analyze: real.plan.analyze,
        leave_stopped: true,
    };
    let mut p = prepare(&copy_args, purpose)?;
    p.plan.steps = crate::steps::order::names();
    if p.findings.has_errors() {
        return Err(Error::Refused {
            findings: p.findings.0.clone(),
        });
    }
    let log_dir = p.plan.work_dir.join("logs");
    crate::steps::create_owned_dir(&p.plan.work_dir, p.runner.owner())?;
    let _lock = Lock::acquire(&p.plan.work_dir, p.runner.owner())?;
    crate::steps::create_owned_dir(&log_dir, p.runner.owner())?;
    p.runner.set_log_dir(log_dir.clone());
    let journal = Journal::create(&p.plan, p.plan.old_running)?;
    let mut run = Run::new(&p, ui, journal, log_dir, p.findings.0.clone());
    carry_out(&mut run)?;
    let r = &run.journal.record;
    Ok(Pipeline {
        steps: r.steps.clone(),
        window: r.downtime_seconds.unwrap_or(0.0),
        warnings: run.warnings.clone(),
    })
}

/// A port for the upgraded copy's fenced server: not the old server's, and free on TCP
/// (the carried configuration is checked against it).
fn spare_port(avoid: u16) -> u16 {
    let mut port = 50_432_u16;
    while port < 65_000 {
        let free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if port != avoid && free {
            return port;
        }
        port += 1;
    }
    server::spare_port(avoid.wrapping_add(1), avoid)
}

/// Every database's proof and normalized schema (the new major's pg_dump, in parallel up
/// to the plan's jobs).
fn capture(p: &Prepared, socket: &Path, port: u16) -> Result<(Capture, BTreeMap<String, String>)> {
    let users = vec![
        crate::steps::step::superuser(p),
        p.runner.owner().name.clone(),
    ];
    let target = db::Target::new(socket, port, users);
    let jobs = p.plan.jobs.max(1).to_string();
    let found: Capture = db::call(&p.runner, &["proof", "--jobs", &jobs], &target)?;
    let dbs: Vec<&String> = found.keys().collect();
    let mut schemas = BTreeMap::new();
    for chunk in dbs.chunks(p.plan.jobs.max(1)) {
        let dumped: Vec<Result<(String, String)>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|db| s.spawn(|| schema_dump(p, &target, db).map(|d| ((*db).clone(), d))))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Worker("pg_dump".into())))
                })
                .collect()
        });
        for d in dumped {
            let (db, text) = d?;
            schemas.insert(db, text);
        }
    }
    Ok((found, schemas))
}

fn schema_dump(p: &Prepared, target: &db::Target, dbname: &str) -> Result<String> {
    let mut args = vec![
        "--schema-only".to_string(),
        "-h".into(),
        target.socket_dir.display().to_string(),
        "-p".into(),
        target.port.to_string(),
        "-U".into(),
        target.users[0].clone(),
        "-d".into(),
        dbname.to_string(),
    ];
    if p.plan.new.major >= 18 {
        // 18: statistics are dumped unless told not to; ANALYZE changes them.
        args.push("--no-statistics".into());
    }
    let out = p.runner.run(
        &p.new.bindir.join("pg_dump"),
        &args,
        &Opts {
            log_name: Some("pg_dump-schema"),
            ..Opts::default()
        },
    )?;
    Ok(proof::normalize_schema(&String::from_utf8_lossy(
        &out.stdout,
    )))
}

/// Runs the user's smoke queries on the upgraded copy (psql, stopping at the first error,
/// with each statement's time), as the owner: the file must be readable by the owner.
fn smoke(p: &Prepared, file: &Path, socket: &Path, port: u16) -> Smoke {
    let file = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let path = file.display().to_string();
    let args = crate::steps::step::psql_args(
        p,
        socket,
        port,
        "postgres",
        &["-c", "\\timing on", "-f", &path],
    );
    let started = Instant::now();
    let out = p.runner.run_unchecked(
        &p.new.psql(),
        &args,
        &Opts {
            log_name: Some("smoke-sql"),
            ..Opts::default()
        },
    );
    let seconds = started.elapsed().as_secs_f64();
    match out {
        Ok(o) => Smoke {
            file,
            ok: o.status.success(),
            seconds,
            output: format!("{}{}", o.stdout(), o.stderr())
                .trim_end()
                .to_string(),
        },
        Err(e) => Smoke {
            file,
            ok: false,
            seconds,
            output: e.to_string(),
        },
    }
}

/// Test-only damage (fault point `rehearse:delete-row`): one row of the first table that
/// has rows is deleted from the upgraded copy, between the two captures.
fn delete_a_row(p: &Prepared, before: &Capture, socket: &Path, port: u16) -> Result<()> {
    let Some((db, table)) = before.iter().find_map(|(db, proof)| {
        proof
            .tables
            .iter()
            .find(|(_, r)| r.count > 0)
            .map(|(t, _)| (db.clone(), t.clone()))
    }) else {
        return Ok(());
    };
    let sql =
        format!("DELETE FROM ONLY {table} WHERE ctid = (SELECT ctid FROM ONLY {table} LIMIT 1)");
    let args = crate::steps::step::psql_args(p, socket, port, &db, &["-c", &sql]);
    p.runner
        .run(
            &p.new.psql(),
            &args,
            &Opts {
                log_name: Some("fault-delete-row"),
                ..Opts::default()
            },
        )
        .map(|_| ())
}
