//! Repairing collation drift on a running server while it serves clients: `REINDEX INDEX
//! CONCURRENTLY` of exactly the indexes whose order depends on a drifted collation, in
//! parallel, then `ALTER DATABASE ... REFRESH COLLATION VERSION` / `ALTER COLLATION ...
//! REFRESH VERSION` for every drifted collation whose indexes all rebuilt.
//!
//! Run by the `__db reindex` request as the cluster owner. Idempotent, so that a resumed
//! upgrade simply runs it again: the drift is read from the server each time, a rebuild that
//! an interrupted run left behind (an INVALID `_ccnew` or `_ccold` index) is dropped first,
//! and sessions of an earlier run still rebuilding are ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::inspect::collation::{self, Command};
use crate::inspect::pgerr::pg_error;
use tokio_postgres::Client;

/// Opens a session to the named database as the repair's role (the caller knows where and
/// as whom); its error says what failed.
pub(crate) type Connect = Arc<
    dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Client>> + Send>>
        + Send
        + Sync,
>;

/// The application name of the sessions that rebuild: a later run ends those still going.
const APPLICATION: &str = "pgleap-reindex";

/// An index whose rebuild failed; the original index is left as it was.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) database: String,
    pub(crate) index: String,
    pub(crate) message: String,
    /// The server's detail: for a unique index, the key that is now duplicated.
    pub(crate) detail: Option<String>,
    /// A unique index's duplicated keys (up to 20), as `ROW(...)::text` prints them.
    #[serde(default)]
    pub(crate) duplicates: Vec<String>,
    pub(crate) fix: String,
}

/// What a repair found and did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Report {
    /// `database: collation locale recorded → actual`, one per drifted collation.
    pub(crate) drifted: Vec<String>,
    /// Indexes that sort by a drifted collation, and their size.
    pub(crate) indexes: usize,
    pub(crate) bytes: u64,
    pub(crate) rebuilt: Vec<String>,
    pub(crate) failed: Vec<Failure>,
    pub(crate) refreshed: Vec<Command>,
    /// INVALID indexes an interrupted rebuild had left, dropped.
    pub(crate) cleaned: Vec<String>,
    /// What remains to be run by hand.
    pub(crate) left: Vec<Command>,
}

/// One index to rebuild.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    database: String,
    index: String,
    table: String,
    exclusion: bool,
}

/// What a repair is asked to do.
#[derive(Debug, Default)]
pub(crate) struct Ask {
    pub(crate) jobs: usize,
    /// Only say what would be done.
    pub(crate) dry_run: bool,
    /// Refresh the recorded versions instead of rebuilding.
    pub(crate) refresh: bool,
    /// `(database, index)` whose rebuild failed: their collations keep their version.
    pub(crate) failed: Vec<(String, String)>,
    /// `(database, collation)` judged drifted before the upgrade (`default` for the
    /// database's own). pg_upgrade recreates the collations initdb imports with the new
    /// library's version, so the new catalog alone no longer shows their drift.
    pub(crate) drifted: Vec<(String, String)>,
}

/// Rebuilds (unless `dry_run`) the affected indexes of every database, one session per
/// table and up to `jobs` at a time (two concurrent rebuilds on one table deadlock),
/// printing a progress line per index; or, when `refresh`, refreshes the recorded versions
/// of the drifted collations none of whose indexes is listed in `failed`.
pub(crate) async fn repair(first: Client, connect: Connect, ask: &Ask) -> Result<Report> {
    let dry_run = ask.dry_run;
    let version: i32 = first
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(|e| pg_error("querying the server", &e))?
        .get(0);
    if !dry_run {
        // A killed pgleap leaves its sessions running their REINDEX to the end.
        first
            .execute(
                "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity \
                 WHERE application_name = $1 AND pid <> pg_catalog.pg_backend_pid()",
                &[&APPLICATION],
            )
            .await
            .map_err(|e| pg_error("ending earlier rebuild sessions", &e))?;
    }
    let names: Vec<String> = first
        .query(
            "SELECT datname::text FROM pg_catalog.pg_database WHERE datallowconn ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| pg_error("listing databases", &e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    drop(first);
    let mut report = Report::default();
    let mut work = Vec::new();
    let mut refreshes = Vec::new();
    for name in &names {
        let client = connect(name.clone()).await?;
        if !dry_run {
            report.cleaned.extend(drop_leftovers(&client, name).await?);
        }
        let db = collation::read_database(&client, u32::try_from(version).unwrap_or(0))
            .await
            .map_err(|e| pg_error(&format!("reading collations of {name}"), &e))?;
        survey(&db, ask, &mut report, &mut work, &mut refreshes);
    }
    if dry_run {
        report.left = work
            .iter()
            .map(|j| Command {
                database: j.database.clone(),
                sql: reindex_sql(j),
            })
            .chain(refreshes.into_iter().map(|(_, c)| c))
            .collect();
        return Ok(report);
    }
    if ask.refresh {
        refresh_versions(&connect, refreshes, &mut report).await?;
    } else {
        rebuild(&connect, ask.jobs, work, &mut report).await?;
    }
    Ok(report)
}

/// What one database's collations need: the drifted ones listed, the indexes that sort by
/// them queued, and each version that still differs queued for a refresh (marked blocked
/// when one of its indexes failed to rebuild).
fn survey(
    db: &collation::Database,
    ask: &Ask,
    report: &mut Report,
    work: &mut Vec<Job>,
    refreshes: &mut Vec<(bool, Command)>,
) {
    let moved = collation::drifted(db, |v| v.actual.as_deref());
    let mut drifted = moved.clone();
    for (_, coll) in ask.drifted.iter().filter(|(d, _)| *d == db.name) {
        let oid = if coll == "default" {
            Some(collation::DEFAULT_COLLATION)
        } else {
            db.collations
                .iter()
                .find(|c| &c.name == coll)
                .map(|c| c.oid)
        };
        if let Some(oid) = oid.filter(|o| !drifted.contains(o)) {
            drifted.push(oid);
        }
    }
    for oid in &drifted {
        if let Some(v) = db.version_of(*oid) {
            report.drifted.push(format!(
                "{}: {} ({} {}) {} → {}",
                db.name,
                db.name_of(*oid),
                v.provider,
                v.locale,
                v.recorded.as_deref().unwrap_or(""),
                v.actual.as_deref().unwrap_or("")
            ));
        }
    }
    for i in collation::affected(db, &drifted) {
        report.indexes += 1;
        report.bytes += i.bytes;
        work.push(Job {
            database: db.name.clone(),
            index: i.name.clone(),
            table: i.table.clone(),
            exclusion: i.constraint.as_deref() == Some("exclusion"),
        });
    }
    // Only versions that still differ need refreshing.
    for oid in &moved {
        let blocked = collation::affected(db, &[*oid]).iter().any(|i| {
            ask.failed
                .iter()
                .any(|(d, n)| *d == db.name && *n == i.name)
        });
        refreshes.push((
            blocked,
            Command {
                database: db.name.clone(),
                sql: collation::refresh_sql(db, *oid),
            },
        ));
    }
}

/// The command that rebuilds `job`'s index: exclusion constraints cannot be rebuilt
/// concurrently, and a plain REINDEX blocks writes to the table while it runs.
fn reindex_sql(job: &Job) -> String {
    if job.exclusion {
        format!("REINDEX INDEX {}", job.index)
    } else {
        format!("REINDEX INDEX CONCURRENTLY {}", job.index)
    }
}

/// Drops the INVALID indexes a failed or interrupted `REINDEX CONCURRENTLY` leaves
/// (`<name>_ccnew`, or `<name>_ccold` when it failed while swapping).
async fn drop_leftovers(client: &tokio_postgres::Client, db: &str) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT c.oid::pg_catalog.regclass::text FROM pg_catalog.pg_index i \
             JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid \
             WHERE NOT i.indisvalid AND c.relname ~ '_cc(new|old)[0-9]*$' ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| pg_error(&format!("listing invalid indexes in {db}"), &e))?;
    let mut dropped = Vec::new();
    for r in rows {
        let name: String = r.get(0);
        client
            .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"))
            .await
            .map_err(|e| pg_error(&format!("DROP INDEX {name} in {db}"), &e))?;
        dropped.push(format!("{db}: {name}"));
    }
    Ok(dropped)
}

/// Rebuilds every job, `jobs` at a time; a failure is recorded and cleaned up, not fatal.
async fn rebuild(
    connect: &Connect,
    jobs: usize,
    work: Vec<Job>,
    report: &mut Report,
) -> Result<()> {
    let sem = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let done = Arc::new(AtomicUsize::new(0));
    let total = work.len();
    let mut tables: Vec<Vec<Job>> = Vec::new();
    for job in work {
        match tables
            .iter_mut()
            .find(|t| t[0].database == job.database && t[0].table == job.table)
        {
            Some(t) => t.push(job),
            None => tables.push(vec![job]),
        }
    }
    let mut tasks = Vec::new();
    for table in tables {
        let (connect, sem, done) = (connect.clone(), sem.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem
                .acquire_owned()
                .await
                .map_err(|e| Error::Worker(e.to_string()))?;
            let mut outcomes = Vec::new();
            for job in table {
                let outcome = rebuild_one(&connect, &job).await?;
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                {
                    use std::io::Write as _;
                    let line = format!(
                        "reindex: {d}/{total} indexes ({}: {})\n",
                        job.database, job.index
                    );
                    let _ = std::io::stderr().write_all(line.as_bytes());
                }
                outcomes.push((job, outcome));
            }
            Ok::<_, Error>(outcomes)
        }));
    }
    for t in tasks {
        for (job, outcome) in t.await.map_err(|e| Error::Worker(e.to_string()))?? {
            match outcome {
                None => report
                    .rebuilt
                    .push(format!("{}: {}", job.database, job.index)),
                Some(f) => report.failed.push(f),
            }
        }
    }
    Ok(())
}

/// Rebuilds one index: `None` when done, the failure otherwise (after dropping what the
/// failed rebuild left). Connection errors are errors.
async fn rebuild_one(connect: &Connect, job: &Job) -> Result<Option<Failure>> {
    let client = connect(job.database.clone()).await?;
    client
        .batch_execute(&format!("SET application_name = '{APPLICATION}'"))
        .await
        .map_err(|e| pg_error("SET application_name", &e))?;
    let sql = reindex_sql(job);
    let Err(e) = client.batch_execute(&sql).await else {
        return Ok(None);
    };
    let Some(db_error) = e.as_db_error() else {
        return Err(pg_error(&format!("{sql} in {}", job.database), &e));
    };
    let unique = db_error.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION;
    let mut failure = Failure {
        database: job.database.clone(),
        index: job.index.clone(),
        message: db_error.message().to_string(),
        detail: db_error.detail().map(ToString::to_string),
        duplicates: Vec::new(),
        fix: failure_fix(job, None),
    };
    drop_leftovers(&client, &job.database).await?;
    if unique {
        let query = duplicates_query(&client, job).await?;
        failure.duplicates = client
            .query(&format!("{query} LIMIT 20"), &[])
            .await
            .map_err(|e| pg_error(&format!("listing duplicates of {}", job.index), &e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        failure.fix = failure_fix(job, Some(&query));
    }
    Ok(Some(failure))
}

/// The query that lists a unique index's duplicated keys: its key columns or expressions
/// grouped, under its predicate when it is partial.
async fn duplicates_query(client: &Client, job: &Job) -> Result<String> {
    let row = client
        .query_one(
            "SELECT ARRAY(SELECT pg_catalog.pg_get_indexdef(i.indexrelid, k, true) \
               FROM pg_catalog.generate_series(1, i.indnkeyatts) k ORDER BY k), \
             pg_catalog.pg_get_expr(i.indpred, i.indrelid) \
             FROM pg_catalog.pg_index i WHERE i.indexrelid = $1::text::pg_catalog.regclass",
            &[&job.index],
        )
        .await
        .map_err(|e| pg_error(&format!("reading the definition of {}", job.index), &e))?;
    let keys: Vec<String> = row.get(0);
    let predicate: Option<String> = row.get(1);
    Ok(group_duplicates(&keys, predicate.as_deref(), &job.table))
}

/// `SELECT ROW(keys)::text, count(*) FROM table [WHERE predicate] GROUP BY keys HAVING
/// count(*) > 1 ORDER BY 1`.
fn group_duplicates(keys: &[String], predicate: Option<&str>, table: &str) -> String {
    let list = keys.join(", ");
    let shown = if keys.len() == 1 {
        format!("({list})::text")
    } else {
        format!("ROW({list})::text")
    };
    let filter = predicate.map(|p| format!(" WHERE {p}")).unwrap_or_default();
    format!(
        "SELECT {shown}, count(*) FROM {table}{filter} GROUP BY {list} HAVING count(*) > 1 ORDER BY 1"
    )
}

/// What to do about an index that could not be rebuilt; `duplicates` is the query listing a
/// unique index's duplicated keys.
fn failure_fix(job: &Job, duplicates: Option<&str>) -> String {
    let sql = reindex_sql(job);
    if let Some(query) = duplicates {
        format!(
            "The index, ordered by the old library, let rows with equal keys in (a search in a misordered index misses the key already there), and it still stands as it was. In database {}, list them with: {query}; make them distinct or delete the extras, then run {sql}. Until then the collation's version is not refreshed and PostgreSQL keeps warning.",
            job.database
        )
    } else {
        format!(
            "Fix the cause the server names, then in database {} run {sql}",
            job.database
        )
    }
}

/// Refreshes each drifted collation's recorded version unless one of its indexes failed.
async fn refresh_versions(
    connect: &Connect,
    refreshes: Vec<(bool, Command)>,
    report: &mut Report,
) -> Result<()> {
    for (blocked, c) in refreshes {
        if blocked {
            report.left.push(c);
            continue;
        }
        let client = connect(c.database.clone()).await?;
        client
            .batch_execute(&c.sql)
            .await
            .map_err(|e| pg_error(&format!("{} in {}", c.sql, c.database), &e))?;
        report.refreshed.push(c);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(exclusion: bool) -> Job {
        Job {
            database: "app".into(),
            index: "public.users_email_key".into(),
            table: "public.users".into(),
            exclusion,
        }
    }

    #[test]
    fn exclusion_constraints_are_rebuilt_without_concurrently() {
        assert_eq!(
            reindex_sql(&job(false)),
            "REINDEX INDEX CONCURRENTLY public.users_email_key"
        );
        assert_eq!(
            reindex_sql(&job(true)),
            "REINDEX INDEX public.users_email_key"
        );
    }

    #[test]
    fn duplicates_are_listed_by_the_index_keys_under_its_predicate() {
        assert_eq!(
            group_duplicates(&["lower(email)".into()], None, "public.users"),
            "SELECT (lower(email))::text, count(*) FROM public.users GROUP BY lower(email) HAVING count(*) > 1 ORDER BY 1"
        );
        assert_eq!(
            group_duplicates(&["a".into(), "b".into()], Some("active"), "public.t"),
            "SELECT ROW(a, b)::text, count(*) FROM public.t WHERE active GROUP BY a, b HAVING count(*) > 1 ORDER BY 1"
        );
        let fix = failure_fix(&job(false), Some("SELECT 1"));
        assert!(fix.contains("list them with: SELECT 1;"), "{fix}");
        assert!(
            fix.contains("then run REINDEX INDEX CONCURRENTLY public.users_email_key"),
            "{fix}"
        );
    }
}
