//! Around the window. Before the old server stops (17+): the logical slots pg_upgrade is to
//! carry are checked again, since clients kept writing after the preflight; a consumer far
//! behind is waited for (bounded, with progress), a slot with changes nobody will consume
//! refuses the upgrade while the old server still runs. After the new server starts: recreate the physical replication slots the user asked for
//! (`--slots recreate-physical`) under their old names, reserving WAL from now on, so that
//! standbys rebuilt from the new primary find their slot. pg_upgrade never carries physical
//! slots.
//!
//! Idempotent (a resumed upgrade runs it again) and outside the window: a failure is a
//! warning with the statement to run by hand, never a rollback.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Finding, Result};
use crate::exec::postmaster::{self, Liveness};
use crate::exec::process::Opts;
use crate::inspect::db;
use crate::inspect::replication::Replication;
use crate::preflight::replication::{Fate, decide};

use super::step::{Run, superuser};

pub(crate) fn recreate_physical_slots(run: &mut Run<'_>, socket: &Path) {
    let p = run.p;
    let Some(section) = &p.plan.replication else {
        return;
    };
    for name in section.to_recreate() {
        let literal = format!("'{}'", name.replace('\'', "''"));
        let sql = format!(
            "SELECT pg_catalog.pg_create_physical_replication_slot({literal}, true) \
             WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_replication_slots WHERE slot_name = {literal})"
        );
        let args = [
            "-X".to_string(),
            "-v".into(),
            "ON_ERROR_STOP=1".into(),
            "-h".into(),
            socket.display().to_string(),
            "-p".into(),
            p.plan.new.port.to_string(),
            "-U".into(),
            superuser(p),
            "-d".into(),
            "postgres".into(),
            "-c".into(),
            sql.clone(),
        ];
        let opts = Opts {
            log_name: Some("recreate-slots"),
            ..Opts::default()
        };
        match p.runner.run(&p.new.psql(), &args, &opts) {
            Ok(_) => run.ui.line(&format!(
                "      recreated physical replication slot '{name}'"
            )),
            Err(e) => run.warnings.push(Finding::warning(
                "slot-recreate-failed",
                format!("could not recreate the physical replication slot '{name}': {e}"),
                format!("Run it on the new cluster: {sql}"),
            )),
        }
    }
}

/// How long a consumer far behind is waited for before the old server stops.
const CATCH_UP: Duration = Duration::from_secs(120);

/// Before stop-old: refuses (the caller rolls back, the old server still serving) when a
/// logical slot that pg_upgrade is to carry has fallen behind since the preflight.
pub(crate) fn check_slots_before_stop(run: &Run<'_>) -> Result<()> {
    let p = run.p;
    let Some(section) = &p.plan.replication else {
        return Ok(());
    };
    let carried = section.slots.iter().any(|(_, f)| *f == Fate::Kept);
    let Liveness::Running(pm) = postmaster::liveness(&p.plan.old.datadir) else {
        return Ok(());
    };
    let Some(socket) = pm.socket_dir.filter(|_| carried) else {
        return Ok(());
    };
    let users = vec![superuser(p), p.runner.owner().name.clone()];
    let target = db::Target::new(&socket, pm.port.unwrap_or(p.plan.old.port), users);
    let majors = (p.plan.old.major, p.plan.new.major);
    let started = Instant::now();
    let mut said = Instant::now();
    loop {
        let facts: Replication = db::call(&p.runner, &["slots"], &target)?;
        let mut findings = Vec::new();
        decide(&facts, majors, section.policies, &mut findings);
        findings.retain(|f| {
            f.code == "replication-slot-behind" && f.severity == crate::error::Severity::Error
        });
        if findings.is_empty() {
            return Ok(());
        }
        // Only a connected consumer can still catch up.
        let waiting: Vec<String> = facts
            .slots
            .iter()
            .filter(|s| s.is_logical() && s.active && s.lag_bytes.is_some_and(|l| l > 0))
            .map(|s| {
                format!(
                    "'{}' {} KiB behind",
                    s.name,
                    s.lag_bytes.unwrap_or(0) / 1024
                )
            })
            .collect();
        let inactive_behind = facts
            .slots
            .iter()
            .any(|s| s.is_logical() && !s.active && s.pending_changes == Some(true));
        if inactive_behind || waiting.is_empty() || started.elapsed() > CATCH_UP {
            return Err(Error::Refused { findings });
        }
        if said.elapsed() > Duration::from_secs(5) {
            run.ui.line(&format!(
                "      waiting for logical replication consumers to catch up: {}",
                waiting.join(", ")
            ));
            said = Instant::now();
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
