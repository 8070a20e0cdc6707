//! Checkpoints before the old server stops, run by the `__db` request as the owner. The
//! shutdown checkpoint inside the downtime window writes every buffer dirtied since the last
//! checkpoint; on a busy server one CHECKPOINT while it still serves leaves all that its
//! clients dirtied meanwhile. So pgleap checkpoints again while each round is still long
//! and getting shorter, bounded, and the last one ends right before the stop.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::error::Result;
use crate::inspect::pgerr::pg_error;

/// At most this many CHECKPOINTs before the stop.
pub(crate) const MAX_ROUNDS: usize = 4;
/// A checkpoint this short leaves the shutdown checkpoint as little: stop there.
const SHORT_SECS: f64 = 0.5;
/// A round that is not at least this much shorter than the one before will not converge
/// (clients dirty buffers as fast as they are written): stop there.
const CONVERGING: f64 = 0.8;
/// With pg_buffercache, fewer dirty buffers than this (16 MiB of 8 kB pages) need no
/// further round.
const FEW_DIRTY: i64 = 2048;

/// One CHECKPOINT before the stop.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Round {
    pub(crate) seconds: f64,
    /// Buffers the checkpoint wrote, as the server's statistics count them
    /// (`pg_stat_checkpointer`, 17+; `pg_stat_bgwriter` before).
    pub(crate) buffers_written: Option<i64>,
    /// Dirty shared buffers before it, when pg_buffercache (16+) is installed.
    pub(crate) dirty_before: Option<i64>,
}

/// The checkpoints before the stop and what was left dirty after the last.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct CheckpointReport {
    pub(crate) rounds: Vec<Round>,
    /// Dirty shared buffers right after the last round, when pg_buffercache (16+) is installed.
    pub(crate) dirty_left: Option<i64>,
}

/// Whether another round is worth it after `rounds`.
pub(crate) fn another_round(rounds: &[Round], max: usize) -> bool {
    let Some(last) = rounds.last() else {
        return true;
    };
    if rounds.len() >= max || last.seconds < SHORT_SECS {
        return false;
    }
    if last.dirty_before.is_some_and(|d| d < FEW_DIRTY) {
        return false;
    }
    match rounds.len().checked_sub(2).map(|i| &rounds[i]) {
        Some(prev) => last.seconds <= prev.seconds * CONVERGING,
        None => true,
    }
}

/// CHECKPOINTs until what is left to flush is small, at most `max` of them.
pub(crate) async fn settle(client: &Client, max: usize) -> Result<CheckpointReport> {
    let version = server_version(client).await?;
    let buffercache = version >= 160_000 && has_buffercache(client).await;
    let mut report = CheckpointReport::default();
    while another_round(&report.rounds, max.max(1)) {
        let dirty_before = if buffercache {
            dirty(client).await
        } else {
            None
        };
        let before = counters(client, version).await;
        let started = Instant::now();
        client
            .batch_execute("CHECKPOINT")
            .await
            .map_err(|e| pg_error("CHECKPOINT", &e))?;
        let seconds = started.elapsed().as_secs_f64();
        let after = counted_after(client, version, before).await;
        report.rounds.push(Round {
            seconds,
            buffers_written: before.zip(after).map(|(b, a)| a.1 - b.1),
            dirty_before,
        });
    }
    if buffercache {
        report.dirty_left = dirty(client).await;
    }
    Ok(report)
}

async fn server_version(client: &Client) -> Result<u32> {
    let v: String = client
        .query_one("SELECT current_setting('server_version_num')", &[])
        .await
        .map_err(|e| pg_error("querying the server", &e))?
        .get(0);
    Ok(v.parse().unwrap_or(0))
}

async fn has_buffercache(client: &Client) -> bool {
    client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_buffercache'",
            &[],
        )
        .await
        .is_ok_and(|r| r.is_some())
}

/// Dirty shared buffers (pg_buffercache 16+; cheap: no per-buffer rows).
async fn dirty(client: &Client) -> Option<i64> {
    client
        .query_one(
            "SELECT buffers_dirty::bigint FROM pg_buffercache_summary()",
            &[],
        )
        .await
        .ok()
        .and_then(|r| r.get(0))
}

/// Requested checkpoints and buffers written by checkpoints so far. 17: they moved to
/// pg_stat_checkpointer.
async fn counters(client: &Client, version: u32) -> Option<(i64, i64)> {
    let q = if version >= 170_000 {
        "SELECT num_requested, buffers_written FROM pg_catalog.pg_stat_checkpointer"
    } else {
        "SELECT checkpoints_req, buffers_checkpoint FROM pg_catalog.pg_stat_bgwriter"
    };
    let row = client.query_one(q, &[]).await.ok()?;
    Some((row.get(0), row.get(1)))
}

/// The counters once the checkpointer has reported the CHECKPOINT just done: it wakes the
/// waiting session before it reports its statistics, so they may lag a moment (waited for,
/// up to 2 s, by the requested checkpoints moving).
async fn counted_after(
    client: &Client,
    version: u32,
    before: Option<(i64, i64)>,
) -> Option<(i64, i64)> {
    let before = before?;
    for _ in 0..100 {
        let now = counters(client, version).await?;
        if now.0 > before.0 {
            return Some(now);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(seconds: f64, dirty_before: Option<i64>) -> Round {
        Round {
            seconds,
            buffers_written: None,
            dirty_before,
        }
    }

    #[test]
    fn always_one_round() {
        assert!(another_round(&[], MAX_ROUNDS));
    }

    #[test]
    fn stops_once_a_round_is_short() {
        assert!(!another_round(&[round(0.2, None)], MAX_ROUNDS));
        assert!(another_round(&[round(3.0, None)], MAX_ROUNDS));
    }

    #[test]
    fn goes_on_while_rounds_shrink() {
        assert!(another_round(
            &[round(6.0, None), round(2.0, None)],
            MAX_ROUNDS
        ));
    }

    #[test]
    fn stops_when_rounds_no_longer_shrink() {
        // Clients dirty buffers as fast as the checkpoint writes them: more rounds only load
        // the server.
        assert!(!another_round(
            &[round(2.0, None), round(1.9, None)],
            MAX_ROUNDS
        ));
    }

    #[test]
    fn stops_when_few_buffers_were_dirty() {
        assert!(!another_round(&[round(1.0, Some(100))], MAX_ROUNDS));
    }

    #[test]
    fn bounded() {
        let rounds = [
            round(8.0, None),
            round(4.0, None),
            round(2.0, None),
            round(1.0, None),
        ];
        assert!(!another_round(&rounds, MAX_ROUNDS));
        assert!(!another_round(&rounds[..1], 1));
    }
}
