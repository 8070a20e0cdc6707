//! The server side of the fence before a 17+ old cluster with logical slots stops (see
//! `steps::fence`): where its `pg_hba.conf` is and whether the server can parse a rewritten
//! one, the client sessions cut off, the replication facts polled while consumers catch up,
//! the rules the server reads from it (includes followed) with the roles each admits, and
//! the slots dropped by name when the user accepted losing them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::config::hba::{self, Rule, UserMatch};
use crate::inspect::replication::Replication;

/// One poll of a fenced (or about to be fenced) server.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Poll {
    /// `SHOW hba_file`.
    pub(crate) hba_file: String,
    /// `pg_hba_file_rules` errors of the file on disk now (and the files it includes), as
    /// `file:line: error`.
    pub(crate) hba_errors: Vec<String>,
    /// The rules the server reads, in its order, when roles were asked about: for each, the
    /// roles asked about that its user field admits.
    pub(crate) rules: Vec<Rule>,
    /// Client sessions terminated by this poll: `pid user@database (application)`.
    pub(crate) terminated: Vec<String>,
    pub(crate) facts: Replication,
}

type PgResult<T> = Result<T, tokio_postgres::Error>;

/// Reads the hba file's place and errors (and, when `roles` are given, its rules and whom
/// they admit), terminates every other client session when asked (walsenders, background
/// workers and this session are spared), then reads the replication facts.
pub(crate) async fn poll(
    client: &Client,
    version: u32,
    terminate: bool,
    roles: &[String],
) -> PgResult<Poll> {
    let hba_file: String = client.query_one("SHOW hba_file", &[]).await?.get(0);
    // 16: pg_hba_file_rules names the file of each line (includes); the fence runs on 17+.
    let hba_errors: Vec<String> = client
        .query(
            "SELECT coalesce(file_name, '?') || ':' || coalesce(line_number::text, '?') || ': ' || error \
             FROM pg_catalog.pg_hba_file_rules WHERE error IS NOT NULL ORDER BY file_name, line_number",
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
    let mut hba_errors = hba_errors;
    let mut read = if roles.is_empty() || !hba_errors.is_empty() {
        Vec::new()
    } else {
        rules(client, roles).await?
    };
    read.retain(|r| {
        if r.kind.is_empty() {
            hba_errors.push(format!(
                "{}: its rule could not be read back from the file",
                r.at
            ));
        }
        !r.kind.is_empty()
    });
    Ok(Poll {
        hba_file,
        hba_errors,
        rules: read,
        terminated,
        facts,
    })
}

/// The rules the server reads, in order, each from the line the server names (read by the
/// server, which could read it), with the roles of `roles` its user field admits, as the
/// server decides it: `+group` by membership (direct or not, superuser or not, as for
/// `pg_hba.conf`), `/regex` by the server's own regular expressions.
async fn rules(client: &Client, roles: &[String]) -> PgResult<Vec<Rule>> {
    let rows = client
        .query(
            "SELECT file_name, line_number, database, user_name \
             FROM pg_catalog.pg_hba_file_rules WHERE error IS NULL ORDER BY rule_number",
            &[],
        )
        .await?;
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let mut groups: BTreeMap<&String, Vec<String>> = BTreeMap::new();
    for role in roles {
        let of = client
            .query(
                "WITH RECURSIVE m(oid) AS (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1 \
                 UNION SELECT a.roleid FROM pg_catalog.pg_auth_members a JOIN m ON a.member = m.oid) \
                 SELECT r.rolname::text FROM pg_catalog.pg_roles r JOIN m USING (oid)",
                &[role],
            )
            .await?;
        groups.insert(role, of.iter().map(|r| r.get(0)).collect());
    }
    let mut out = Vec::new();
    for row in rows {
        let file: String = row.get(0);
        let line: i32 = row.get(1);
        if !files.contains_key(&file) {
            let text: String = client
                .query_one("SELECT pg_catalog.pg_read_file($1)", &[&file])
                .await?
                .get(0);
            files.insert(file.clone(), text);
        }
        let at = format!("{file}:{line}");
        let text = usize::try_from(line)
            .ok()
            .and_then(|n| hba::logical_line_at(&files[&file], n));
        let databases: Vec<String> = row.get::<_, Option<Vec<String>>>(2).unwrap_or_default();
        let users: Vec<String> = row.get::<_, Option<Vec<String>>>(3).unwrap_or_default();
        let Some(mut rule) = text.and_then(|t| hba::rule(at.clone(), &t, &databases, &users))
        else {
            // Read between the server's parse and ours: the fence takes it as an error.
            out.push(Rule {
                at,
                ..Rule::default()
            });
            continue;
        };
        for role in roles {
            let mut admitted = false;
            for token in &rule.users {
                admitted = match hba::user_match(token) {
                    UserMatch::All => true,
                    UserMatch::Name(n) => n == *role,
                    UserMatch::MemberOf(g) => groups[role].contains(&g),
                    UserMatch::Regex(re) => client
                        .query_one("SELECT $1::text ~ ($2::text COLLATE \"C\")", &[role, &re])
                        .await?
                        .get(0),
                };
                if admitted {
                    break;
                }
            }
            if admitted {
                rule.admits.push(role.clone());
            }
        }
        out.push(rule);
    }
    Ok(out)
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
