//! After the new server starts: recreate the physical replication slots the user asked for
//! (`--slots recreate-physical`) under their old names, reserving WAL from now on, so that
//! standbys rebuilt from the new primary find their slot. pg_upgrade never carries physical
//! slots. With `--subscriptions resume`: resume the subscriptions of an old cluster before 17
//! (the statements the report would print, when the state recorded before the window allows
//! it), then check that each streams from the publisher (disabled again when it does not).
//! The subscriptions of a 17+ one are read back: pg_upgrade kept their enabled state.
//!
//! Idempotent (a resumed upgrade runs it again) and outside the window: a failure is a
//! warning with the statement to run by hand, never a rollback.

use std::path::Path;

use crate::error::{Finding, Result};
use crate::exec::process::Opts;
use crate::inspect::replication::Subscription;
use crate::preflight::replication::{SubscriptionOutcome, SubscriptionPolicy, resume_allowed};
use crate::ui::replication::{origin_lsn, resume_statements};

use super::step::{Run, psql_args};

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
        let args = psql_args(p, socket, p.plan.new.port, "postgres", &["-c", &sql]);
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

/// One statement on the new cluster through psql, as its superuser; psql's unaligned output.
fn psql_new(
    run: &Run<'_>,
    socket: &Path,
    db: &str,
    sql: &str,
    log: &'static str,
) -> Result<String> {
    let p = run.p;
    let args = psql_args(p, socket, p.plan.new.port, db, &["-At", "-c", sql]);
    let opts = Opts {
        log_name: Some(log),
        ..Opts::default()
    };
    let out = p.runner.run(&p.new.psql(), &args, &opts)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// After the new start: with `--subscriptions resume`, each subscription of an old cluster
/// before 17 resumed when its recorded state allows it; a 17+ one read back (and enabled
/// with the opt-in, when it was enabled before and arrived disabled). What happened is
/// journaled for the report. Idempotent: one already handled (a resumed upgrade) is left
/// alone.
pub(crate) fn resume_subscriptions(run: &mut Run<'_>, socket: &Path) -> Result<()> {
    let p = run.p;
    let Some(section) = &p.plan.replication else {
        return Ok(());
    };
    let resume = section.policies.subscriptions == SubscriptionPolicy::Resume;
    // 17+: what pg_upgrade carried is read back whatever the policy.
    if !resume && p.plan.old.major < 17 {
        return Ok(());
    }
    let origins = (p.plan.old.major < 17)
        .then(|| {
            crate::inspect::replication::read_origin_progress(&p.plan.owner, &p.plan.old.datadir)
        })
        .flatten();
    for s in &section.facts.subscriptions {
        let key = format!("{}.{}", s.database, s.name);
        if run
            .journal
            .record
            .replication
            .subscriptions
            .iter()
            .any(|d| d.name == key)
        {
            continue;
        }
        let (resumed, note) = if p.plan.old.major >= 17 {
            enable_carried(run, socket, s)
        } else {
            let lsn = origin_lsn(s, origins.as_deref());
            match resume_allowed(s, lsn.as_deref()) {
                Err(why) => (false, why),
                Ok(()) => resume_one(run, socket, s, lsn.as_deref()),
            }
        };
        run.ui.line(&format!(
            "      subscription {key}: {}",
            if resumed || p.plan.old.major >= 17 {
                note.clone()
            } else {
                format!("not resumed: {note}")
            }
        ));
        run.journal
            .record
            .replication
            .subscriptions
            .push(SubscriptionOutcome {
                name: key,
                resumed,
                note,
            });
        run.journal.write()?;
    }
    Ok(())
}

/// How long a resumed subscription's apply worker is given to stream from the publisher.
const STREAMING: std::time::Duration = std::time::Duration::from_secs(20);

/// The statements of the report, run in order; stops at the first failure. Then its apply
/// worker must stream from the publisher's slot: otherwise (the slot gone from the
/// publisher, the publisher unreachable) the subscription is disabled again, so that nothing
/// is left enabled that does not replicate, and the note says what ran and what is left.
fn resume_one(run: &Run<'_>, socket: &Path, s: &Subscription, lsn: Option<&str>) -> (bool, String) {
    let statements = resume_statements(s, lsn);
    let slot = s.slot.as_deref().unwrap_or(&s.name);
    for (i, sql) in statements.iter().enumerate() {
        if let Err(e) = psql_new(run, socket, &s.database, sql, "resume-subscriptions") {
            let e = one_line(&e);
            let ran = match i {
                0 => "none of the statements before it ran".to_string(),
                1 => "statement 1 ran".to_string(),
                _ => format!("statements 1 to {i} ran"),
            };
            return (
                false,
                format!(
                    "statement {} of {} failed ({sql}): {e}; {ran}{}; each can be run again: run all of them, from number 1, once the cause is fixed",
                    i + 1,
                    statements.len(),
                    disabled_again(run, socket, s, enabled_by(&statements[..i])),
                ),
            );
        }
    }
    if !streams(run, socket, s) {
        return (
            false,
            format!(
                "the {} statements below ran, but its apply worker did not stream from the publisher within {}s (the new server's log says why: for a slot gone from the publisher, replication slot \"{slot}\" does not exist){}; once the cause is fixed, run only ALTER SUBSCRIPTION {} ENABLE. If the publisher's slot '{slot}' is gone, the changes it kept since the old cluster stopped are gone with it: those rows must be brought over another way",
                statements.len(),
                STREAMING.as_secs(),
                disabled_again(run, socket, s, true),
                crate::ui::replication::sql_ident(&s.name),
            ),
        );
    }
    (
        true,
        format!(
            "resumed by pgleap (--subscriptions resume): its origin set to {}, the last publisher transaction applied before the stop; its {} tables recorded as ready without a copy (REFRESH PUBLICATION WITH (copy_data = false), through a slot that does not exist so that no change was consumed before); then it streams again from its slot '{slot}' on the publisher, which kept every change since. Nothing is lost or applied twice",
            lsn.unwrap_or("?"),
            s.tables
        ),
    )
}

/// Whether the subscription's apply worker receives from the publisher within
/// [`STREAMING`] (the walsender's first keepalive sets `received_lsn`), asked in one session
/// that polls the workers' live state.
fn streams(run: &Run<'_>, socket: &Path, s: &Subscription) -> bool {
    let rounds = STREAMING.as_millis() / 500;
    let sql = format!(
        "DO $pgleap$ BEGIN FOR i IN 1..{rounds} LOOP \
         IF EXISTS (SELECT FROM pg_catalog.pg_stat_subscription st JOIN pg_catalog.pg_subscription su ON su.oid = st.subid \
         JOIN pg_catalog.pg_database d ON d.oid = su.subdbid AND d.datname = current_database() \
         WHERE su.subname = {} AND st.relid IS NULL AND st.received_lsn IS NOT NULL) THEN RETURN; END IF; \
         PERFORM pg_catalog.pg_sleep(0.5); END LOOP; \
         RAISE EXCEPTION 'its apply worker does not stream'; END $pgleap$",
        crate::ui::replication::sql_literal(&s.name)
    );
    psql_new(run, socket, &s.database, &sql, "resume-subscriptions").is_ok()
}

/// An error as one line of the report (psql's message spans several).
fn one_line(e: &crate::error::Error) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether the statements that ran left the subscription enabled.
fn enabled_by(ran: &[String]) -> bool {
    ran.iter()
        .rev()
        .find(|q| q.ends_with(" ENABLE") || q.ends_with(" DISABLE"))
        .is_some_and(|q| q.ends_with(" ENABLE"))
}

/// After a failed resume: disables the subscription again when the statements had enabled
/// it (`enabled`), and says so.
fn disabled_again(run: &Run<'_>, socket: &Path, s: &Subscription, enabled: bool) -> String {
    if !enabled {
        return "; it is disabled".into();
    }
    let name = crate::ui::replication::sql_ident(&s.name);
    match psql_new(
        run,
        socket,
        &s.database,
        &format!("ALTER SUBSCRIPTION {name} DISABLE"),
        "resume-subscriptions",
    ) {
        Ok(_) => "; pgleap disabled it again".into(),
        Err(e) => format!(
            "; it is still enabled: disabling it again failed ({}): run ALTER SUBSCRIPTION {name} DISABLE",
            one_line(&e)
        ),
    }
}

/// A 17+ subscription, carried by pg_upgrade with its enabled state: its state on the new
/// cluster said. One enabled before the window that arrived disabled was disabled before the
/// stop (by hand, or by `disable_on_error`): pgleap leaves it so.
fn enable_carried(run: &Run<'_>, socket: &Path, s: &Subscription) -> (bool, String) {
    let literal = crate::ui::replication::sql_literal(&s.name);
    let state_sql = format!(
        "SELECT s.subenabled, (SELECT count(*) FILTER (WHERE r.srsubstate = 'r') || ' of ' || count(*) FROM pg_catalog.pg_subscription_rel r WHERE r.srsubid = s.oid) \
         FROM pg_catalog.pg_subscription s WHERE s.subname = {literal} \
         AND s.subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())"
    );
    let state = psql_new(run, socket, &s.database, &state_sql, "resume-subscriptions")
        .ok()
        .and_then(|out| {
            let (enabled, ready) = out.trim().split_once('|')?;
            Some((enabled == "t", ready.to_string()))
        });
    let Some((enabled, ready)) = state else {
        return (
            false,
            "its state on the new cluster could not be read".into(),
        );
    };
    if enabled {
        return (
            true,
            format!("on the new cluster: enabled, {ready} tables ready"),
        );
    }
    if !s.enabled {
        return (
            false,
            format!("on the new cluster: disabled, as it was before, {ready} tables ready"),
        );
    }
    (
        false,
        format!(
            "on the new cluster: disabled, {ready} tables ready. It was enabled when pgleap read it before the window, and pg_upgrade keeps a subscription's enabled state, so it was disabled before the old server stopped (by hand, or by disable_on_error after an apply error); pgleap leaves it disabled. Once its cause is dealt with: ALTER SUBSCRIPTION {} ENABLE",
            crate::ui::replication::sql_ident(&s.name)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_after_an_enable_leaves_the_subscription_enabled() {
        let s = Subscription {
            name: "sub".into(),
            database: "postgres".into(),
            enabled: true,
            conninfo: String::new(),
            slot: Some("sub".into()),
            publications: vec!["pub".into()],
            tables_ready: 1,
            tables: 1,
            origin: "pg_1".into(),
            origin_id: Some(1),
        };
        let all = resume_statements(&s, Some("0/1000"));
        let at = |n: usize| enabled_by(&all[..n]);
        // SET slot_name, origin advance: still disabled; ENABLE, REFRESH: enabled; DISABLE,
        // SET slot_name: disabled; the final ENABLE.
        assert_eq!(
            (0..=all.len()).map(at).collect::<Vec<_>>(),
            [false, false, false, true, true, false, false, true]
        );
        let without_origin = resume_statements(&s, None);
        assert!(enabled_by(&without_origin[..2]), "{without_origin:?}");
    }
}
