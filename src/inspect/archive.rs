//! WAL archiving: a server's archiving settings and its archiver's state, and a probe that
//! makes a live server archive one segment and says whether that worked.
//!
//! Invariant: the command itself is never reported (its arguments may hold credentials):
//! only whether it is set and which known backup tool it runs.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

type PgResult<T> = Result<T, tokio_postgres::Error>;

/// Backup tools recognised in `archive_command`, and what each needs after a major upgrade.
const TOOLS: &[(&str, &str)] = &[
    (
        "pgbackrest",
        "pgBackRest: run `pgbackrest --stanza=NAME stanza-upgrade` (its archive-push refuses the new system identifier until then), then a full backup",
    ),
    ("wal-g", "WAL-G: run `wal-g backup-push` on the new cluster"),
    (
        "barman",
        "Barman: run `barman switch-wal --force --archive` and a new `barman backup` for the server",
    ),
    (
        "pg_probackup",
        "pg_probackup: take a FULL backup of the new cluster",
    ),
];

/// A server's WAL archiving.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Archiving {
    /// `archive_mode`: `off`, `on` or `always`.
    pub(crate) mode: String,
    /// `archive_command` is set.
    pub(crate) command: bool,
    /// The backup tool `archive_command` runs, when it is one pgleap knows.
    pub(crate) tool: Option<String>,
    /// `archive_library` (15+), when set.
    pub(crate) library: Option<String>,
    /// The WAL file whose archiving failed last, when that came after the last success.
    pub(crate) failing: Option<String>,
}

impl Archiving {
    /// Archiving is on and has somewhere to archive to.
    pub(crate) fn active(&self) -> bool {
        !matches!(self.mode.as_str(), "off" | "") && (self.command || self.library.is_some())
    }

    /// How it archives, for messages: the library, the known tool, or "a command".
    pub(crate) fn how(&self) -> String {
        match (&self.library, &self.tool) {
            (Some(l), _) => format!("archive_library '{l}'"),
            (None, Some(t)) => format!("archive_command runs {t}"),
            (None, None) => "archive_command".to_string(),
        }
    }

    /// What the known tool needs after the upgrade, if any.
    pub(crate) fn tool_advice(&self) -> Option<&'static str> {
        let tool = self.tool.as_deref()?;
        TOOLS.iter().find(|(t, _)| *t == tool).map(|(_, a)| *a)
    }
}

/// The backup tool named in an `archive_command`, if pgleap knows it.
fn tool_of(command: &str) -> Option<String> {
    TOOLS
        .iter()
        .map(|(t, _)| *t)
        .find(|t| command.contains(t))
        .map(ToString::to_string)
}

/// Reads the server's archiving settings and its archiver's state.
pub(crate) async fn read(client: &Client, version: u32) -> PgResult<Archiving> {
    let library = if version >= 150_000 {
        "current_setting('archive_library')"
    } else {
        "''"
    };
    let row = client
        .query_one(
            &format!(
                "SELECT current_setting('archive_mode'), current_setting('archive_command'), {library}, \
                 CASE WHEN a.last_failed_time > coalesce(a.last_archived_time, '-infinity') THEN a.last_failed_wal END \
                 FROM pg_catalog.pg_stat_archiver a"
            ),
            &[],
        )
        .await?;
    let command: String = row.get(1);
    let library: String = row.get(2);
    Ok(Archiving {
        mode: row.get(0),
        command: !command.trim().is_empty(),
        tool: tool_of(&command),
        library: (!library.is_empty()).then_some(library),
        failing: row.get(3),
    })
}

/// What the probe saw.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub(crate) enum Outcome {
    /// Archiving is off or has nowhere to go: nothing was asked.
    Off,
    /// The segment pgleap completed was archived.
    Archived { wal: String },
    /// Archiving it failed.
    Failed { wal: String },
    /// Neither within the wait.
    Unconfirmed { wal: String, seconds: u64 },
}

/// The probe's answer: the settings, and what happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Probe {
    pub(crate) archiving: Archiving,
    pub(crate) outcome: Outcome,
}

/// How long the probe waits for the archiver.
const WAIT: Duration = Duration::from_secs(10);

/// Completes the current WAL segment (a non-transactional WAL message first, so that there is
/// one to complete; no transaction id is used) and waits, up to [`WAIT`], until the archiver
/// archived it or failed to.
pub(crate) async fn probe(client: &Client, version: u32) -> PgResult<Probe> {
    let archiving = read(client, version).await?;
    if !archiving.active() {
        return Ok(Probe {
            archiving,
            outcome: Outcome::Off,
        });
    }
    let failed_before: i64 = client
        .query_one("SELECT failed_count FROM pg_catalog.pg_stat_archiver", &[])
        .await?
        .get(0);
    client
        .execute(
            "SELECT pg_catalog.pg_logical_emit_message(false, 'pgleap', 'archiving probe')",
            &[],
        )
        .await?;
    let wal: String = client
        .query_one(
            "SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_switch_wal())",
            &[],
        )
        .await?
        .get(0);
    let started = Instant::now();
    loop {
        let row = client
            .query_one(
                "SELECT coalesce(last_archived_wal, ''), failed_count, coalesce(last_failed_wal, ''), \
                 last_failed_time > coalesce(last_archived_time, '-infinity') FROM pg_catalog.pg_stat_archiver",
                &[],
            )
            .await?;
        let (archived, failed, failed_wal, failing): (String, i64, String, Option<bool>) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        // WAL file names of one timeline sort in WAL order.
        if archived.len() == wal.len() && archived >= wal {
            return Ok(Probe {
                archiving,
                outcome: Outcome::Archived { wal },
            });
        }
        // The archiver works in WAL order: a failure on this segment or an earlier one,
        // since the probe began and not followed by a success, is the verdict.
        if failed > failed_before && failing == Some(true) && failed_wal <= wal {
            return Ok(Probe {
                archiving,
                outcome: Outcome::Failed { wal: failed_wal },
            });
        }
        if started.elapsed() >= WAIT {
            return Ok(Probe {
                archiving,
                outcome: Outcome::Unconfirmed {
                    wal,
                    seconds: WAIT.as_secs(),
                },
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_tools_are_named_and_nothing_else_of_the_command() {
        assert_eq!(
            tool_of("pgbackrest --stanza=main archive-push %p").as_deref(),
            Some("pgbackrest")
        );
        assert_eq!(
            tool_of("envdir /etc/wal-g.d/env wal-g wal-push %p").as_deref(),
            Some("wal-g")
        );
        assert_eq!(tool_of("test ! -f /a/%f && cp %p /a/%f"), None);
        let a = Archiving {
            mode: "on".into(),
            command: true,
            tool: None,
            library: None,
            failing: None,
        };
        assert!(a.active());
        assert_eq!(a.how(), "archive_command");
        assert!(a.tool_advice().is_none());
        let off = Archiving {
            mode: "off".into(),
            ..a.clone()
        };
        assert!(!off.active());
        let nowhere = Archiving {
            command: false,
            ..a
        };
        assert!(!nowhere.active());
    }
}
