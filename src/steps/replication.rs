//! After the new server starts: recreate the physical replication slots the user asked for
//! (`--slots recreate-physical`) under their old names, reserving WAL from now on, so that
//! standbys rebuilt from the new primary find their slot. pg_upgrade never carries physical
//! slots. With `--subscriptions resume`: resume the subscriptions of an old cluster before 17
//! (the statements the report would print, when the state recorded before the window allows
//! it), and enable those of a 17+ one that were enabled before and arrived disabled.
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
            enable_carried(run, socket, s, resume)
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

/// The statements of the report, run in order; stops at the first failure.
fn resume_one(run: &Run<'_>, socket: &Path, s: &Subscription, lsn: Option<&str>) -> (bool, String) {
    let statements = resume_statements(s, lsn);
    for (i, sql) in statements.iter().enumerate() {
        if let Err(e) = psql_new(run, socket, &s.database, sql, "resume-subscriptions") {
            return (
                false,
                format!(
                    "statement {} of {} failed ({sql}): {e}; the statements before it ran, run the rest from number {} below",
                    i + 1,
                    statements.len(),
                    i + 1
                ),
            );
        }
    }
    let slot = s.slot.as_deref().unwrap_or(&s.name);
    (
        true,
        format!(
            "resumed by pgleap (--subscriptions resume): its origin set to {}, the last publisher transaction applied before the stop; its {} tables recorded as ready without a copy (REFRESH PUBLICATION WITH (copy_data = false), through a slot that does not exist so that no change was consumed before); then it streams again from its slot '{slot}' on the publisher, which kept every change since. Nothing is lost or applied twice",
            lsn.unwrap_or("?"),
            s.tables
        ),
    )
}

/// A 17+ subscription, carried by pg_upgrade: enabled when it was enabled before and
/// arrived disabled; its state on the new cluster said either way.
fn enable_carried(
    run: &Run<'_>,
    socket: &Path,
    s: &Subscription,
    may_enable: bool,
) -> (bool, String) {
    let literal = format!("'{}'", s.name.replace('\'', "''"));
    let state_sql = format!(
        "SELECT s.subenabled, (SELECT count(*) FILTER (WHERE r.srsubstate = 'r') || ' of ' || count(*) FROM pg_catalog.pg_subscription_rel r WHERE r.srsubid = s.oid) \
         FROM pg_catalog.pg_subscription s WHERE s.subname = {literal} \
         AND s.subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())"
    );
    let state = |run: &Run<'_>| -> Option<(bool, String)> {
        let out = psql_new(run, socket, &s.database, &state_sql, "resume-subscriptions").ok()?;
        let (enabled, ready) = out.trim().split_once('|')?;
        Some((enabled == "t", ready.to_string()))
    };
    let Some((enabled, ready)) = state(run) else {
        return (
            false,
            "its state on the new cluster could not be read".into(),
        );
    };
    if enabled || !s.enabled || !may_enable {
        let how = if enabled {
            "enabled"
        } else {
            "disabled, as it was before"
        };
        return (
            enabled,
            format!("on the new cluster: {how}, {ready} tables ready"),
        );
    }
    let sql = format!(
        "ALTER SUBSCRIPTION \"{}\" ENABLE",
        s.name.replace('"', "\"\"")
    );
    match psql_new(run, socket, &s.database, &sql, "resume-subscriptions") {
        Ok(_) => (
            true,
            format!(
                "it arrived disabled; enabled by pgleap (--subscriptions resume), as it was before; {ready} tables ready"
            ),
        ),
        Err(e) => (
            false,
            format!("it arrived disabled and could not be enabled: {e}"),
        ),
    }
}
