//! After the new server starts: recreate the physical replication slots the user asked for
//! (`--slots recreate-physical`) under their old names, reserving WAL from now on, so that
//! standbys rebuilt from the new primary find their slot. pg_upgrade never carries physical
//! slots.
//!
//! Idempotent (a resumed upgrade runs it again) and outside the window: a failure is a
//! warning with the statement to run by hand, never a rollback.

use std::path::Path;

use crate::error::Finding;
use crate::exec::process::Opts;

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
