//! What users read about replication: the plan's rows (what survives, before the window)
//! and the report's section (what was kept, recreated, dropped or disabled, and each
//! consumer's next step as commands to run).

use std::fmt::Write as _;

use crate::inspect::replication::{Slot, Subscription, host_port};
use crate::plan::Plan;
use crate::preflight::replication::{Fate, Section, describe_standby, standbys};

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
            _ if s.is_logical() && old < 17 => format!("lost: pg_upgrade carries no slot from {old}"),
            _ => "lost: pg_upgrade never carries physical slots".into(),
        };
        rows.push(("slot", format!("{}: {fate}", slot_name(s))));
    }
    for s in &r.facts.subscriptions {
        let fate = if old >= 17 {
            "kept by pg_upgrade with its table states"
        } else {
            "arrives disabled without table states: resume it as the report says"
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
    let superuser = plan
        .initdb
        .as_ref()
        .map_or("postgres", |o| o.superuser.as_str());
    let bin = plan.new.bindir.join("psql");
    shell_words::join([
        bin.display().to_string().as_str(),
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        &host(r),
        "-p",
        &plan.new.port.to_string(),
        "-U",
        superuser,
        "-d",
        db,
        "-c",
        sql,
    ])
}

fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn sql_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The report's replication section; `origins` is how far each replication origin of the
/// old cluster had applied when it stopped (origin id → LSN), when it could be read.
pub(crate) fn report(plan: &Plan, origins: Option<&[(i32, String)]>) -> String {
    let Some(r) = &plan.replication else {
        return String::new();
    };
    let mut out = String::from("Replication:\n");
    for s in &r.facts.slots {
        slot_lines(&mut out, plan, r, s);
    }
    for s in &r.facts.subscriptions {
        subscription_lines(&mut out, plan, r, s, origins);
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

fn slot_lines(out: &mut String, plan: &Plan, r: &Section, s: &Slot) {
    let name = slot_name(s);
    match r.fate_of_slot(&s.name) {
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
            let _ = writeln!(
                out,
                "  slot {name}: dropped (its consumer had confirmed up to {}). Recreate it with:\n    {}\n    Why: it starts at the new cluster's current position: changes written on the new cluster before it exists never reach its consumer, so resynchronize the consumer from a fresh copy of the data (a subscriber: re-create its subscription with copy_data = true).",
                s.confirmed_flush_lsn.as_deref().unwrap_or("nothing"),
                psql(plan, r, db, &sql)
            );
        }
        _ => {
            let sql = format!(
                "SELECT pg_create_physical_replication_slot({}, true)",
                sql_literal(&s.name)
            );
            let _ = writeln!(
                out,
                "  slot {name}: dropped. A standby that used it must be rebuilt (below); recreate the slot first with:\n    {}",
                psql(plan, r, "postgres", &sql)
            );
        }
    }
}

fn subscription_lines(
    out: &mut String,
    plan: &Plan,
    r: &Section,
    s: &Subscription,
    origins: Option<&[(i32, String)]>,
) {
    let from = host_port(&s.conninfo);
    if plan.old.major >= 17 {
        let _ = writeln!(
            out,
            "  subscription {}.{} from {from}: kept by pg_upgrade with its table states and origin; it resumes by itself{}",
            s.database,
            s.name,
            if s.enabled {
                ""
            } else {
                " once enabled (it was disabled before the upgrade)"
            }
        );
        return;
    }
    let lsn = s.origin_id.and_then(|id| {
        origins?
            .iter()
            .find(|(o, _)| *o == id)
            .map(|(_, l)| l.clone())
    });
    let name = sql_ident(&s.name);
    let slot = s.slot.clone().unwrap_or_else(|| s.name.clone());
    let mut steps = vec![format!(
        "ALTER SUBSCRIPTION {name} SET (slot_name = 'pgleap_no_such_slot')"
    )];
    if let Some(lsn) = &lsn {
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
    let where_from = lsn.as_ref().map_or_else(
        || "its origin recorded no progress, so the publisher resends from the slot's confirmed position".to_string(),
        |l| format!("its origin is set to {l}, the last publisher transaction this cluster applied before it stopped (from the old cluster's pg_logical/replorigin_checkpoint), so nothing is applied twice"),
    );
    let _ = writeln!(
        out,
        "  subscription {}.{} from {from}: carried disabled, without table states ({} of {} tables were ready). Resume it, in this order:",
        s.database, s.name, s.tables_ready, s.tables
    );
    for sql in &steps {
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
