//! Collations: a glibc locale the old cluster uses that this system cannot open (the new
//! server could not create those databases or collations: refused before anything starts),
//! and collation drift (a warning, or a refusal with `--collations refuse`).

use std::fmt::Write as _;

use crate::error::Finding;
use crate::inspect::catalog::Catalog;
use crate::inspect::collation::{localedef_command, versioned};
use crate::plan::collations::{CollationMode, Section, script};

/// Each glibc locale the old cluster needs from the new server's environment, with what
/// needs it: template0 and every database (LC_COLLATE and LC_CTYPE, which pg_upgrade
/// recreates them with) and every user-created libc collation. C, POSIX and `C.*` are built
/// into glibc.
pub(crate) fn needed_locales(c: &Catalog) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut add = |locale: &str, user: String| {
        if locale.is_empty() || !versioned("libc", locale) {
            return;
        }
        match out.iter_mut().find(|(l, _)| l == locale) {
            Some((_, users)) if !users.contains(&user) => users.push(user),
            Some(_) => {}
            None => out.push((locale.to_string(), vec![user])),
        }
    };
    add(&c.template0.collate, "template0".into());
    add(&c.template0.ctype, "template0".into());
    for db in &c.collations {
        if db.default.provider == "libc" {
            add(&db.default.locale, format!("database {}", db.name));
        }
        add(&db.ctype, format!("database {}", db.name));
        for coll in db.collations.iter().filter(|c| c.user_defined) {
            if coll.version.provider == "libc" {
                let user = format!("collation {} in {}", coll.name, db.name);
                add(&coll.version.locale, user.clone());
                if let Some(ctype) = &coll.ctype {
                    add(ctype, user);
                }
            }
        }
    }
    out
}

/// One refusal per locale in `missing` (as [`needed_locales`] named them).
pub(crate) fn missing_locale_findings(
    needed: &[(String, Vec<String>)],
    missing: &[String],
) -> Vec<Finding> {
    needed
        .iter()
        .filter(|(l, _)| missing.contains(l))
        .map(|(locale, users)| {
            Finding::error(
                "locale-missing",
                format!(
                    "the old cluster uses the locale {locale} ({}), which this system does not have: the new server could not open it",
                    users.join(", ")
                ),
                format!(
                    "Generate it, then run pgleap again: {} (Debian and Ubuntu: add it to /etc/locale.gen and run locale-gen; in a container image, install the locales package and generate it when building the image)",
                    localedef_command(locale)
                ),
            )
        })
        .collect()
}

/// What drifted, as one finding: a warning that says what will happen, or a refusal with
/// `--collations refuse`. `None` when nothing drifted.
pub(crate) fn drift_finding(s: &Section) -> Option<Finding> {
    if !s.has_drift() {
        return None;
    }
    let versions: Vec<String> = s
        .drifted
        .iter()
        .map(|d| {
            // The old server's own version too, when it says something else: drift that
            // happened before this upgrade.
            let old = match &d.old_actual {
                Some(o) if *o != d.new_actual => format!(", old server {o}"),
                _ => String::new(),
            };
            format!(
                "{}: {} ({} {}) recorded {}{old}, {} {}",
                d.database,
                d.collation,
                d.provider,
                d.locale,
                d.recorded,
                s.compared_with,
                d.new_actual
            )
        })
        .collect();
    let mut message = format!(
        "collation versions changed, so {} indexes ({} bytes) may be in the wrong order: {}",
        s.indexes.len(),
        s.index_bytes,
        versions.join("; ")
    );
    if !s.indexes.is_empty() {
        let names: Vec<String> = s
            .indexes
            .iter()
            .map(|i| format!("{}: {}", i.database, i.name))
            .collect();
        let _ = write!(message, ". Indexes: {}", names.join(", "));
    }
    if !s.partitioned_tables.is_empty() {
        let names: Vec<String> = s
            .partitioned_tables
            .iter()
            .map(|i| format!("{}: {}", i.database, i.name))
            .collect();
        let _ = write!(
            message,
            ". Partitioned tables keyed by them (rows may belong to another partition now): {}",
            names.join(", ")
        );
    }
    if !s.materialized_views.is_empty() {
        let names: Vec<String> = s
            .materialized_views
            .iter()
            .map(|i| format!("{}: {}", i.database, i.name))
            .collect();
        let _ = write!(
            message,
            ". Materialized views with text columns (REFRESH MATERIALIZED VIEW those whose query sorts or compares text): {}",
            names.join(", ")
        );
    }
    let commands = script(&s.commands);
    Some(match s.mode {
        CollationMode::Refuse => Finding::error(
            "collation-drift",
            message,
            format!(
                "Rebuild them on the old cluster first (psql script below), or pass --collations reindex to have pgleap rebuild them after the upgrade while clients are served:\n{commands}"
            ),
        ),
        CollationMode::Reindex => Finding::warning(
            "collation-drift",
            message,
            "pgleap rebuilds them with REINDEX INDEX CONCURRENTLY once the new server serves, then refreshes the recorded versions",
        ),
        CollationMode::Report => Finding::warning(
            "collation-drift",
            message,
            format!(
                "After the upgrade, run this psql script (or pass --collations reindex and pgleap does it while clients are served):\n{commands}"
            ),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::catalog::LocaleInfo;
    use crate::inspect::collation::{Collation, Database, Versioned};

    fn catalog() -> Catalog {
        let versioned = |provider: &str, locale: &str| Versioned {
            provider: provider.into(),
            locale: locale.into(),
            recorded: Some("2.36".into()),
            actual: Some("2.36".into()),
        };
        Catalog {
            server_version_num: 170_000,
            bootstrap_superuser: "postgres".into(),
            template0: LocaleInfo {
                encoding: "UTF8".into(),
                collate: "C.UTF-8".into(),
                ctype: "C.UTF-8".into(),
                provider: "libc".into(),
                provider_locale: None,
                icu_rules: None,
            },
            databases: Vec::new(),
            shared_preload_libraries: Vec::new(),
            prepared: Vec::new(),
            replication: crate::inspect::replication::Replication::default(),
            archiving: crate::inspect::archive::Archiving::default(),
            synchronous_standby_names: String::new(),
            collations: vec![Database {
                name: "app".into(),
                default: versioned("libc", "fr_FR.UTF-8"),
                ctype: "fr_FR.UTF-8".into(),
                collations: vec![
                    Collation {
                        oid: 16400,
                        name: "public.german".into(),
                        version: versioned("libc", "de_DE.UTF-8"),
                        ctype: Some("de_DE.UTF-8".into()),
                        user_defined: true,
                    },
                    Collation {
                        oid: 12352,
                        name: "pg_catalog.\"en_US.utf8\"".into(),
                        version: versioned("libc", "en_US.utf8"),
                        ctype: Some("en_US.utf8".into()),
                        user_defined: false,
                    },
                    Collation {
                        oid: 16401,
                        name: "public.icu_de".into(),
                        version: versioned("icu", "de-DE"),
                        ctype: None,
                        user_defined: true,
                    },
                ],
                indexes: Vec::new(),
                partitioned: Vec::new(),
                matviews: Vec::new(),
            }],
        }
    }

    #[test]
    fn needs_database_and_user_collation_locales_not_c_or_icu() {
        let needed = needed_locales(&catalog());
        let names: Vec<&str> = needed.iter().map(|(l, _)| l.as_str()).collect();
        // C.UTF-8 is glibc's own; en_US.utf8 was imported by initdb, and the new initdb
        // imports what the new system has; ICU locales are not glibc's.
        assert_eq!(names, ["fr_FR.UTF-8", "de_DE.UTF-8"]);
        assert_eq!(needed[0].1, ["database app"]);
        assert_eq!(needed[1].1, ["collation public.german in app"]);
    }

    #[test]
    fn drift_warns_or_with_refuse_refuses_naming_versions_and_indexes() {
        use crate::inspect::collation::Index;
        use crate::inspect::collation::Probe;
        use crate::plan::collations::section;
        let mut c = catalog();
        // Recorded under glibc 2.31, the old server's glibc is 2.31 too, the new one 2.36.
        c.collations[0].default.recorded = Some("2.31".into());
        c.collations[0].default.actual = Some("2.31".into());
        c.collations[0].indexes.push(Index {
            name: "public.t_name_idx".into(),
            table: "public.t".into(),
            bytes: 16384,
            method: "btree".into(),
            constraint: None,
            valid: true,
            collations: vec![100],
        });
        let probes = [Probe {
            provider: "libc".into(),
            locale: "fr_FR.UTF-8".into(),
            version: Some("2.36".into()),
            error: None,
        }];
        let s = section(&c.collations, &probes, CollationMode::Report, 2);
        let f = drift_finding(&s).unwrap();
        assert!(!f.is_error());
        assert_eq!(
            f.message,
            "collation versions changed, so 1 indexes (16384 bytes) may be in the wrong order: app: default (libc fr_FR.UTF-8) recorded 2.31, old server 2.31, new installation 2.36. Indexes: app: public.t_name_idx"
        );
        assert!(f.fix.ends_with("\\connect app\nREINDEX INDEX CONCURRENTLY public.t_name_idx;\nALTER DATABASE app REFRESH COLLATION VERSION;\n"), "{}", f.fix);
        let s = section(&c.collations, &probes, CollationMode::Refuse, 2);
        assert!(drift_finding(&s).unwrap().is_error());
        // Judged against the old server alone, nothing moved.
        assert!(drift_finding(&section(&c.collations, &[], CollationMode::Refuse, 2)).is_none());
    }

    #[test]
    fn a_missing_locale_is_refused_with_the_command_to_make_it() {
        let f = missing_locale_findings(&needed_locales(&catalog()), &["fr_FR.UTF-8".into()]);
        assert_eq!(f.len(), 1);
        assert!(f[0].is_error());
        assert_eq!(
            f[0].message,
            "the old cluster uses the locale fr_FR.UTF-8 (database app), which this system does not have: the new server could not open it"
        );
        assert!(f[0].fix.starts_with(
            "Generate it, then run pgleap again: localedef -i fr_FR -f UTF-8 fr_FR.UTF-8"
        ));
    }
}
