//! What users read about replication: the plan's rows (what survives, before the window)
//! and the report's section (what was kept, recreated, dropped or disabled, and each
//! consumer's next step as commands to run).

use std::fmt::Write as _;

use crate::inspect::replication::{Slot, Subscription, host_port};
use crate::plan::Plan;
use crate::preflight::replication::{
    Fate, Outcome, Section, SubscriptionOutcome, describe_standby, standbys,
};

/// `(key, value)` rows for the plan.
pub(crate) fn plan_rows(plan: &Plan) -> Vec<(&'static str, String)> {
    let Some(r) = &plan.replication else {
        return Vec::new();
    };
    let old = plan.old.major;
    let mut rows = vec![(
        "replication",
        format!(
            "wal_level {}; {} slot(s), {} standby(s), {} subscription(s), {} publication(s)",
            r.facts.wal_level,
            r.facts.slots.len(),
            standbys(&r.facts).count(),
            r.facts.subscriptions.len(),
            r.facts.publications.len()
        ),
    )];
    for s in &r.facts.slots {
        let fate = match r.fate_of_slot(&s.name) {
            Some(Fate::Kept) => "kept by pg_upgrade (its consumer must have confirmed every change when the server stops)".to_string(),
            Some(Fate::Recreated) => "not carried; recreated empty on the new cluster after its start".into(),
            Some(Fate::Dropped) if s.is_logical() && old >= 17 => "has not caught up: dropped on the old cluster right before the stop (--slots drop)".into(),
            _ if s.is_logical() && old < 17 => format!("lost: pg_upgrade carries no slot from {old}"),
            _ => "lost: pg_upgrade never carries physical slots".into(),
        };
        rows.push(("slot", format!("{}: {fate}", slot_name(s))));
    }
    for s in &r.facts.subscriptions {
        let resume =
            r.policies.subscriptions == crate::preflight::replication::SubscriptionPolicy::Resume;
        let fate = match (old >= 17, resume) {
            (true, _) => "kept by pg_upgrade with its table states",
            (false, true) => {
                "arrives disabled without table states: pgleap resumes it after the start when its recorded state allows it (else the report says why and how)"
            }
            (false, false) => "arrives disabled without table states: resume it as the report says",
        };
        rows.push((
            "subscription",
            format!(
                "{}.{} from {}: {fate}",
                s.database,
                s.name,
                host_port(&s.conninfo)
            ),
        ));
    }
    for p in &r.facts.publications {
        rows.push((
            "publication",
            format!(
                "{}.{} ({}): kept (a catalog object)",
                p.database,
                p.name,
                if p.all_tables {
                    "all tables".to_string()
                } else {
                    format!("{} tables", p.tables)
                }
            ),
        ));
    }
    for s in standbys(&r.facts) {
        rows.push((
            "standby",
            format!(
                "{}: cannot follow the new major; {}",
                describe_standby(s),
                super::standby::plan_fate(plan, r, s)
            ),
        ));
    }
    rows
}

fn slot_name(s: &Slot) -> String {
    match (&s.plugin, &s.database) {
        (Some(p), Some(d)) => format!("'{}' (logical, {p}, database {d})", s.name),
        _ => format!("'{}' (physical)", s.name),
    }
}

/// How clients reach the new server: its socket directory, else this host.
fn host(r: &Section) -> String {
    r.socket_dir
        .as_ref()
        .map_or_else(|| r.hostname.clone(), |d| d.display().to_string())
}

/// A psql command against the new cluster, as its superuser.
fn psql(plan: &Plan, r: &Section, db: &str, sql: &str) -> String {
    psql_on(plan, r, (&plan.new.bindir, plan.new.port), db, sql)
}

/// A psql command against the cluster of `(bindir, port)`, as the superuser.
fn psql_on(
    plan: &Plan,
    r: &Section,
    (bindir, port): (&std::path::Path, u16),
    db: &str,
    sql: &str,
) -> String {
    let superuser = plan
        .initdb
        .as_ref()
        .map_or("postgres", |o| o.superuser.as_str());
    let bin = bindir.join("psql");
    shell_words::join([
        bin.display().to_string().as_str(),
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        &host(r),
        "-p",
        &port.to_string(),
        "-U",
        superuser,
        "-d",
        db,
        "-c",
        sql,
    ])
}

/// What a rollback says of the logical slots `--slots drop` dropped before the stop
/// (`dropped`: name, why). It does not recreate them: a slot created again starts at the
/// current position, and its consumer would go on from its own position without an error,
/// missing every change in between; recreating one is for resynchronizing its consumer.
pub(crate) fn rollback_notes(plan: &Plan, dropped: &[(String, String)]) -> Vec<String> {
    let Some(r) = &plan.replication else {
        return Vec::new();
    };
    dropped
        .iter()
        .map(|(name, _)| {
            let slot = r.facts.slots.iter().find(|s| s.name == *name);
            let plugin = slot.and_then(|s| s.plugin.as_deref()).unwrap_or("pgoutput");
            let db = slot.and_then(|s| s.database.as_deref()).unwrap_or("postgres");
            let confirmed = slot
                .and_then(|s| s.confirmed_flush_lsn.as_deref())
                .unwrap_or("its last position");
            let sql = format!(
                "SELECT pg_create_logical_replication_slot({}, {})",
                sql_literal(name),
                sql_literal(plugin)
            );
            format!(
                "logical replication slot '{name}' was dropped before the stop (--slots drop) and the rollback does not recreate it: a slot created now starts at the old cluster's current position, so its consumer, which had confirmed up to {confirmed}, would go on without an error and miss every change in between. Recreate it only to resynchronize that consumer from a fresh copy of the data:\n    {}",
                psql_on(plan, r, (&plan.old.bindir, plan.old.port), db, &sql)
            )
        })
        .collect()
}

/// The psql command creating a physical slot on the new primary, reserving WAL at once.
pub(crate) fn create_physical_slot(plan: &Plan, r: &Section, slot: &str) -> String {
    let sql = format!(
        "SELECT pg_create_physical_replication_slot({}, true)",
        sql_literal(slot)
    );
    psql(plan, r, "postgres", &sql)
}

pub(crate) fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub(crate) fn sql_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The report's replication section; `origins` is how far each replication origin of the
/// old cluster had applied when it stopped (origin id → LSN), when it could be read;
/// `outcome` what the upgrade did beyond the plan.
pub(crate) fn report(plan: &Plan, origins: Option<&[(i32, String)]>, outcome: &Outcome) -> String {
    let Some(r) = &plan.replication else {
        return String::new();
    };
    let mut out = String::from("Replication:\n");
    if let Some(fence) = &outcome.fence {
        let _ = writeln!(
            out,
            "  before the stop: {fence} (only replication connections and pgleap were admitted while the logical replication consumers confirmed every change)"
        );
    }
    for s in &r.facts.slots {
        let dropped = outcome.dropped.iter().find(|(n, _)| *n == s.name);
        slot_lines(&mut out, plan, r, s, dropped.map(|(_, why)| why.as_str()));
    }
    for s in &r.facts.subscriptions {
        let key = format!("{}.{}", s.database, s.name);
        let done = outcome.subscriptions.iter().find(|d| d.name == key);
        subscription_lines(&mut out, plan, r, s, origins, done);
    }
    for p in &r.facts.publications {
        let _ = writeln!(
            out,
            "  publication {}.{}: kept; subscribers reconnect once their slot exists on the new cluster",
            p.database, p.name
        );
    }
    standby_lines(&mut out, plan, r);
    out
}

fn slot_lines(out: &mut String, plan: &Plan, r: &Section, s: &Slot, dropped: Option<&str>) {
    let name = slot_name(s);
    let fate = if dropped.is_some() {
        Some(Fate::Dropped)
    } else {
        r.fate_of_slot(&s.name)
    };
    let rebuilt = super::standby::rebuilt_with_slot(r, &s.name);
    match fate {
        Some(Fate::Kept) => {
            let _ = writeln!(
                out,
                "  slot {name}: kept by pg_upgrade; its consumer reconnects to port {} and continues after {}",
                plan.new.port,
                s.confirmed_flush_lsn
                    .as_deref()
                    .unwrap_or("its confirmed position")
            );
        }
        Some(Fate::Recreated) => {
            let _ = writeln!(
                out,
                "  slot {name}: recreated on the new cluster (reserving WAL from its start); a standby rebuilt from the new primary uses it with primary_slot_name = '{}'",
                s.name
            );
        }
        _ if s.is_logical() => {
            let db = s.database.as_deref().unwrap_or("postgres");
            let plugin = s.plugin.as_deref().unwrap_or("pgoutput");
            let sql = format!(
                "SELECT pg_create_logical_replication_slot({}, {})",
                sql_literal(&s.name),
                sql_literal(plugin)
            );
            let when = dropped.map_or_else(String::new, |why| {
                format!(" on the old cluster right before the stop (--slots drop: {why})")
            });
            let _ = writeln!(
                out,
                "  slot {name}: dropped{when} (its consumer had confirmed up to {}). Recreate it with:\n    {}\n    Why: it starts at the new cluster's current position: changes written on the new cluster before it exists never reach its consumer, so resynchronize the consumer from a fresh copy of the data (a subscriber: re-create its subscription with copy_data = true).",
                s.confirmed_flush_lsn.as_deref().unwrap_or("nothing"),
                psql(plan, r, db, &sql)
            );
        }
        _ if rebuilt.is_some() => {
            let _ = writeln!(
                out,
                "  slot {name}: dropped; the rebuild of {} below creates it again (pg_basebackup -C, or the command before its start after an rsync)",
                rebuilt.unwrap_or_default()
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "  slot {name}: dropped. A standby that used it must be rebuilt (below); recreate the slot first with:\n    {}",
                create_physical_slot(plan, r, &s.name)
            );
        }
    }
}

/// How far the subscription had applied when the old server stopped, from `origins`.
pub(crate) fn origin_lsn(s: &Subscription, origins: Option<&[(i32, String)]>) -> Option<String> {
    s.origin_id.and_then(|id| {
        origins?
            .iter()
            .find(|(o, _)| *o == id)
            .map(|(_, l)| l.clone())
    })
}

/// The statements that resume a subscription of an old cluster before 17 on the new
/// cluster, in order (see the report's explanation).
pub(crate) fn resume_statements(s: &Subscription, lsn: Option<&str>) -> Vec<String> {
    let name = sql_ident(&s.name);
    let slot = s.slot.clone().unwrap_or_else(|| s.name.clone());
    let mut steps = vec![format!(
        "ALTER SUBSCRIPTION {name} SET (slot_name = 'pgleap_no_such_slot')"
    )];
    if let Some(lsn) = lsn {
        steps.push(format!(
            "SELECT pg_replication_origin_advance('pg_' || oid, {}) FROM pg_subscription WHERE subname = {}",
            sql_literal(lsn),
            sql_literal(&s.name)
        ));
    }
    steps.extend([
        format!("ALTER SUBSCRIPTION {name} ENABLE"),
        format!("ALTER SUBSCRIPTION {name} REFRESH PUBLICATION WITH (copy_data = false)"),
        format!("ALTER SUBSCRIPTION {name} DISABLE"),
        format!(
            "ALTER SUBSCRIPTION {name} SET (slot_name = {})",
            sql_literal(&slot)
        ),
        format!("ALTER SUBSCRIPTION {name} ENABLE"),
    ]);
    steps
}

fn subscription_lines(
    out: &mut String,
    plan: &Plan,
    r: &Section,
    s: &Subscription,
    origins: Option<&[(i32, String)]>,
    done: Option<&SubscriptionOutcome>,
) {
    let from = host_port(&s.conninfo);
    if plan.old.major >= 17 {
        let after = done.map_or_else(String::new, |d| format!("; {}", d.note));
        // Enabled before the window, disabled on the new cluster: disabled before the stop.
        let resumes = match done {
            Some(d) if s.enabled && !d.resumed => "",
            _ if s.enabled => "; it resumes by itself",
            _ => "; it resumes by itself once enabled (it was disabled before the upgrade)",
        };
        let _ = writeln!(
            out,
            "  subscription {}.{} from {from}: kept by pg_upgrade with its table states and origin{resumes}{after}",
            s.database, s.name,
        );
        return;
    }
    if let Some(d) = done.filter(|d| d.resumed) {
        let _ = writeln!(
            out,
            "  subscription {}.{} from {from}: {}",
            s.database, s.name, d.note
        );
        return;
    }
    let lsn = origin_lsn(s, origins);
    let slot = s.slot.clone().unwrap_or_else(|| s.name.clone());
    let where_from = lsn.as_ref().map_or_else(
        || "its origin recorded no progress, so the publisher resends from the slot's confirmed position".to_string(),
        |l| format!("its origin is set to {l}, the last publisher transaction this cluster applied before it stopped (from the old cluster's pg_logical/replorigin_checkpoint), so nothing is applied twice"),
    );
    let not_resumed = done.map_or_else(String::new, |d| {
        format!(" pgleap did not resume it: {}.", d.note)
    });
    let _ = writeln!(
        out,
        "  subscription {}.{} from {from}: carried disabled, without table states ({} of {} tables were ready).{not_resumed} Resume it, in this order:",
        s.database, s.name, s.tables_ready, s.tables
    );
    for sql in &resume_statements(s, lsn.as_deref()) {
        let _ = writeln!(out, "    {}", psql(plan, r, &s.database, sql));
    }
    let _ = writeln!(
        out,
        "    Why: REFRESH PUBLICATION records the tables as ready without copying them (copy_data = false: their rows are already here; a copy would repeat them), and it needs an enabled subscription, so the subscription first points at a slot that does not exist: its worker cannot consume changes before the tables are known, which would skip them. Then it streams from its slot '{slot}' on the publisher, which kept every change since; {where_from}."
    );
}

fn standby_lines(out: &mut String, plan: &Plan, r: &Section) {
    super::standby::report_lines(out, plan, r);
}
