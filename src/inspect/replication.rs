//! The old cluster's place in replication: whether it is itself a standby (from its files),
//! and from its catalog the standbys streaming from it, its replication slots, its
//! subscriptions and publications.
//!
//! Read-only. Connection strings are kept without their password: they are printed in the
//! plan, the journal and `--json`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

/// What the data directory says before any server is asked: a signal file (12+) or a
/// `recovery.conf` (10, 11) makes the cluster a standby.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Standby {
    /// `standby.signal`, `recovery.signal` or `recovery.conf`.
    pub(crate) file: String,
    /// `primary_conninfo` without its password, when set.
    pub(crate) primary_conninfo: Option<String>,
}

/// The signal file present in `datadir`, if any (standby first: both may exist).
pub(crate) fn signal_file(datadir: &Path) -> Option<String> {
    ["standby.signal", "recovery.signal", "recovery.conf"]
        .into_iter()
        .find(|f| std::fs::symlink_metadata(datadir.join(f)).is_ok())
        .map(str::to_string)
}

/// A connection string without its password (`password=...` or `user:secret@` in a URI),
/// so that it can be printed and journaled.
pub(crate) fn without_password(conninfo: &str) -> String {
    let s = conninfo.trim();
    if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        let (scheme, rest) = s.split_once("://").unwrap_or((s, ""));
        let (auth, tail) = match rest.find('@') {
            Some(i) if !rest[..i].contains('/') => (&rest[..i], &rest[i..]),
            _ => ("", rest),
        };
        let user = auth.split(':').next().unwrap_or("");
        let tail = strip_query_password(tail);
        return format!("{scheme}://{user}{tail}");
    }
    conninfo_pairs(s)
        .into_iter()
        .filter(|(k, _)| k != "password")
        .map(|(k, v)| format!("{k}={}", quote(&v)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn strip_query_password(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.starts_with("password="))
        .collect();
    if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

fn quote(v: &str) -> String {
    if !v.is_empty() && !v.contains([' ', '\'', '\\']) {
        return v.to_string();
    }
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `key=value` pairs of a libpq keyword/value connection string (values may be quoted).
pub(crate) fn conninfo_pairs(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        if key.is_empty() {
            break;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == '=') {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            value.extend(std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())));
        }
        out.push((key, value));
    }
    out
}

/// `host:port` of a connection string, for messages (`?` for what it leaves to defaults).
pub(crate) fn host_port(conninfo: &str) -> String {
    let pairs = conninfo_pairs(conninfo);
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    match (get("host").or(get("hostaddr")), get("port")) {
        (Some(h), Some(p)) => format!("{h} port {p}"),
        (Some(h), None) => h,
        (None, Some(p)) => format!("port {p}"),
        (None, None) if conninfo.contains("://") => conninfo.to_string(),
        (None, None) => "an unnamed primary (primary_conninfo names no host)".into(),
    }
}

/// A walsender serving a standby or a logical consumer (`pg_stat_replication`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Sender {
    pub(crate) pid: i32,
    pub(crate) user: String,
    pub(crate) application_name: String,
    /// The client's address; `None` over a Unix socket.
    pub(crate) client_addr: Option<String>,
    pub(crate) state: String,
    /// The slot it streams from, if any.
    pub(crate) slot: Option<String>,
    /// True for a logical consumer (its slot is logical), false for a physical standby.
    pub(crate) logical: bool,
}

/// A replication slot (`pg_replication_slots`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) name: String,
    /// `physical` or `logical`.
    pub(crate) kind: String,
    pub(crate) plugin: Option<String>,
    pub(crate) database: Option<String>,
    pub(crate) active: bool,
    pub(crate) restart_lsn: Option<String>,
    pub(crate) confirmed_flush_lsn: Option<String>,
    /// WAL kept for this slot: current position − restart_lsn.
    pub(crate) retained_bytes: Option<i64>,
    /// Logical slots: current position − confirmed_flush_lsn.
    pub(crate) lag_bytes: Option<i64>,
    /// 17+ logical slots without a consumer: whether changes wait to be decoded (`None`
    /// when that could not be learned).
    #[serde(default)]
    pub(crate) pending_changes: Option<bool>,
    /// 17+: the slot was invalidated (`conflicting`, or `wal_status` lost).
    #[serde(default)]
    pub(crate) invalidated: bool,
}

impl Slot {
    pub(crate) fn is_logical(&self) -> bool {
        self.kind == "logical"
    }
}

/// A subscription of one database (`pg_subscription`, `pg_subscription_rel`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Subscription {
    pub(crate) name: String,
    pub(crate) database: String,
    pub(crate) enabled: bool,
    /// The publisher's connection string without its password.
    pub(crate) conninfo: String,
    /// The slot on the publisher, `None` when unset.
    pub(crate) slot: Option<String>,
    pub(crate) publications: Vec<String>,
    /// Tables whose state is ready (`r`), and all tables.
    pub(crate) tables_ready: i64,
    pub(crate) tables: i64,
    /// Its replication origin (`pg_<oid>`): what records how far it applied.
    pub(crate) origin: String,
    /// The origin's id on this cluster (`pg_replication_origin.roident`).
    pub(crate) origin_id: Option<i32>,
}

/// A publication of one database.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Publication {
    pub(crate) name: String,
    pub(crate) database: String,
    pub(crate) all_tables: bool,
    pub(crate) tables: i64,
}

/// What the catalog says about replication.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Replication {
    pub(crate) in_recovery: bool,
    pub(crate) wal_level: String,
    pub(crate) max_replication_slots: i64,
    /// `pg_current_wal_lsn()` (none in recovery).
    pub(crate) current_lsn: Option<String>,
    pub(crate) senders: Vec<Sender>,
    pub(crate) slots: Vec<Slot>,
    pub(crate) subscriptions: Vec<Subscription>,
    pub(crate) publications: Vec<Publication>,
}

type PgResult<T> = Result<T, tokio_postgres::Error>;

/// The cluster-wide part, through a superuser connection to any database.
pub(crate) async fn read(client: &Client, version: u32) -> PgResult<Replication> {
    let row = client
        .query_one(
            "SELECT pg_catalog.pg_is_in_recovery(), current_setting('wal_level'), \
             current_setting('max_replication_slots')::int8, \
             CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL ELSE pg_catalog.pg_current_wal_lsn()::text END",
            &[],
        )
        .await?;
    let mut r = Replication {
        in_recovery: row.get(0),
        wal_level: row.get(1),
        max_replication_slots: row.get(2),
        current_lsn: row.get(3),
        ..Replication::default()
    };
    r.slots = slots(client, version, r.in_recovery).await?;
    r.senders = senders(client).await?;
    if version >= 170_000 && !r.in_recovery {
        for s in r.slots.iter_mut().filter(|s| s.is_logical() && !s.active) {
            s.pending_changes = pending_changes(client, &s.name).await;
        }
    }
    Ok(r)
}

async fn slots(client: &Client, version: u32, in_recovery: bool) -> PgResult<Vec<Slot>> {
    let here = if in_recovery {
        "pg_catalog.pg_last_wal_replay_lsn()"
    } else {
        "pg_catalog.pg_current_wal_lsn()"
    };
    // 17: a logical slot knows it was invalidated (`conflicting`); 13: wal_status.
    let invalid = match version {
        v if v >= 170_000 => "coalesce(conflicting, false) OR wal_status = 'lost'",
        v if v >= 130_000 => "wal_status = 'lost'",
        _ => "false",
    };
    let rows = client
        .query(
            &format!(
                "SELECT slot_name::text, slot_type, plugin::text, database::text, active, \
                 restart_lsn::text, confirmed_flush_lsn::text, \
                 pg_catalog.pg_wal_lsn_diff({here}, restart_lsn)::int8, \
                 pg_catalog.pg_wal_lsn_diff({here}, confirmed_flush_lsn)::int8, {invalid} \
                 FROM pg_catalog.pg_replication_slots WHERE NOT temporary ORDER BY slot_name"
            ),
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Slot {
            name: r.get(0),
            kind: r.get(1),
            plugin: r.get(2),
            database: r.get(3),
            active: r.get(4),
            restart_lsn: r.get(5),
            confirmed_flush_lsn: r.get(6),
            retained_bytes: r.get(7),
            lag_bytes: r.get(8),
            pending_changes: None,
            invalidated: r.get::<_, Option<bool>>(9).unwrap_or(false),
        })
        .collect())
}

async fn senders(client: &Client) -> PgResult<Vec<Sender>> {
    let rows = client
        .query(
            "SELECT r.pid, r.usename::text, r.application_name, host(r.client_addr), r.state, \
             s.slot_name::text, coalesce(s.slot_type = 'logical', false) \
             FROM pg_catalog.pg_stat_replication r \
             LEFT JOIN pg_catalog.pg_replication_slots s ON s.active_pid = r.pid \
             ORDER BY r.application_name, r.pid",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Sender {
            pid: r.get(0),
            user: r.get::<_, Option<String>>(1).unwrap_or_default(),
            application_name: r.get::<_, Option<String>>(2).unwrap_or_default(),
            client_addr: r.get(3),
            state: r.get::<_, Option<String>>(4).unwrap_or_default(),
            slot: r.get(5),
            logical: r.get(6),
        })
        .collect())
}

/// Whether a logical slot nobody consumes has changes left to decode: what pg_upgrade 17+
/// refuses once the server is stopped. Learned from a temporary copy of the slot decoded
/// with `test_decoding` (the slot itself is not advanced; the copy vanishes with the
/// session). `None` when the copy cannot be made (no `test_decoding`, no free slot).
async fn pending_changes(client: &Client, slot: &str) -> Option<bool> {
    let copy = format!("pgleap_peek_{}", std::process::id());
    let made = client
        .query_one(
            "SELECT pg_catalog.pg_copy_logical_replication_slot($1, $2, true, 'test_decoding') IS NOT NULL",
            &[&slot, &copy],
        )
        .await;
    if let Err(e) = made {
        tracing::debug!("cannot copy slot {slot} to peek at it: {e}");
        return None;
    }
    let peeked = client
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_logical_slot_peek_changes($1, NULL, 1, 'skip-empty-xacts', '1')",
            &[&copy],
        )
        .await;
    let _ = client
        .execute("SELECT pg_catalog.pg_drop_replication_slot($1)", &[&copy])
        .await;
    match peeked {
        Ok(r) => Some(r.get::<_, i64>(0) > 0),
        Err(e) => {
            tracing::debug!("cannot peek at the copy of slot {slot}: {e}");
            None
        }
    }
}

/// One database's subscriptions and publications (`pg_subscription_rel` and
/// `pg_publication` are per database).
pub(crate) async fn read_database(
    client: &Client,
    database: &str,
    into: &mut Replication,
) -> PgResult<()> {
    let subs = client
        .query(
            "SELECT s.subname::text, s.subenabled, s.subconninfo, s.subslotname::text, \
             s.subpublications::text[], \
             (SELECT count(*) FROM pg_catalog.pg_subscription_rel r WHERE r.srsubid = s.oid AND r.srsubstate = 'r'), \
             (SELECT count(*) FROM pg_catalog.pg_subscription_rel r WHERE r.srsubid = s.oid), \
             'pg_' || s.oid, \
             (SELECT o.roident::int4 FROM pg_catalog.pg_replication_origin o WHERE o.roname = 'pg_' || s.oid) \
             FROM pg_catalog.pg_subscription s \
             WHERE s.subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) \
             ORDER BY 1",
            &[],
        )
        .await?;
    for r in subs {
        into.subscriptions.push(Subscription {
            name: r.get(0),
            database: database.to_string(),
            enabled: r.get(1),
            conninfo: without_password(&r.get::<_, String>(2)),
            slot: r.get(3),
            publications: r.get(4),
            tables_ready: r.get(5),
            tables: r.get(6),
            origin: r.get(7),
            origin_id: r.get(8),
        });
    }
    let pubs = client
        .query(
            "SELECT p.pubname::text, p.puballtables, \
             (SELECT count(*) FROM pg_catalog.pg_publication_tables t WHERE t.pubname = p.pubname) \
             FROM pg_catalog.pg_publication p ORDER BY 1",
            &[],
        )
        .await?;
    for r in pubs {
        into.publications.push(Publication {
            name: r.get(0),
            database: database.to_string(),
            all_tables: r.get(1),
            tables: r.get(2),
        });
    }
    Ok(())
}

/// `pg_logical/replorigin_checkpoint` of a cleanly stopped cluster: how far each
/// replication origin had applied (origin id → remote LSN as `X/Y`). The file is written by
/// every shutdown checkpoint; pg_upgrade before 17 does not carry it, so it is what a
/// subscription resumes from after such an upgrade.
pub(crate) fn origin_progress(bytes: &[u8]) -> Option<Vec<(i32, String)>> {
    // A magic number, 16-byte records (roident u16, padding, remote_lsn u64), a CRC-32C.
    const MAGIC: u32 = 0x1257_DADE;
    let magic = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
    if magic != MAGIC || bytes.len() < 8 || (bytes.len() - 8) % 16 != 0 {
        return None;
    }
    let body = &bytes[4..bytes.len() - 4];
    let crc = u32::from_ne_bytes(bytes[bytes.len() - 4..].try_into().ok()?);
    if crc32c::crc32c(&bytes[..bytes.len() - 4]) != crc {
        return None;
    }
    Some(
        body.chunks_exact(16)
            .map(|rec| {
                let id = u16::from_ne_bytes([rec[0], rec[1]]);
                let lsn = u64::from_ne_bytes(rec[8..16].try_into().unwrap_or_default());
                (
                    i32::from(id),
                    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF),
                )
            })
            .collect(),
    )
}

/// [`origin_progress`] of the old data directory, read as the owner; `None` when the file is
/// absent or unreadable.
pub(crate) fn read_origin_progress(
    owner: &crate::exec::process::Owner,
    datadir: &Path,
) -> Option<Vec<(i32, String)>> {
    let path = datadir.join("pg_logical").join("replorigin_checkpoint");
    let bytes = crate::exec::ownerfs::read(owner, &path)
        .inspect_err(|e| tracing::debug!("cannot read {}: {e}", path.display()))
        .ok()?;
    origin_progress(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_passwords_from_connection_strings() {
        assert_eq!(
            without_password("host=10.0.0.5 port=5432 user=rep password=s3cret application_name=b"),
            "host=10.0.0.5 port=5432 user=rep application_name=b"
        );
        assert_eq!(
            without_password("host='/run/pg sock' password='a b\\'c' dbname=app"),
            "host='/run/pg sock' dbname=app"
        );
        assert_eq!(
            without_password("postgresql://rep:s3cret@db1:5433/app?password=x&sslmode=require"),
            "postgresql://rep@db1:5433/app?sslmode=require"
        );
    }

    #[test]
    fn names_the_primary() {
        assert_eq!(host_port("user=rep host=db1 port=5433"), "db1 port 5433");
        assert_eq!(host_port("host=/tmp/s"), "/tmp/s");
    }

    #[test]
    fn reads_origin_checkpoints() {
        let mut bytes = 0x1257_DADE_u32.to_ne_bytes().to_vec();
        let mut rec = [0u8; 16];
        rec[..2].copy_from_slice(&1u16.to_ne_bytes());
        rec[8..].copy_from_slice(&0x0000_0001_0300_0060_u64.to_ne_bytes());
        bytes.extend(rec);
        let crc = crc32c::crc32c(&bytes);
        bytes.extend(crc.to_ne_bytes());
        assert_eq!(
            origin_progress(&bytes),
            Some(vec![(1, "1/3000060".to_string())])
        );
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(origin_progress(&bytes), None, "a bad checksum is refused");
    }
}
