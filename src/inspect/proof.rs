//! What a rehearsal compares before and after upgrading its copy: per database, every user
//! table's row count and content hash, sequences, large objects and extension versions,
//! read through one `__db proof` request; and how much the old server would have to write
//! at a shutdown checkpoint (`__db pressure`).
//!
//! A table's hash is order-independent and streamed: the sum of the first 64 bits of each
//! row's md5 (of its text form), so no table is ever held in memory and the same rows in
//! another physical order hash the same.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use tokio_postgres::Client;

use crate::inspect::pgerr::pg_error;

/// A row count and the content hash of those rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Rows {
    pub(crate) count: i64,
    pub(crate) hash: String,
}

/// One database's data, as the proof sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DbProof {
    pub(crate) tables: BTreeMap<String, Rows>,
    /// Sequence → last value (`unset` before its first nextval).
    pub(crate) sequences: BTreeMap<String, String>,
    pub(crate) large_objects: Rows,
    /// Extension → version.
    pub(crate) extensions: BTreeMap<String, String>,
}

/// Every database that accepts connections, by name.
pub(crate) type Capture = BTreeMap<String, DbProof>;

const TABLES: &str = "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c \
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
    WHERE c.relkind IN ('r', 'm') AND c.relpersistence <> 't' \
    AND (c.relkind <> 'm' OR c.relispopulated) \
    AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast' \
    ORDER BY 1";

/// Count and hash of a row source `from` whose rows are `row` (text).
fn rows_query(row: &str, from: &str) -> String {
    format!(
        "SELECT count(*), coalesce(sum(('x' || left(md5({row}), 16))::bit(64)::bigint::numeric), 0)::text FROM {from}"
    )
}

/// Reads every database's proof, `jobs` databases at a time; `first` lists them, `connect`
/// opens a session on one.
pub(crate) async fn capture<C, F>(first: &Client, connect: C, jobs: usize) -> Result<Capture>
where
    C: Fn(String) -> F + Clone + Send + 'static,
    F: std::future::Future<Output = Result<Client, tokio_postgres::Error>> + Send + 'static,
{
    let dbs: Vec<String> = first
        .query(
            "SELECT datname::text FROM pg_catalog.pg_database WHERE datallowconn ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| pg_error("listing databases", &e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let sem = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let mut tasks = Vec::new();
    for db in dbs {
        let (connect, sem) = (connect.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem
                .acquire_owned()
                .await
                .map_err(|e| Error::Worker(e.to_string()))?;
            let client = connect(db.clone())
                .await
                .map_err(|e| pg_error(&format!("connecting to {db}"), &e))?;
            let proof = capture_db(&client, &db).await?;
            Ok::<_, Error>((db, proof))
        }));
    }
    let mut out = Capture::new();
    for t in tasks {
        let (db, proof) = t.await.map_err(|e| Error::Worker(e.to_string()))??;
        out.insert(db, proof);
    }
    Ok(out)
}

async fn capture_db(client: &Client, db: &str) -> Result<DbProof> {
    let q = |what: String| {
        let what = format!("{what} in {db}");
        move |e: tokio_postgres::Error| pg_error(&what, &e)
    };
    let mut proof = DbProof::default();
    let tables: Vec<String> = client
        .query(TABLES, &[])
        .await
        .map_err(q("listing tables".into()))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for t in tables {
        let row = client
            .query_one(&rows_query("t::text", &format!("ONLY {t} t")), &[])
            .await
            .map_err(q(format!("reading {t}")))?;
        proof.tables.insert(
            t,
            Rows {
                count: row.get(0),
                hash: row.get(1),
            },
        );
    }
    // 10+: pg_sequences.
    for r in client
        .query(
            "SELECT format('%I.%I', schemaname, sequencename), coalesce(last_value::text, 'unset') \
             FROM pg_catalog.pg_sequences ORDER BY 1",
            &[],
        )
        .await
        .map_err(q("reading sequences".into()))?
    {
        proof.sequences.insert(r.get(0), r.get(1));
    }
    let lo = client
        .query_one(
            &rows_query(
                "pg_catalog.lo_get(oid)",
                "pg_catalog.pg_largeobject_metadata",
            ),
            &[],
        )
        .await
        .map_err(q("reading large objects".into()))?;
    proof.large_objects = Rows {
        count: lo.get(0),
        hash: lo.get(1),
    };
    for r in client
        .query(
            "SELECT extname::text, extversion FROM pg_catalog.pg_extension ORDER BY 1",
            &[],
        )
        .await
        .map_err(q("reading extensions".into()))?
    {
        proof.extensions.insert(r.get(0), r.get(1));
    }
    Ok(proof)
}

/// What a shutdown checkpoint of a running server would have to write, as far as the server
/// can tell without touching anything.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Pressure {
    /// WAL written since the last checkpoint's redo point.
    pub(crate) wal_since_checkpoint: Option<u64>,
    /// Dirty shared buffers (bytes), when pg_buffercache is installed in `postgres`.
    pub(crate) dirty_bytes: Option<u64>,
    pub(crate) shared_buffers: Option<u64>,
}

pub(crate) async fn pressure(client: &Client) -> Pressure {
    let one = |text: &'static str| async move {
        client
            .query_one(text, &[])
            .await
            .ok()
            .and_then(|r| r.get::<_, Option<i64>>(0))
            .and_then(|v| u64::try_from(v).ok())
    };
    let wal = one(
        "SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), redo_lsn)::bigint \
         FROM pg_catalog.pg_control_checkpoint()",
    )
    .await;
    let shared = one(
        "SELECT setting::bigint * current_setting('block_size')::bigint FROM pg_catalog.pg_settings \
         WHERE name = 'shared_buffers'",
    )
    .await;
    let has_buffercache =
        one("SELECT count(*) FROM pg_catalog.pg_extension WHERE extname = 'pg_buffercache'")
            .await
            .is_some_and(|n| n > 0);
    let dirty = if has_buffercache {
        one("SELECT count(*) FILTER (WHERE isdirty) * current_setting('block_size')::bigint FROM pg_buffercache")
            .await
    } else {
        None
    };
    Pressure {
        wal_since_checkpoint: wal,
        dirty_bytes: dirty,
        shared_buffers: shared,
    }
}

/// How one compared item came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Verdict {
    Equal,
    Different,
    /// An extension at a newer version: the upgrade's own `ALTER EXTENSION ... UPDATE`.
    Updated,
}

/// One item of the proof, before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Item {
    pub(crate) database: String,
    /// database, schema, table, sequence, large objects, extension
    pub(crate) kind: &'static str,
    pub(crate) name: String,
    pub(crate) before: Option<String>,
    pub(crate) after: Option<String>,
    pub(crate) verdict: Verdict,
}

fn item(
    db: &str,
    kind: &'static str,
    name: &str,
    before: Option<String>,
    after: Option<String>,
) -> Item {
    let verdict = if before == after {
        Verdict::Equal
    } else if kind == "extension" && before.is_some() && after.is_some() {
        Verdict::Updated
    } else {
        Verdict::Different
    };
    Item {
        database: db.to_string(),
        kind,
        name: name.to_string(),
        before,
        after,
        verdict,
    }
}

fn rows_text(r: &Rows) -> String {
    format!("{} rows, hash {}", r.count, r.hash)
}

/// Every item of `before` and `after` side by side; `schemas` are each database's
/// normalized schema dump (before, after).
pub(crate) fn compare(
    before: &Capture,
    after: &Capture,
    schemas: &BTreeMap<String, (String, String)>,
) -> Vec<Item> {
    let mut out = Vec::new();
    let dbs: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let empty = DbProof::default();
    for db in dbs {
        let (b, a) = (before.get(db), after.get(db));
        if b.is_none() || a.is_none() {
            let present = |p: Option<&DbProof>| p.map(|_| "present".to_string());
            out.push(item(db, "database", db, present(b), present(a)));
            continue;
        }
        let (b, a) = (b.unwrap_or(&empty), a.unwrap_or(&empty));
        if let Some((sb, sa)) = schemas.get(db) {
            let (before, after) = schema_texts(sb, sa);
            out.push(item(
                db,
                "schema",
                "pg_dump --schema-only",
                Some(before),
                Some(after),
            ));
        }
        let tables: std::collections::BTreeSet<&String> =
            b.tables.keys().chain(a.tables.keys()).collect();
        for t in tables {
            out.push(item(
                db,
                "table",
                t,
                b.tables.get(t).map(rows_text),
                a.tables.get(t).map(rows_text),
            ));
        }
        let seqs: std::collections::BTreeSet<&String> =
            b.sequences.keys().chain(a.sequences.keys()).collect();
        for s in seqs {
            out.push(item(
                db,
                "sequence",
                s,
                b.sequences.get(s).cloned(),
                a.sequences.get(s).cloned(),
            ));
        }
        out.push(item(
            db,
            "large objects",
            "pg_largeobject",
            Some(rows_text(&b.large_objects)),
            Some(rows_text(&a.large_objects)),
        ));
        let exts: std::collections::BTreeSet<&String> =
            b.extensions.keys().chain(a.extensions.keys()).collect();
        for e in exts {
            out.push(item(
                db,
                "extension",
                e,
                b.extensions.get(e).cloned(),
                a.extensions.get(e).cloned(),
            ));
        }
    }
    out
}

/// How two normalized schema dumps are reported: their size and digest, and where they
/// differ, the first line that does.
fn schema_texts(before: &str, after: &str) -> (String, String) {
    let digest = |s: &str| format!("{} lines, digest {:016x}", s.lines().count(), digest_of(s));
    let (mut b, mut a) = (digest(before), digest(after));
    if before != after {
        let (lb, la): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
        let n = lb
            .iter()
            .zip(&la)
            .position(|(x, y)| x != y)
            .unwrap_or(lb.len().min(la.len()));
        let at = |lines: &[&str]| {
            lines
                .get(n)
                .map_or_else(|| "(end)".to_string(), |l| (*l).to_string())
        };
        b = format!("{b}; line {}: {}", n + 1, at(&lb));
        a = format!("{a}; line {}: {}", n + 1, at(&la));
    }
    (b, a)
}

/// A content digest of a schema dump, for the report (equality is what matters).
fn digest_of(text: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// A schema dump without what legitimately differs between two dumps of the same schema
/// by the same pg_dump: comments (version banners), blank lines, the random keys of
/// `\restrict`, and column qualification inside view bodies (servers before 16 deparse
/// `items.name` where 16+ print `name`).
pub(crate) fn normalize_schema(text: &str) -> String {
    let mut out = Vec::new();
    let mut in_view = false;
    for l in text.lines() {
        if l.trim().is_empty()
            || l.starts_with("--")
            || l.starts_with("\\restrict ")
            || l.starts_with("\\unrestrict ")
        {
            continue;
        }
        if l.starts_with("CREATE VIEW") || l.starts_with("CREATE MATERIALIZED VIEW") {
            in_view = true;
        }
        if in_view {
            out.push(strip_qualifiers(l));
            in_view = !l.trim_end().ends_with(';');
        } else {
            out.push(l.to_string());
        }
    }
    out.join("\n")
}

/// `"left"(items.name, 6)` → `"left"(name, 6)`: drops `identifier.` prefixes.
fn strip_qualifiers(line: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    for c in line.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else if c == '.' && !word.is_empty() && !word.chars().all(|d| d.is_ascii_digit()) {
            word.clear();
        } else {
            out.push_str(&word);
            word.clear();
            out.push(c);
        }
    }
    out.push_str(&word);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(rows: i64, ext: &str) -> Capture {
        let mut db = DbProof::default();
        db.tables.insert(
            "public.t".into(),
            Rows {
                count: rows,
                hash: format!("h{rows}"),
            },
        );
        db.sequences.insert("public.s".into(), "7".into());
        db.extensions.insert("hstore".into(), ext.into());
        Capture::from([("app".to_string(), db)])
    }

    #[test]
    fn a_missing_row_is_a_difference_and_an_extension_update_is_not() {
        let schemas = BTreeMap::from([(
            "app".to_string(),
            ("CREATE TABLE t".to_string(), "CREATE TABLE t".to_string()),
        )]);
        let same = compare(&capture(3, "1.8"), &capture(3, "1.8"), &schemas);
        assert!(same.iter().all(|i| i.verdict == Verdict::Equal), "{same:?}");
        assert_eq!(
            same.len(),
            5,
            "database schema, table, sequence, large objects, extension"
        );

        let items = compare(&capture(3, "1.8"), &capture(2, "1.9"), &schemas);
        let table = items.iter().find(|i| i.kind == "table").unwrap();
        assert_eq!(table.verdict, Verdict::Different);
        assert_eq!(table.before.as_deref(), Some("3 rows, hash h3"));
        let ext = items.iter().find(|i| i.kind == "extension").unwrap();
        assert_eq!(ext.verdict, Verdict::Updated);
    }

    #[test]
    fn a_database_on_one_side_only_is_a_difference() {
        let mut after = capture(3, "1.8");
        after.insert("extra".into(), DbProof::default());
        let items = compare(&capture(3, "1.8"), &after, &BTreeMap::new());
        let db = items.iter().find(|i| i.kind == "database").unwrap();
        assert_eq!(
            (db.name.as_str(), db.verdict),
            ("extra", Verdict::Different)
        );
    }

    #[test]
    fn schema_normalization_keeps_what_matters() {
        let a = "-- Dumped from database version 15.4\n\\restrict abc\nCREATE VIEW v AS\n SELECT items.name\n   FROM items;\nCREATE TABLE t (id integer);\n";
        let b = "-- Dumped from database version 17.2\n\\restrict xyz\n\nCREATE VIEW v AS\n SELECT name\n   FROM items;\nCREATE TABLE t (id integer);\n";
        assert_eq!(normalize_schema(a), normalize_schema(b));
        let c = b.replace("id integer", "id bigint");
        assert_ne!(normalize_schema(a), normalize_schema(&c));
        let (before, after) = schema_texts(&normalize_schema(a), &normalize_schema(&c));
        assert!(
            before.ends_with("line 4: CREATE TABLE t (id integer);"),
            "{before}"
        );
        assert!(
            after.ends_with("line 4: CREATE TABLE t (id bigint);"),
            "{after}"
        );
    }
}
