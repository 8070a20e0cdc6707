//! What a rehearsal predicts and proves, computed from what it measured: the downtime of
//! the real run, the verdict of the proof, the `pgleap upgrade` command that matches it.

use serde::Serialize;

use crate::error::Finding;
use crate::inspect::db;
use crate::inspect::proof::{Item, Pressure, Verdict};
use crate::inspect::space::human;
use crate::plan::args::CheckArgs;
use crate::plan::prepare::Prepared;
use crate::state::journal::StepRecord;
use crate::steps::rehearse_copy::{Method, Scratch, live_target};

#[derive(Debug, Serialize)]
pub(crate) struct CopyReport {
    pub(crate) method: Method,
    pub(crate) description: &'static str,
    pub(crate) bytes: u64,
    pub(crate) reflinked_files: u64,
    pub(crate) seconds: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Downtime {
    /// stop-old → pg_upgrade → start-new, measured on the copy.
    pub(crate) measured_seconds: f64,
    /// The old server's shutdown checkpoint, estimated from what it has to write now.
    pub(crate) checkpoint_seconds: f64,
    /// pg_upgrade copying relation files in the real run's mode (the copy used links).
    pub(crate) file_copy_seconds: f64,
    pub(crate) predicted_seconds: f64,
    pub(crate) basis: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ProofReport {
    pub(crate) equal: bool,
    pub(crate) compared: usize,
    pub(crate) differences: Vec<Item>,
    pub(crate) updated: Vec<Item>,
    pub(crate) items: Vec<Item>,
}

/// The upgraded copy's pipeline results.
pub(crate) struct Pipeline {
    pub(crate) steps: Vec<StepRecord>,
    pub(crate) window: f64,
    pub(crate) warnings: Vec<Finding>,
}

/// Assumed write rate of a shutdown checkpoint, and of pg_upgrade's file copy when the
/// rehearsal's own copy did not measure this machine's.
const WRITE_RATE: f64 = 200.0 * 1024.0 * 1024.0;

fn rate_text(bytes_per_second: f64) -> String {
    format!("{:.0} MiB/s", bytes_per_second / (1024.0 * 1024.0))
}

/// What the live old server would write at a shutdown checkpoint now; nothing for a
/// stopped one (best effort: unknown counts as nothing, and the basis says so).
pub(crate) fn real_pressure(p: &Prepared) -> Option<Pressure> {
    if !p.plan.old_running {
        return None;
    }
    let target = live_target(p).ok()?;
    db::call::<Pressure>(&p.runner, &["pressure"], &target)
        .inspect_err(|e| tracing::warn!("cannot read the old server's checkpoint pressure: {e}"))
        .ok()
}

#[allow(clippy::cast_precision_loss)]
pub(crate) fn downtime(
    p: &Prepared,
    pipeline: &Pipeline,
    pressure: Option<&Pressure>,
    copy: &CopyReport,
) -> Downtime {
    let mut basis = vec![format!(
        "stop-old, pg_upgrade --link and start-new measured on the copy: {:.2}s",
        pipeline.window
    )];
    let checkpoint_bytes = match pressure {
        None if p.plan.old_running => {
            basis.push("the old server's checkpoint load could not be read".into());
            0
        }
        None => 0,
        Some(pr) => match (pr.dirty_bytes, pr.wal_since_checkpoint) {
            (Some(d), _) => {
                basis.push(format!(
                    "shutdown checkpoint: {} dirty in shared buffers (pg_buffercache) at {}",
                    human(d),
                    rate_text(WRITE_RATE)
                ));
                d
            }
            (None, Some(w)) => {
                let b = pr.shared_buffers.map_or(w, |s| w.min(s));
                basis.push(format!(
                    "shutdown checkpoint: {} of WAL since the last checkpoint (at most shared_buffers) at {}; pgleap's CHECKPOINT before the stop writes most of it while clients are still served, so this is an upper bound",
                    human(w),
                    rate_text(WRITE_RATE)
                ));
                b
            }
            (None, None) => 0,
        },
    };
    let checkpoint_seconds = checkpoint_bytes as f64 / WRITE_RATE;
    let file_copy_seconds = if p.plan.mode.copies_data() {
        // Only a file copy measures this machine's copying: pg_basebackup's time holds a
        // checkpoint and WAL streaming, a reflinked copy copies nothing.
        let measured = copy.method == Method::FileCopy
            && copy.reflinked_files == 0
            && copy.seconds > 0.5
            && copy.bytes > 0;
        let rate = if measured {
            copy.bytes as f64 / copy.seconds
        } else {
            WRITE_RATE
        };
        basis.push(format!(
            "--{} copies {} of relation files at {} ({})",
            p.plan.mode.name(),
            human(p.plan.user_relation_bytes),
            rate_text(rate),
            if measured {
                "the rate of the rehearsal's own copy"
            } else {
                "assumed"
            }
        ));
        p.plan.user_relation_bytes as f64 / rate
    } else {
        0.0
    };
    Downtime {
        measured_seconds: pipeline.window,
        checkpoint_seconds,
        file_copy_seconds,
        predicted_seconds: pipeline.window + checkpoint_seconds + file_copy_seconds,
        basis,
    }
}

pub(crate) fn proof_report(items: Vec<Item>) -> ProofReport {
    let differences: Vec<Item> = items
        .iter()
        .filter(|i| i.verdict == Verdict::Different)
        .cloned()
        .collect();
    let updated: Vec<Item> = items
        .iter()
        .filter(|i| i.verdict == Verdict::Updated)
        .cloned()
        .collect();
    ProofReport {
        equal: differences.is_empty(),
        compared: items.len(),
        differences,
        updated,
        items,
    }
}

/// The `pgleap upgrade` command that runs what was rehearsed.
pub(crate) fn upgrade_command(args: &CheckArgs, p: &Prepared) -> String {
    let plan = &p.plan;
    let mut a: Vec<String> = vec!["pgleap".into(), "upgrade".into()];
    let mut opt = |name: &str, value: String| {
        a.push(name.into());
        a.push(value);
    };
    if let Some(c) = &args.target.cluster {
        opt("--cluster", c.to_string());
    } else {
        opt("--old-datadir", plan.old.datadir.display().to_string());
    }
    if let Some(r) = &args.target.root {
        opt("--root", r.display().to_string());
    }
    opt("--new-datadir", plan.new.datadir.display().to_string());
    opt("--old-bindir", plan.old.bindir.display().to_string());
    opt("--new-bindir", plan.new.bindir.display().to_string());
    opt("--mode", plan.mode.name().to_string());
    opt("--jobs", plan.jobs.to_string());
    if plan.collations.mode != crate::plan::collations::CollationMode::Report {
        opt("--collations", plan.collations.mode.name().to_string());
    }
    if let Some(u) = &args.username {
        opt("--username", u.clone());
    }
    if let Some(c) = &args.stop_command {
        opt("--stop-command", c.clone());
    }
    if let Some(c) = &args.start_command {
        opt("--start-command", c.clone());
    }
    shell_words::join(a)
}

/// How to start the kept, upgraded copy: fenced, as the owner, since its carried
/// configuration would otherwise listen where the real server does.
pub(crate) fn kept_note(p: &Prepared, scratch: &Scratch) -> String {
    let new = scratch.new_datadir();
    format!(
        "The upgraded copy is kept in {}. Start it fenced, as {}: {} start -D {} -l {} -o \"-p 50432 -c listen_addresses='' -c unix_socket_directories='{}'\" (then connect with -h {} -p 50432); remove {} when done.",
        new.display(),
        p.runner.owner().name,
        p.new.bindir.join("pg_ctl").display(),
        new.display(),
        scratch.logs().join("server-kept.log").display(),
        scratch.dir.display(),
        scratch.dir.display(),
        scratch.dir.display()
    )
}
