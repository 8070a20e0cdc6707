//! ANALYZE after an upgrade, run by the `__db` request as the owner: parallel over
//! relations (largest first) across every database, at most `--jobs` sessions at once, and
//! in stages: statistics target 1 for every relation before any relation gets target 10,
//! then the configured target. The planner has minimal statistics everywhere as soon as the
//! first stage ends, which is what the report states.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::inspect::pgerr::pg_error;
use crate::inspect::session::{Target, connect, connect_any};

/// What ANALYZE did, and when each stage had covered every relation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AnalyzeReport {
    pub(crate) databases: usize,
    pub(crate) relations: usize,
    pub(crate) stages: usize,
    /// Seconds from the start of ANALYZE to the end of each stage, in order.
    #[serde(default)]
    pub(crate) stage_seconds: Vec<f64>,
}

/// One relation to analyze and its size, which orders the work.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rel {
    pub(crate) name: String,
    pub(crate) bytes: i64,
    /// Lacks some optimizer statistics (always, unless only what is missing is asked for).
    pub(crate) missing: bool,
}

/// Relations at or below this size cost a session little more than the statement itself:
/// a worker keeps to its database for them rather than reconnecting elsewhere.
const SMALL_BYTES: i64 = 8 * 1024 * 1024;

/// What is left of one stage: per database, its relations largest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Queue {
    dbs: Vec<(String, VecDeque<Rel>)>,
}

impl Queue {
    /// `work` lists each database's relations in any order; `missing_only` keeps those
    /// that lack statistics.
    pub(crate) fn new(work: &[(String, Vec<Rel>)], missing_only: bool) -> Queue {
        let dbs = work
            .iter()
            .map(|(db, rels)| {
                let mut rels: Vec<Rel> = rels
                    .iter()
                    .filter(|r| r.missing || !missing_only)
                    .cloned()
                    .collect();
                rels.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
                (db.clone(), VecDeque::from(rels))
            })
            .collect();
        Queue { dbs }
    }

    /// The next relation as [`Queue::next`] picks it and, when it is small, the small ones
    /// that follow it in its database, up to `max` in all.
    pub(crate) fn next_batch(
        &mut self,
        current: Option<&str>,
        max: usize,
    ) -> Option<(String, Vec<Rel>)> {
        let (db, first) = self.next(current)?;
        let mut batch = vec![first];
        if batch[0].bytes <= BATCH_BYTES {
            if let Some((_, rels)) = self.dbs.iter_mut().find(|(d, _)| *d == db) {
                while batch.len() < max && rels.front().is_some_and(|r| r.bytes <= BATCH_BYTES) {
                    batch.extend(rels.pop_front());
                }
            }
        }
        Some((db, batch))
    }

    /// Relations left.
    pub(crate) fn len(&self) -> usize {
        self.dbs.iter().map(|(_, r)| r.len()).sum()
    }

    /// The next relation for a worker whose session is in `current`: the largest relation
    /// left anywhere, unless its own database still has one at least half that size (or the
    /// largest left is small), which spares a reconnection.
    pub(crate) fn next(&mut self, current: Option<&str>) -> Option<(String, Rel)> {
        let best = self
            .dbs
            .iter()
            .enumerate()
            .filter_map(|(i, (_, rels))| rels.front().map(|r| (i, r.bytes)))
            .fold(None, |acc: Option<(usize, i64)>, (i, b)| match acc {
                Some((_, ab)) if ab >= b => acc,
                _ => Some((i, b)),
            })?;
        let mine = current.and_then(|c| {
            self.dbs
                .iter()
                .position(|(db, rels)| db == c && !rels.is_empty())
        });
        let pick = match mine {
            Some(i) => {
                let own = self.dbs[i].1.front().map_or(0, |r| r.bytes);
                if own.saturating_mul(2) >= best.1 || best.1 <= SMALL_BYTES {
                    i
                } else {
                    best.0
                }
            }
            None => best.0,
        };
        let (db, rels) = &mut self.dbs[pick];
        rels.pop_front().map(|r| (db.clone(), r))
    }
}

/// Every ANALYZE session: no cost-based delay, and commits that do not wait for the WAL
/// flush. Each relation's statistics are their own transaction; on a crash the last few
/// are lost and the next ANALYZE (or autovacuum) makes them again, while waiting for a
/// flush per relation is what bounds the rate through thousands of small ones.
const SESSION: &str = "SET vacuum_cost_delay = 0; SET synchronous_commit = off";

/// Relations at most this size are analyzed several to a statement (`ANALYZE a, b, c`):
/// for them the round trip and the statement cost as much as the sampling.
const BATCH_BYTES: i64 = 1024 * 1024;
/// At most this many relations to a statement.
const BATCH: usize = 16;

/// The statistics targets of the stages: 1 and 10, then the configured one (`None`).
pub(crate) fn stage_targets(stages: bool) -> Vec<Option<u32>> {
    if stages {
        vec![Some(1), Some(10), None]
    } else {
        vec![None]
    }
}

/// Every relation ANALYZE visits, with its size and whether it lacks statistics: a column,
/// expression index or extended statistics object without any (what 18's pg_upgrade, which
/// carries optimizer statistics, leaves missing).
const RELATIONS: &str = "SELECT c.oid::pg_catalog.regclass::text, \
    COALESCE(pg_catalog.pg_table_size(c.oid), 0), ";
const MISSING: &str = "(EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid \
        AND a.attnum > 0 AND NOT a.attisdropped AND a.attstattarget IS DISTINCT FROM 0 \
        AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_statistic s WHERE s.starelid = a.attrelid \
            AND s.staattnum = a.attnum AND s.stainherit = (c.relkind = 'p'))) \
    OR EXISTS (SELECT 1 FROM pg_catalog.pg_statistic_ext e WHERE e.stxrelid = c.oid \
        AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_statistic_ext_data d WHERE d.stxoid = e.oid)) \
    OR EXISTS (SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute ia ON ia.attrelid = i.indexrelid \
        WHERE i.indrelid = c.oid AND i.indexprs IS NOT NULL AND ia.attnum > 0 \
        AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_statistic s WHERE s.starelid = i.indexrelid AND s.staattnum = ia.attnum)))";
const FROM: &str = " FROM pg_catalog.pg_class c \
    WHERE c.relkind IN ('r', 'm', 'p') AND c.relpersistence <> 't' ORDER BY 1";

/// The relations a stage visits: with `missing_only` (18 targets), the early stages take only
/// relations without statistics, and the last takes every relation, as pg_upgrade 18
/// advises, so that the counters that trigger autovacuum and autoanalyze start right.
fn stage_takes_missing_only(missing_only: bool, n: usize, count: usize) -> bool {
    missing_only && n + 1 < count
}

/// Analyzes every database's relations, stage by stage, `jobs` sessions at a time.
pub(crate) async fn analyze(
    target: &Target,
    jobs: usize,
    stages: bool,
    missing_only: bool,
) -> Result<AnalyzeReport> {
    let started = Instant::now();
    let (user, work) = analyze_work(target, missing_only).await?;
    let total: usize = work.iter().map(|(_, r)| r.len()).sum();
    let targets = stage_targets(stages);
    let mut stage_seconds = Vec::new();
    for (n, stat_target) in targets.iter().enumerate() {
        let only_missing = stage_takes_missing_only(missing_only, n, targets.len());
        let queue = Queue::new(&work, only_missing);
        let count = queue.len();
        let stage = Arc::new(Stage {
            target: target.clone(),
            user: user.clone(),
            queue: Mutex::new(queue),
            done: Mutex::new(0),
            set: stat_target.map_or_else(
                || format!("{SESSION}; RESET default_statistics_target"),
                |t| format!("{SESSION}; SET default_statistics_target = {t}"),
            ),
            name: format!("stage {}/{}", n + 1, targets.len()),
            total: count,
        });
        let workers: Vec<_> = (0..jobs.max(1).min(count.max(1)))
            .map(|_| tokio::spawn(worker(stage.clone())))
            .collect();
        for w in workers {
            w.await.map_err(|e| Error::Worker(e.to_string()))??;
        }
        let at = started.elapsed().as_secs_f64();
        stage_seconds.push(at);
        say(&format!(
            "analyze {} done after {at:.1}s: {}",
            stage.name,
            stage_meaning(n, targets.len())
        ));
    }
    Ok(AnalyzeReport {
        databases: work.len(),
        relations: total,
        stages: targets.len(),
        stage_seconds,
    })
}

/// What the end of stage `n` (0-based) of `count` means for the planner.
pub(crate) fn stage_meaning(n: usize, count: usize) -> &'static str {
    match (n, count) {
        (_, 1) => "full statistics everywhere",
        (0, _) => "minimal statistics everywhere",
        (n, c) if n + 1 == c => "full statistics everywhere",
        _ => "medium statistics everywhere",
    }
}

/// One progress line on stderr, in one write so a reader never sees half a line.
fn say(line: &str) {
    use std::io::Write as _;
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

/// One stage's shared state.
struct Stage {
    target: Target,
    user: String,
    queue: Mutex<Queue>,
    done: Mutex<usize>,
    /// The statistics target of this stage, as SET commands.
    set: String,
    name: String,
    total: usize,
}

/// Takes relations off the stage's queue until it is empty, keeping one session open in
/// the database of the last relation.
async fn worker(stage: Arc<Stage>) -> Result<()> {
    let mut session: Option<(String, Client)> = None;
    loop {
        let next = {
            let mut q = stage
                .queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            q.next_batch(session.as_ref().map(|(db, _)| db.as_str()), BATCH)
        };
        let Some((db, rels)) = next else {
            return Ok(());
        };
        if session.as_ref().is_none_or(|(d, _)| *d != db) {
            // The previous session ends here, before the next one starts.
            drop(session.take());
            let client = connect(&stage.target, &stage.user, &db)
                .await
                .map_err(|e| pg_error(&format!("connecting to {db}"), &e))?;
            client
                .batch_execute(&stage.set)
                .await
                .map_err(|e| pg_error("SET", &e))?;
            session = Some((db.clone(), client));
        }
        let names: Vec<&str> = rels.iter().map(|r| r.name.as_str()).collect();
        let names = names.join(", ");
        if let Some((_, client)) = &session {
            client
                .batch_execute(&format!("ANALYZE {names}"))
                .await
                .map_err(|e| pg_error(&format!("ANALYZE {names} in {db}"), &e))?;
        }
        let d = {
            let mut done = stage
                .done
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *done += rels.len();
            *done
        };
        say(&format!(
            "analyze {}: {d}/{} relations ({db}: {names})",
            stage.name, stage.total
        ));
    }
}

type Work = Vec<(String, Vec<Rel>)>;

/// The role that connected and, per database, the relations to analyze. The lists are
/// computed once: after the first stage nothing is missing any more.
async fn analyze_work(target: &Target, missing_only: bool) -> Result<(String, Work)> {
    let (first, user) = connect_any(target, "postgres").await?;
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
    drop(first);
    let query = if missing_only {
        format!("{RELATIONS}{MISSING}{FROM}")
    } else {
        format!("{RELATIONS}true{FROM}")
    };
    let mut work = Vec::new();
    for db in &dbs {
        let client = connect(target, &user, db)
            .await
            .map_err(|e| pg_error(&format!("connecting to {db}"), &e))?;
        let rels: Vec<Rel> = client
            .query(&query, &[])
            .await
            .map_err(|e| pg_error(&format!("listing relations in {db}"), &e))?
            .iter()
            .map(|r| Rel {
                name: r.get(0),
                bytes: r.get(1),
                missing: r.get(2),
            })
            .collect();
        work.push((db.clone(), rels));
    }
    Ok((user, work))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: i64 = 1024 * 1024;

    fn rel(name: &str, bytes: i64) -> Rel {
        Rel {
            name: name.into(),
            bytes,
            missing: true,
        }
    }

    fn drain(q: &mut Queue, current: Option<&str>) -> Vec<(String, String)> {
        let mut cur = current.map(str::to_string);
        let mut out = Vec::new();
        while let Some((db, r)) = q.next(cur.as_deref()) {
            cur = Some(db.clone());
            out.push((db, r.name));
        }
        out
    }

    #[test]
    fn largest_first_within_a_database() {
        let mut q = Queue::new(
            &[(
                "a".into(),
                vec![rel("small", 1), rel("big", 100 * MB), rel("mid", 10 * MB)],
            )],
            false,
        );
        let order: Vec<String> = drain(&mut q, None).into_iter().map(|(_, r)| r).collect();
        assert_eq!(order, ["big", "mid", "small"]);
    }

    #[test]
    fn a_fresh_worker_takes_the_largest_anywhere() {
        let mut q = Queue::new(
            &[
                ("a".into(), vec![rel("a1", MB)]),
                ("b".into(), vec![rel("b1", 500 * MB)]),
            ],
            false,
        );
        assert_eq!(
            q.next(None).map(|(db, r)| (db, r.name)),
            Some(("b".into(), "b1".into()))
        );
    }

    #[test]
    fn a_worker_leaves_its_database_for_a_much_larger_relation() {
        let mut q = Queue::new(
            &[
                ("a".into(), vec![rel("a1", 20 * MB), rel("a2", 1)]),
                ("b".into(), vec![rel("b1", 500 * MB)]),
            ],
            false,
        );
        // a1 is less than half of b1: b1 first, even for a worker already in a.
        assert_eq!(q.next(Some("a")).map(|(db, _)| db), Some("b".into()));
        // Then back to what is left, largest first.
        assert_eq!(q.next(Some("b")).map(|(_, r)| r.name), Some("a1".into()));
    }

    #[test]
    fn small_relations_keep_a_worker_in_its_database() {
        let mut q = Queue::new(
            &[
                ("a".into(), vec![rel("a1", 1000), rel("a2", 10)]),
                ("b".into(), vec![rel("b1", 2 * MB), rel("b2", MB)]),
            ],
            false,
        );
        let order = drain(&mut q, Some("a"));
        let dbs: Vec<&str> = order.iter().map(|(db, _)| db.as_str()).collect();
        // One switch only: a's relations, then b's.
        assert_eq!(dbs, ["a", "a", "b", "b"]);
        assert_eq!(order[2].1, "b1");
    }

    #[test]
    fn small_relations_go_several_to_a_statement() {
        let mut q = Queue::new(
            &[
                (
                    "a".into(),
                    vec![
                        rel("big", 100 * MB),
                        rel("s1", 10),
                        rel("s2", 20),
                        rel("s3", 30),
                    ],
                ),
                ("b".into(), vec![rel("b1", 5)]),
            ],
            false,
        );
        let names = |b: Option<(String, Vec<Rel>)>| {
            b.map(|(db, rels)| (db, rels.into_iter().map(|r| r.name).collect::<Vec<_>>()))
        };
        // A large relation goes alone.
        assert_eq!(
            names(q.next_batch(None, 2)),
            Some(("a".into(), vec!["big".into()]))
        );
        // Small ones in twos here, from the worker's own database only.
        assert_eq!(
            names(q.next_batch(Some("a"), 2)),
            Some(("a".into(), vec!["s3".into(), "s2".into()]))
        );
        assert_eq!(
            names(q.next_batch(Some("a"), 2)),
            Some(("a".into(), vec!["s1".into()]))
        );
        assert_eq!(
            names(q.next_batch(Some("a"), 2)),
            Some(("b".into(), vec!["b1".into()]))
        );
        assert_eq!(q.next_batch(Some("b"), 2), None);
    }

    #[test]
    fn every_relation_comes_out_exactly_once() {
        let work: Vec<(String, Vec<Rel>)> = (0..5)
            .map(|d| {
                (
                    format!("db{d}"),
                    (0..40)
                        .map(|r| rel(&format!("t{r}"), (r * 37 % 11) * MB))
                        .collect(),
                )
            })
            .collect();
        let mut q = Queue::new(&work, false);
        assert_eq!(q.len(), 200);
        let mut out = drain(&mut q, None);
        assert_eq!(out.len(), 200);
        out.sort();
        out.dedup();
        assert_eq!(out.len(), 200);
    }

    #[test]
    fn missing_only_early_stages_take_relations_without_statistics() {
        let mut carried = rel("carried", 50 * MB);
        carried.missing = false;
        let work = vec![("a".to_string(), vec![carried, rel("new", MB)])];
        assert_eq!(Queue::new(&work, true).len(), 1);
        assert_eq!(Queue::new(&work, false).len(), 2);
        // 18: stages 1 and 2 on what lacks statistics, the last on everything.
        assert!(stage_takes_missing_only(true, 0, 3));
        assert!(stage_takes_missing_only(true, 1, 3));
        assert!(!stage_takes_missing_only(true, 2, 3));
        assert!(!stage_takes_missing_only(false, 0, 3));
    }

    #[test]
    fn stages_go_minimal_then_medium_then_full() {
        assert_eq!(stage_targets(true), [Some(1), Some(10), None]);
        assert_eq!(stage_targets(false), [None]);
        assert_eq!(stage_meaning(0, 3), "minimal statistics everywhere");
        assert_eq!(stage_meaning(1, 3), "medium statistics everywhere");
        assert_eq!(stage_meaning(2, 3), "full statistics everywhere");
        assert_eq!(stage_meaning(0, 1), "full statistics everywhere");
    }
}
