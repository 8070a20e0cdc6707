//! The server side of the fence before a 17+ old cluster with logical slots stops (see
//! `steps::fence`): where its `pg_hba.conf` is and whether the server can parse a rewritten
//! one, the client sessions cut off, the replication facts polled while consumers catch up,
//! and the slots dropped by name when the user accepted losing them.

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::inspect::replication::Replication;

/// One poll of a fenced (or about to be fenced) server.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Poll {
    /// `SHOW hba_file`.
    pub(crate) hba_file: String,
    /// `pg_hba_file_rules` errors of the file on disk now, as `line N: error`.
    pub(crate) hba_errors: Vec<String>,
    /// Client sessions terminated by this poll: `pid user@database (application)`.
    pub(crate) terminated: Vec<String>,
    pub(crate) facts: Replication,
}

type PgResult<T> = Result<T, tokio_postgres::Error>;

/// Reads the hba file's place and errors, terminates every other client session when asked
/// (walsenders, background workers and this session are spared), then reads the replication
/// facts.
pub(crate) async fn poll(client: &Client, version: u32, terminate: bool) -> PgResult<Poll> {
    let hba_file: String = client.query_one("SHOW hba_file", &[]).await?.get(0);
    let hba_errors = client
        .query(
            "SELECT 'line ' || coalesce(line_number::text, '?') || ': ' || error \
             FROM pg_catalog.pg_hba_file_rules WHERE error IS NOT NULL ORDER BY line_number",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    let mut terminated = Vec::new();
    if terminate {
        let rows = client
            .query(
                "SELECT pid, coalesce(usename::text, '?') || '@' || coalesce(datname::text, '?') \
                 || ' (' || coalesce(nullif(application_name, ''), 'no application name') || ')', \
                 pg_catalog.pg_terminate_backend(pid) \
                 FROM pg_catalog.pg_stat_activity \
                 WHERE backend_type = 'client backend' AND pid <> pg_catalog.pg_backend_pid()",
                &[],
            )
            .await?;
        terminated = rows
            .iter()
            .filter(|r| r.get::<_, bool>(2))
            .map(|r| format!("{} {}", r.get::<_, i32>(0), r.get::<_, String>(1)))
            .collect();
    }
    let facts = crate::inspect::replication::read(client, version).await?;
    Ok(Poll {
        hba_file,
        hba_errors,
        terminated,
        facts,
    })
}

/// Drops the named slots, first ending the walsender of one still in use. Returns
/// `(name, None)` for each slot dropped (or already gone), `(name, Some(error))` otherwise.
pub(crate) async fn drop_slots(client: &Client, names: &[String]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for name in names {
        let mut last = None;
        for _ in 0..10 {
            let _ = client
                .query(
                    "SELECT pg_catalog.pg_terminate_backend(active_pid) \
                     FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL",
                    &[name],
                )
                .await;
            let r = client
                .query(
                    "SELECT pg_catalog.pg_drop_replication_slot(slot_name) \
                     FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                    &[name],
                )
                .await;
            match r {
                Ok(_) => {
                    last = None;
                    break;
                }
                Err(e) => {
                    last =
                        Some(crate::inspect::pgerr::pg_error("dropping the slot", &e).to_string());
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                }
            }
        }
        out.push((name.clone(), last));
    }
    out
}
