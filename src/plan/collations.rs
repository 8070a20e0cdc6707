//! The plan's `collations` section: which collations drift between what the old cluster
//! recorded and what the new installation's library reports, what sorts by them (indexes,
//! partition keys, materialized views), the commands that repair them, and what pgleap will
//! do about it (`--collations report|reindex|refuse`).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::inspect::collation::{self, Command, Database, Probe, Versioned, quote_ident};

/// What to do about collation drift.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum CollationMode {
    /// Report what drifted and the commands that repair it; change nothing.
    #[default]
    Report,
    /// After the new server started: REINDEX INDEX CONCURRENTLY exactly the affected
    /// indexes, then refresh the recorded versions.
    Reindex,
    /// Refuse to upgrade while a collation in use drifted.
    Refuse,
}

impl CollationMode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            CollationMode::Report => "report",
            CollationMode::Reindex => "reindex",
            CollationMode::Refuse => "refuse",
        }
    }
}

/// A collation (or a database's default) whose recorded version differs from the library's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Drifted {
    pub(crate) database: String,
    /// `default` for the database's own collation, else its SQL name.
    pub(crate) collation: String,
    pub(crate) provider: String,
    pub(crate) locale: String,
    pub(crate) recorded: String,
    /// What the old server's library reports.
    pub(crate) old_actual: Option<String>,
    /// What the new installation's library reports (the old server's when not asked).
    pub(crate) new_actual: String,
}

/// An object that sorts by a drifted collation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Affected {
    pub(crate) database: String,
    pub(crate) name: String,
    /// The indexed table (indexes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) table: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) constraint: Option<String>,
    pub(crate) bytes: u64,
    pub(crate) collations: Vec<String>,
}

/// The plan's collation section.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Section {
    pub(crate) mode: CollationMode,
    /// Whose library the drift was judged against: `new installation` once a server of
    /// the new installation was asked, else `old server`.
    pub(crate) compared_with: String,
    pub(crate) drifted: Vec<Drifted>,
    pub(crate) indexes: Vec<Affected>,
    pub(crate) partitioned_tables: Vec<Affected>,
    pub(crate) materialized_views: Vec<Affected>,
    pub(crate) index_bytes: u64,
    /// REINDEX time at [`REINDEX_BYTES_PER_SEC`] per job.
    pub(crate) estimated_reindex_seconds: f64,
    pub(crate) commands: Vec<Command>,
}

/// Rebuild rate assumed per job for the estimate: a btree on text builds at a few tens of
/// MiB/s on one core (sorting dominates); CONCURRENTLY scans the table twice.
pub(crate) const REINDEX_BYTES_PER_SEC: f64 = 20.0 * 1024.0 * 1024.0;

impl Section {
    pub(crate) fn has_drift(&self) -> bool {
        !self.drifted.is_empty()
    }
}

/// The version `v` will have under the new installation: what its server reported for the
/// same provider and locale, else (not asked) what the old server reports.
fn new_actual<'a>(v: &'a Versioned, probes: &'a [Probe]) -> Option<&'a str> {
    probes
        .iter()
        .find(|p| p.provider == v.provider && p.locale == v.locale)
        .map_or(v.actual.as_deref(), |p| p.version.as_deref())
}

/// The section from each database's collation facts and the versions a server of the new
/// installation reported (`probes`, empty when none was asked).
pub(crate) fn section(
    dbs: &[Database],
    probes: &[Probe],
    mode: CollationMode,
    jobs: usize,
) -> Section {
    let mut s = Section {
        mode,
        compared_with: if probes.is_empty() {
            "old server".into()
        } else {
            "new installation".into()
        },
        ..Section::default()
    };
    for db in dbs {
        add_database(&mut s, db, probes);
    }
    s.index_bytes = s.indexes.iter().map(|i| i.bytes).sum();
    let lanes = jobs.clamp(1, s.indexes.len().max(1));
    s.estimated_reindex_seconds =
        (s.index_bytes as f64 / REINDEX_BYTES_PER_SEC / lanes as f64 * 10.0).ceil() / 10.0;
    s
}

fn add_database(s: &mut Section, db: &Database, probes: &[Probe]) {
    let drifted = collation::drifted(db, |v| new_actual(v, probes));
    for oid in &drifted {
        let Some(v) = db.version_of(*oid) else {
            continue;
        };
        s.drifted.push(Drifted {
            database: db.name.clone(),
            collation: db.name_of(*oid),
            provider: v.provider.clone(),
            locale: v.locale.clone(),
            recorded: v.recorded.clone().unwrap_or_default(),
            old_actual: v.actual.clone(),
            new_actual: new_actual(v, probes).unwrap_or_default().to_string(),
        });
    }
    let names = |oids: &[u32]| -> Vec<String> {
        oids.iter()
            .filter(|o| drifted.contains(o))
            .map(|o| db.name_of(*o))
            .collect()
    };
    for i in collation::affected(db, &drifted) {
        s.commands.push(Command {
            database: db.name.clone(),
            sql: format!("REINDEX INDEX CONCURRENTLY {}", i.name),
        });
        s.indexes.push(Affected {
            database: db.name.clone(),
            name: i.name.clone(),
            table: Some(i.table.clone()),
            constraint: i.constraint.clone(),
            bytes: i.bytes,
            collations: names(&i.collations),
        });
    }
    for (list, out) in [
        (&db.partitioned, &mut s.partitioned_tables),
        (&db.matviews, &mut s.materialized_views),
    ] {
        for r in list {
            let by = names(&r.collations);
            if !by.is_empty() {
                out.push(Affected {
                    database: db.name.clone(),
                    name: r.name.clone(),
                    table: None,
                    constraint: None,
                    bytes: r.bytes,
                    collations: by,
                });
            }
        }
    }
    for oid in &drifted {
        s.commands.push(Command {
            database: db.name.clone(),
            sql: collation::refresh_sql(db, *oid),
        });
    }
}

/// The repair as a psql script: `\connect` to each database, then its commands.
pub(crate) fn script(commands: &[Command]) -> String {
    let mut out = String::new();
    let mut current: Option<&str> = None;
    for c in commands {
        if current != Some(c.database.as_str()) {
            let _ = writeln!(out, "\\connect {}", quote_ident(&c.database));
            current = Some(&c.database);
        }
        out.push_str(&c.sql);
        out.push_str(";\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::collation::{Collation, Index, Relation};

    fn v(provider: &str, locale: &str, recorded: Option<&str>, actual: Option<&str>) -> Versioned {
        Versioned {
            provider: provider.into(),
            locale: locale.into(),
            recorded: recorded.map(Into::into),
            actual: actual.map(Into::into),
        }
    }

    fn index(name: &str, method: &str, collations: &[u32]) -> Index {
        Index {
            name: name.into(),
            table: "public.t".into(),
            bytes: 8192,
            method: method.into(),
            constraint: None,
            valid: true,
            collations: collations.to_vec(),
        }
    }

    /// A database as 17 reports it after `UPDATE pg_database SET datcollversion = '2.31'`:
    /// its default en_US drifted, the de_DE collation (oid 12352) did not, and an ICU
    /// collation recorded under ICU 67 (oid 16390) is read by a server with ICU 72.
    fn app() -> Database {
        Database {
            name: "app".into(),
            default: v("libc", "en_US.UTF-8", Some("2.31"), Some("2.36")),
            ctype: "en_US.UTF-8".into(),
            collations: vec![
                Collation {
                    oid: 12352,
                    name: "pg_catalog.\"de_DE.utf8\"".into(),
                    version: v("libc", "de_DE.utf8", Some("2.36"), Some("2.36")),
                    ctype: Some("de_DE.utf8".into()),
                    user_defined: false,
                },
                Collation {
                    oid: 16390,
                    name: "public.german".into(),
                    version: v("icu", "de-DE", Some("153.14"), Some("153.14")),
                    ctype: None,
                    user_defined: true,
                },
                Collation {
                    oid: 950,
                    name: "pg_catalog.\"C\"".into(),
                    version: v("libc", "C", None, None),
                    ctype: Some("C".into()),
                    user_defined: false,
                },
            ],
            indexes: vec![
                index("public.t_name_idx", "btree", &[100]),
                index("public.t_de_idx", "btree", &[12352]),
                index("public.t_icu_idx", "btree", &[16390]),
                index("public.t_c_idx", "btree", &[950]),
                index("public.t_hash_idx", "hash", &[100]),
                index("public.t_mixed_idx", "btree", &[100, 950]),
            ],
            partitioned: vec![Relation {
                name: "public.p".into(),
                bytes: 0,
                collations: vec![100],
            }],
            matviews: vec![Relation {
                name: "public.mv".into(),
                bytes: 16384,
                collations: vec![12352],
            }],
        }
    }

    fn names(a: &[Affected]) -> Vec<&str> {
        a.iter().map(|x| x.name.as_str()).collect()
    }

    #[test]
    fn only_indexes_on_drifted_collations_are_affected() {
        let s = section(&[app()], &[], CollationMode::Report, 2);
        assert_eq!(s.compared_with, "old server");
        assert_eq!(
            names(&s.indexes),
            ["public.t_name_idx", "public.t_mixed_idx"]
        );
        assert_eq!(s.indexes[1].collations, ["default"]);
        assert_eq!(names(&s.partitioned_tables), ["public.p"]);
        assert!(s.materialized_views.is_empty());
        assert_eq!(s.drifted.len(), 1);
        assert_eq!(s.drifted[0].collation, "default");
        assert_eq!(s.index_bytes, 16384);
        assert_eq!(
            s.commands.last().map(|c| c.sql.as_str()),
            Some("ALTER DATABASE app REFRESH COLLATION VERSION")
        );
    }

    #[test]
    fn the_new_installation_decides_when_it_was_asked() {
        // The new installation links ICU 72; its glibc is the old server's.
        let probes = vec![
            Probe {
                provider: "icu".into(),
                locale: "de-DE".into(),
                version: Some("153.120".into()),
                error: None,
            },
            Probe {
                provider: "libc".into(),
                locale: "en_US.UTF-8".into(),
                version: Some("2.31".into()),
                error: None,
            },
        ];
        let s = section(&[app()], &probes, CollationMode::Reindex, 1);
        assert_eq!(s.compared_with, "new installation");
        // en_US: recorded 2.31 is what the new library reports, so no drift there.
        assert_eq!(names(&s.indexes), ["public.t_icu_idx"]);
        assert_eq!(s.drifted[0].collation, "public.german");
        assert_eq!(s.drifted[0].old_actual.as_deref(), Some("153.14"));
        assert_eq!(s.drifted[0].new_actual, "153.120");
        assert_eq!(
            script(&s.commands),
            "\\connect app\nREINDEX INDEX CONCURRENTLY public.t_icu_idx;\nALTER COLLATION public.german REFRESH VERSION;\n"
        );
    }

    #[test]
    fn no_drift_no_commands() {
        let mut db = app();
        db.default.recorded = Some("2.36".into());
        let s = section(&[db], &[], CollationMode::Refuse, 4);
        assert!(!s.has_drift());
        assert!(s.indexes.is_empty() && s.commands.is_empty());
        assert!(s.estimated_reindex_seconds.abs() < f64::EPSILON);
    }
}
