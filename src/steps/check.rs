//! Before the window: `pg_upgrade --check` against the new cluster, while the old server
//! still serves. When `auto` chose copy-file-range and pg_upgrade's own probe refuses it, the
//! plan falls back to copy here, journaled, and the check runs again: still before the window.

use std::path::Path;

use crate::error::Result;
use crate::exec::ownerfs;
use crate::plan::Mode;
use crate::preflight::mode;
use crate::state::journal::State;

use super::pg_upgrade::pg_upgrade;
use super::step::{Phase, Run, Step, Undoing};

pub(crate) struct Check;

impl Step for Check {
    fn name(&self) -> &'static str {
        "check"
    }
    fn reaches(&self) -> State {
        State::Checked
    }
    fn phase(&self) -> Phase {
        Phase::Serving
    }

    fn run(&self, run: &mut Run<'_>) -> Result<()> {
        let new = run.p.plan.new.datadir.clone();
        let confdir = run.p.plan.new.conf_dir();
        // Timed for the downtime estimate, with initdb's time: pg_upgrade --check and the
        // collation probe start servers and read every database's catalog as the window
        // does. Not after a fallback, which ran the check twice.
        let (judged, fell_back, secs) = run.step(self, "pg_upgrade --check", |r| {
            let started = std::time::Instant::now();
            let fell_back = check_in_journaled_mode(r, &new, &confdir)?;
            let checked = started.elapsed();
            carried_config_loads(r.p, &confdir, &new, &r.log_dir)?;
            let started = std::time::Instant::now();
            let judged = super::collations::check_new(r, &confdir, &new)?;
            Ok((
                judged,
                fell_back,
                (checked + started.elapsed()).as_secs_f64(),
            ))
        })?;
        if let Some(e) = run.estimate.take() {
            let inputs = &run.journal.record.plan.downtime_inputs;
            run.estimate = Some(if fell_back {
                e
            } else {
                let e = e.with_check(inputs, secs);
                run.ui.line(&format!(
                    "      downtime estimate: {:.1}s ({})",
                    e.seconds, e.basis
                ));
                e
            });
        }
        if let Some(s) = judged {
            // What the collations step after the window repairs, also in a resumed upgrade.
            run.journal.record.plan.collations = s;
            run.journal.write()?;
        }
        Ok(())
    }

    /// pg_upgrade --check starts the new cluster: a server it left there is stopped.
    fn undo(&self, u: &mut Undoing<'_>) -> Result<()> {
        u.stop_new_fenced()
    }
}

/// `pg_upgrade --check` in the journaled mode. When it refuses the copy-file-range that `auto`
/// chose, the journal's plan falls back to copy (the pg_upgrade step reads its mode from
/// there) before the check runs again with `--copy`. True when it fell back.
fn check_in_journaled_mode(r: &mut Run<'_>, new: &Path, confdir: &Path) -> Result<bool> {
    let (work_dir, mode) = (&r.p.plan.work_dir, r.journal.record.plan.mode);
    let Err(e) = pg_upgrade(r.p, mode, new, confdir, work_dir, &r.log_dir, true) else {
        return Ok(false);
    };
    let Some(refusal) = mode::copy_file_range_refused(&r.journal.record.plan, &e) else {
        return Err(e);
    };
    // pg_upgrade removes its probe's file only when the probe succeeds.
    let probe = new.join("PG_VERSION.copy_file_range_test");
    if probe.symlink_metadata().is_ok() {
        ownerfs::remove_file_as(r.p.runner.owner(), &probe)?;
    }
    mode::fall_back_to_copy(&mut r.journal.record.plan, &refusal);
    r.journal.write()?;
    // The estimate initdb scaled to this machine, for the copy that will run.
    if let Some(e) = r.estimate.take() {
        let inputs = &r.journal.record.plan.downtime_inputs;
        r.estimate = Some(e.redone(inputs));
    }
    r.ui.line(&format!(
        "      pg_upgrade --check refused --copy-file-range ({refusal}): falling back to --copy, before the window"
    ));
    pg_upgrade(r.p, Mode::Copy, new, confdir, work_dir, &r.log_dir, true).map(|_| true)
}

/// Starts the new cluster once with the configuration files it carries, as they will serve
/// (`pg_hba.conf` and `pg_ident.conf` included: the fenced starts of the check and of
/// pg_upgrade use private ones), and stops it. A file the new server cannot load (a
/// `pg_hba.conf` edited since the old server last reloaded it, an SSL key that is gone) would
/// otherwise stop the new server from starting inside the window; it is refused here, with
/// the server's own words.
pub(crate) fn carried_config_loads(
    p: &crate::plan::prepare::Prepared,
    confdir: &Path,
    datadir: &Path,
    logs: &Path,
) -> Result<()> {
    use crate::exec::ownerfs::{Follow, READ_LIMIT, read_regular_text};
    use crate::exec::server::{self, Fence};
    let fence = Fence::new(p.runner.owner())?;
    let port = server::spare_port(50434, p.plan.old.port);
    let log = logs.join("server-config-check.log");
    match server::start_with_own_files(&p.runner, &p.new.bindir, confdir, (&fence, port), &log) {
        Ok(()) => server::stop(&p.runner, &p.new.bindir, datadir),
        Err(e) => {
            let text = read_regular_text(&log, Follow::No, READ_LIMIT).unwrap_or_default();
            let Some(why) = rejection(&text) else {
                return Err(e);
            };
            // Name the old cluster's files, which the user edits, not their carried copies.
            let old = &p.plan.old;
            let why = why
                .replace(
                    &confdir.display().to_string(),
                    &old.conf_dir().display().to_string(),
                )
                .replace(
                    &datadir.display().to_string(),
                    &old.datadir.display().to_string(),
                );
            Err(crate::error::Error::from(crate::error::Finding::error(
                "new-config-rejected",
                format!(
                    "PostgreSQL {} does not start with the configuration carried from the old cluster ({why}); the old server, once stopped, would most likely not start with it either",
                    p.new.major
                ),
                format!(
                    "Correct the file in the old cluster (the old server still runs with what it loaded before the file changed; SELECT * FROM pg_hba_file_rules WHERE error IS NOT NULL lists the errors in pg_hba.conf), reload it, then run pgleap again. The new server's log: {}",
                    log.display()
                ),
            )))
        }
    }
}

/// The server's reason for not starting, from its log: its FATAL line and the LOG lines just
/// before it that name a file and line (`invalid CIDR mask ...`, `line 127 of configuration
/// file ...`), without timestamps.
fn rejection(log: &str) -> Option<String> {
    let strip = |l: &str| {
        ["FATAL:", "LOG:", "CONTEXT:", "DETAIL:", "HINT:"]
            .iter()
            .find_map(|k| l.split_once(k).map(|(_, rest)| rest.trim().to_string()))
    };
    let lines: Vec<&str> = log.lines().collect();
    let fatal = lines.iter().position(|l| l.contains("FATAL:"))?;
    let start = lines[..fatal]
        .iter()
        .rposition(|l| l.contains("listening on") || l.contains("starting PostgreSQL"))
        .map_or(0, |i| i + 1);
    let parts: Vec<String> = lines[start..=fatal]
        .iter()
        .filter_map(|l| strip(l))
        .collect();
    Some(parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::rejection;

    #[test]
    fn the_rejection_is_the_fatal_line_and_what_led_to_it() {
        let log = "2026-12-02 09:22:52.801 UTC [7253] LOG:  starting PostgreSQL 17.11 on x86_64\n\
            2026-12-02 09:22:52.802 UTC [7253] LOG:  listening on Unix socket \"/tmp/x/.s.PGSQL.5432\"\n\
            2026-12-02 09:22:52.803 UTC [7253] LOG:  invalid CIDR mask in address \"1.2.3.4/40\"\n\
            2026-12-02 09:22:52.803 UTC [7253] CONTEXT:  line 127 of configuration file \"/d/17/pg_hba.conf\"\n\
            2026-12-02 09:22:52.803 UTC [7253] FATAL:  could not load /d/17/pg_hba.conf\n\
            2026-12-02 09:22:52.806 UTC [7253] LOG:  database system is shut down\n";
        assert_eq!(
            rejection(log).as_deref(),
            Some(
                "invalid CIDR mask in address \"1.2.3.4/40\"; line 127 of configuration file \"/d/17/pg_hba.conf\"; could not load /d/17/pg_hba.conf"
            )
        );
        assert_eq!(rejection("LOG:  database system is ready\n"), None);
    }
}
