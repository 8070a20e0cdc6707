//! The downtime estimate: how long clients wait from stopping the old server to the new one
//! accepting connections, from what drives pg_upgrade's time, with its basis shown.
//!
//! pg_upgrade dumps and restores the schema of every database (template1 and postgres too),
//! `--jobs` databases at a time, so the time grows with the databases and with the user
//! relations (tables, indexes, TOAST tables, sequences, views) in each, and a single large
//! database gets one lane only. Copying modes add the bytes of the relation files.
//!
//! The constants come from real pg_upgrade 16 → 17 runs in link mode, each timed against
//! `initdb --no-sync` of the new major on the same machine at the same moment: downtime
//! in initdb times was 1.6 for an empty cluster, 6.6 for 30 empty databases, 26.6 for 30
//! databases of 100 tables and 38 for one database of 3,000 tables (`--jobs 2`; a table with
//! its primary key, TOAST table and index counts 4 relations). In those units a database
//! costs 0.35, a relation 0.0032 and the rest 1.3. Seconds on the reference machine are
//! those units times its initdb, 0.5 s: the one on which 30 databases of 100 tables took
//! 13–14 s in the field. Machines differ more than anything else here, so pgleap scales the
//! estimate by what it times before the window in the same run: `initdb` of the new cluster,
//! then `pg_upgrade --check` against it, which starts servers and reads every database's
//! catalog as the window does. One initdb of half a second on a shared machine varied 3×
//! between runs whose window varied 1.4×; the check, several times longer, followed the
//! window. The factor is their summed time over their summed reference time, so each counts
//! by its length and a slow initdb alone moves the factor by a fraction of its own swing.

use serde::{Deserialize, Serialize};

use crate::plan::Mode;

/// Stopping the old server, pg_upgrade's own checks and global objects, starting the new one.
const FIXED_SECS: f64 = 0.65;
/// Dumping and restoring one database, however small.
const PER_DATABASE_SECS: f64 = 0.17;
/// Dumping and restoring one user relation.
const PER_RELATION_SECS: f64 = 0.0016;
/// Copying relation files, in bytes per second (a modest SSD).
const COPY_RATE: f64 = 200.0 * 1024.0 * 1024.0;
/// `initdb --no-sync` of the new major on the reference machine.
const REFERENCE_INITDB_SECS: f64 = 0.5;
/// `pg_upgrade --check` (with pgleap's collation probe of the new cluster) on the reference
/// machine: a fixed part, then per database and per user relation it reads the catalog of.
/// Fitted on 3 databases of a few relations (0.5–0.6 s) and on 23 databases of 25,000
/// relations (2.2 s where the window took 17.3 s), timed beside the window of the same runs.
const CHECK_FIXED_SECS: f64 = 0.5;
const CHECK_PER_DATABASE_SECS: f64 = 0.04;
const CHECK_PER_RELATION_SECS: f64 = 0.000_06;
/// The machine factor is kept within these bounds: an initdb slowed by something else says
/// little more about pg_upgrade.
const FACTOR_BOUNDS: (f64, f64) = (0.25, 16.0);

/// What the estimate is computed from, kept in the plan so it can be recomputed once initdb
/// has timed the machine.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Inputs {
    /// User relations per database (every database pg_upgrade dumps).
    pub(crate) relations_per_database: Vec<u64>,
    pub(crate) jobs: u64,
    /// Bytes the mode copies (0 for link, swap and clone).
    pub(crate) copy_bytes: u64,
    /// The mode that copies them (copy or copy-file-range), named in the basis; `auto`'s
    /// fallback from copy-file-range to copy changes it (`Inputs::copied_with`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) copy_mode: Option<Mode>,
}

impl Inputs {
    pub(crate) fn new(
        mode: Mode,
        relations_per_database: Vec<u64>,
        jobs: u64,
        bytes: u64,
    ) -> Inputs {
        Inputs {
            relations_per_database,
            jobs: jobs.max(1),
            copy_bytes: if mode.copies_data() { bytes } else { 0 },
            copy_mode: mode.copies_data().then_some(mode),
        }
    }

    /// The same inputs with the files copied in `mode` (a copying mode) instead.
    pub(crate) fn copied_with(&self, mode: Mode) -> Inputs {
        Inputs {
            copy_mode: self.copy_mode.map(|_| mode),
            ..self.clone()
        }
    }
}

/// An estimate and how it was reached.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Estimate {
    pub(crate) seconds: f64,
    pub(crate) basis: String,
    /// `initdb` seconds on this machine, when measured.
    pub(crate) initdb_seconds: Option<f64>,
    /// `pg_upgrade --check` seconds on this machine, once it has run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) check_seconds: Option<f64>,
}

impl Estimate {
    /// Whole seconds, rounded up.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    pub(crate) fn whole_seconds(&self) -> u64 {
        self.seconds.max(0.0).ceil() as u64
    }

    /// The estimate for `inputs` from the same timings (after a change of mode).
    pub(crate) fn redone(&self, inputs: &Inputs) -> Estimate {
        timed(inputs, self.initdb_seconds, self.check_seconds)
    }

    /// This estimate once `pg_upgrade --check` has taken `secs` too.
    pub(crate) fn with_check(&self, inputs: &Inputs, secs: f64) -> Estimate {
        timed(inputs, self.initdb_seconds, Some(secs))
    }
}

/// `pg_upgrade --check`'s seconds on the reference machine for `inputs`.
#[allow(clippy::cast_precision_loss)]
fn reference_check_secs(inputs: &Inputs) -> f64 {
    let relations: u64 = inputs.relations_per_database.iter().sum();
    CHECK_FIXED_SECS
        + CHECK_PER_DATABASE_SECS * inputs.relations_per_database.len() as f64
        + CHECK_PER_RELATION_SECS * relations as f64
}

/// How much slower than the reference this machine is, from the timings taken (their summed
/// time over their summed reference time), bounded; and how it was reached, for the basis.
fn machine_factor(
    inputs: &Inputs,
    initdb_secs: Option<f64>,
    check_secs: Option<f64>,
) -> Option<(f64, String)> {
    let samples: Vec<(&str, f64, f64)> = [
        initdb_secs.map(|t| ("initdb", t, REFERENCE_INITDB_SECS)),
        check_secs.map(|t| ("pg_upgrade --check", t, reference_check_secs(inputs))),
    ]
    .into_iter()
    .flatten()
    .collect();
    if samples.is_empty() {
        return None;
    }
    let measured: f64 = samples.iter().map(|s| s.1).sum();
    let reference: f64 = samples.iter().map(|s| s.2).sum();
    let factor = (measured / reference).clamp(FACTOR_BOUNDS.0, FACTOR_BOUNDS.1);
    let took = samples
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{}{} {:.1}s", s.0, if i == 0 { " took" } else { "" }, s.1))
        .collect::<Vec<_>>()
        .join(" and ");
    let on_reference = samples
        .iter()
        .map(|s| format!("{:.1}s", s.2))
        .collect::<Vec<_>>()
        .join(" and ");
    let how = format!("{took}, {on_reference} on the reference");
    Some((factor, how))
}

/// The estimate for `inputs`; with `initdb_secs`, scaled to this machine.
pub(crate) fn estimate(inputs: &Inputs, initdb_secs: Option<f64>) -> Estimate {
    timed(inputs, initdb_secs, None)
}

/// The estimate for `inputs`, scaled to this machine by whichever timings were taken.
#[allow(clippy::cast_precision_loss)]
fn timed(inputs: &Inputs, initdb_secs: Option<f64>, check_secs: Option<f64>) -> Estimate {
    use std::fmt::Write as _;
    let work: Vec<f64> = inputs
        .relations_per_database
        .iter()
        .map(|r| PER_DATABASE_SECS + PER_RELATION_SECS * *r as f64)
        .collect();
    let databases = work.len() as u64;
    let lanes = inputs.jobs.min(databases).max(1);
    let total: f64 = work.iter().sum();
    // Parallel across databases, but the largest database is one lane's work on its own.
    let largest = work.iter().copied().fold(0.0, f64::max);
    let schema = (total / lanes as f64).max(largest);
    let copy = inputs.copy_bytes as f64 / COPY_RATE;
    let reference = FIXED_SECS + schema + copy;
    let relations: u64 = inputs.relations_per_database.iter().sum();
    let mut basis = format!(
        "{databases} databases and {relations} user relations, {lanes} at a time: {FIXED_SECS}s fixed + {PER_DATABASE_SECS}s per database + {}ms per relation",
        PER_RELATION_SECS * 1000.0
    );
    if inputs.copy_bytes > 0 {
        // copy and copy-file-range copied at the same rate on the same files, both from
        // disk or both from the page cache (README "Performance"): one rate, the mode named.
        let how = inputs
            .copy_mode
            .map(|m| format!(" with --{}", m.name()))
            .unwrap_or_default();
        let _ = write!(
            basis,
            " + {} MiB copied{how} at {} MiB/s",
            inputs.copy_bytes / (1024 * 1024),
            COPY_RATE / (1024.0 * 1024.0)
        );
    }
    let seconds = if let Some((factor, how)) = machine_factor(inputs, initdb_secs, check_secs) {
        let _ = write!(basis, "; × {factor:.1} for this machine ({how})");
        // Copy speed is the disk's, not the CPU's.
        (reference - copy) * factor + copy
    } else {
        basis.push_str(" (reference machine)");
        reference
    };
    Estimate {
        seconds,
        basis,
        initdb_seconds: initdb_secs,
        check_seconds: check_secs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(dbs: usize, rels: u64, jobs: u64) -> Inputs {
        Inputs::new(Mode::Link, vec![rels; dbs], jobs, 0)
    }

    #[test]
    fn field_measurement_is_matched() {
        // 30 databases of 100 tables (a table, its primary key, TOAST table and index: 400
        // relations each), plus template1 and postgres, --jobs 2: measured 13-14 s.
        let mut i = inputs(30, 400, 2);
        i.relations_per_database.extend([0, 0]);
        let e = estimate(&i, None);
        assert!((11.0..17.0).contains(&e.seconds), "{e:?}");
        assert!(
            e.basis
                .starts_with("32 databases and 12000 user relations, 2 at a time"),
            "{}",
            e.basis
        );
    }

    #[test]
    fn one_large_database_gets_one_lane() {
        let one = estimate(&inputs(1, 12_000, 4), None).seconds;
        let spread = estimate(&inputs(4, 3_000, 4), None).seconds;
        assert!(one > 2.0 * (spread - FIXED_SECS), "{one} vs {spread}");
    }

    #[test]
    fn machine_factor_scales_all_but_the_copy() {
        let mut i = inputs(2, 0, 1);
        i.copy_bytes = 2 * 200 * 1024 * 1024;
        let reference = estimate(&i, None).seconds;
        // initdb took twice the reference machine's.
        let slow = estimate(&i, Some(1.0)).seconds;
        assert!(
            (slow - (2.0 * (reference - 2.0) + 2.0)).abs() < 1e-9,
            "{reference} {slow}"
        );
        // A wild initdb time is bounded.
        let wild = estimate(&i, Some(100.0)).seconds;
        assert!(
            (wild - (16.0 * (reference - 2.0) + 2.0)).abs() < 1e-9,
            "{wild}"
        );
    }

    #[test]
    fn the_basis_names_the_mode_that_copies() {
        let i = Inputs::new(Mode::CopyFileRange, vec![0, 10], 2, 300 * 1024 * 1024);
        let e = estimate(&i, Some(0.5));
        assert!(
            e.basis
                .contains(" + 300 MiB copied with --copy-file-range at 200 MiB/s"),
            "{}",
            e.basis
        );
        // auto's fallback: the same files, copied with --copy.
        let copy = i.copied_with(Mode::Copy);
        assert_eq!(copy.copy_mode, Some(Mode::Copy));
        let f = estimate(&copy, Some(0.5));
        assert!(
            f.basis
                .contains(" + 300 MiB copied with --copy at 200 MiB/s"),
            "{}",
            f.basis
        );
        assert!(!f.basis.contains("copy-file-range"), "{}", f.basis);
        // Link mode copies nothing and names no copying mode, fallback or not.
        let link = Inputs::new(Mode::Link, vec![0], 1, 300 * 1024 * 1024);
        assert_eq!(link.copied_with(Mode::Copy).copy_mode, None);
        assert!(!estimate(&link, None).basis.contains("copied"));
    }

    /// The bench's many-objects cluster: 20 databases of 1,250 relations, a pgbench database,
    /// template1 and postgres.
    fn many_objects() -> Inputs {
        let mut i = inputs(20, 1_250, 2);
        i.relations_per_database.extend([4, 0, 0]);
        i
    }

    #[test]
    fn the_check_joins_initdb_in_the_factor_by_its_length() {
        let i = many_objects();
        let check_ref = reference_check_secs(&i);
        assert!((check_ref - 2.92).abs() < 0.01, "{check_ref}");
        let reference = estimate(&i, None).seconds;
        // Both at the reference machine's time: factor 1.
        let both = timed(&i, Some(0.5), Some(check_ref));
        assert!((both.seconds - reference).abs() < 1e-9, "{both:?}");
        assert_eq!(both.check_seconds, Some(check_ref));
        assert!(
            both.basis.ends_with(
                "; × 1.0 for this machine (initdb took 0.5s and pg_upgrade --check 2.9s, 0.5s and 2.9s on the reference)"
            ),
            "{}",
            both.basis
        );
        // Twice as slow in both: factor 2.
        let slow = timed(&i, Some(1.0), Some(2.0 * check_ref)).seconds;
        assert!((slow - 2.0 * reference).abs() < 1e-9, "{slow} {reference}");
        // Once the check has run, the estimate keeps initdb's time and adds the check's.
        let e = estimate(&i, Some(1.0)).with_check(&i, 2.0 * check_ref);
        assert!((e.seconds - slow).abs() < 1e-9, "{e:?}");
        assert_eq!(e.initdb_seconds, Some(1.0));
    }

    #[test]
    fn one_slow_initdb_no_longer_swings_the_estimate() {
        // The bench's rounds on a shared machine: initdb took 0.42 s, 0.95 s and 1.30 s
        // (×3.1) while the window took 17.3 s, 16.0 s and 36.5 s and the check 2.16 s,
        // 2.44 s and 3.34 s. Scaled by initdb alone the estimate was 2.7× the window in
        // the second round; with the check, each round is within 1.5× of its window.
        let i = many_objects();
        for (initdb, check, window) in [(0.42, 2.16, 17.3), (0.95, 2.44, 16.0), (1.30, 3.34, 36.5)]
        {
            let e = timed(&i, Some(initdb), Some(check)).seconds;
            assert!(
                (1.0 / 1.5..=1.5).contains(&(e / window)),
                "{e} against {window}"
            );
        }
        // An initdb 3× slower than the rest of the machine moves the factor by under 1.3×.
        let check = reference_check_secs(&i);
        let steady = timed(&i, Some(0.5), Some(check)).seconds;
        let outlier = timed(&i, Some(1.5), Some(check)).seconds;
        let alone = estimate(&i, Some(1.5)).seconds;
        assert!(outlier / steady < 1.3, "{outlier} against {steady}");
        assert!(alone / steady > 2.9, "{alone} against {steady}");
    }

    #[test]
    fn a_mode_change_keeps_both_timings() {
        let i = Inputs::new(Mode::CopyFileRange, vec![0, 10], 2, 300 * 1024 * 1024);
        let e = estimate(&i, Some(0.7)).with_check(&i, 1.1);
        let copy = i.copied_with(Mode::Copy);
        let redone = e.redone(&copy);
        assert_eq!(
            (redone.initdb_seconds, redone.check_seconds),
            (Some(0.7), Some(1.1))
        );
        assert!((redone.seconds - e.seconds).abs() < 1e-9, "{redone:?}");
        assert!(redone.basis.contains("with --copy at"), "{}", redone.basis);
    }
}
