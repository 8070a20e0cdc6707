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
//! 13–14 s in the field. Machines differ more than anything else here, so once pgleap has run
//! `initdb` of the new cluster it scales the estimate by that initdb's time.

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
}

impl Estimate {
    /// Whole seconds, rounded up.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    pub(crate) fn whole_seconds(&self) -> u64 {
        self.seconds.max(0.0).ceil() as u64
    }
}

/// The estimate for `inputs`; with `initdb_secs`, scaled to this machine.
#[allow(clippy::cast_precision_loss)]
pub(crate) fn estimate(inputs: &Inputs, initdb_secs: Option<f64>) -> Estimate {
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
    let seconds = if let Some(t) = initdb_secs {
        let factor = (t / REFERENCE_INITDB_SECS).clamp(FACTOR_BOUNDS.0, FACTOR_BOUNDS.1);
        let _ = write!(
            basis,
            "; × {factor:.1} for this machine (initdb took {t:.1}s, {REFERENCE_INITDB_SECS}s on the reference)"
        );
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
}
