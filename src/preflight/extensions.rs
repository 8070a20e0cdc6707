//! Extensions and C libraries the old cluster uses that the new installation lacks: read
//! from the old catalog, checked against the new installation's files.

use crate::error::Finding;
use crate::inspect::catalog::{Catalog, library_path};
use crate::inspect::install::Install;
use crate::preflight::facts::CatalogFacts;

/// The `extensions` family: what the catalog uses that the new installation lacks.
pub(crate) fn extensions(c: &CatalogFacts<'_>, findings: &mut crate::error::Findings) {
    let Some(catalog) = c.catalog else { return };
    let known = |pkg: &str| crate::inspect::install::apt_knows(c.runner, pkg);
    for f in missing_in(catalog, c.new, &known) {
        findings.push(f);
    }
}

/// Extensions that left PostgreSQL's own contrib modules, with the first major without them:
/// no package provides them for that major or later.
const REMOVED_CONTRIB: [(&str, u32); 3] = [("tsearch2", 10), ("chkpass", 11), ("adminpack", 17)];

/// What to do about extension `name` (database `db`) missing for the new major: a package
/// is named only when it exists (`known_package` asks the host's package manager).
fn extension_fix(name: &str, db: &str, major: u32, known_package: &dyn Fn(&str) -> bool) -> String {
    let drop = format!("DROP EXTENSION {name} in database {db}");
    if let Some((_, gone)) = REMOVED_CONTRIB
        .iter()
        .find(|(n, m)| *n == name && major >= *m)
    {
        return format!(
            "{name} was removed from PostgreSQL in {gone}, so no package provides it: {drop} (after moving off what uses it), then run pgleap again"
        );
    }
    let debian = format!("postgresql-{major}-{name}");
    if known_package(&debian) {
        format!("Install {debian}, or {drop}")
    } else {
        format!(
            "Install the package that ships {name}.control for PostgreSQL {major} (its name varies by distribution and project), or {drop}"
        )
    }
}

/// Findings for extensions and libraries the new installation lacks.
pub(crate) fn missing_in(
    catalog: &Catalog,
    new: &Install,
    known_package: &dyn Fn(&str) -> bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let ext_dir = new.sharedir.join("extension");
    for db in &catalog.databases {
        for ext in &db.extensions {
            let control = ext_dir.join(format!("{}.control", ext.name));
            if !control.exists() {
                out.push(Finding::error(
                    "extension-missing",
                    format!(
                        "extension {} {} (database {}) is not installed for PostgreSQL {}: {} is missing",
                        ext.name,
                        ext.version,
                        db.name,
                        new.major,
                        control.display()
                    ),
                    extension_fix(&ext.name, &db.name, new.major, known_package),
                ));
            }
        }
        for lib in &db.libraries {
            let path = library_path(new, lib);
            if !path.exists() {
                out.push(Finding::error(
                    "library-missing",
                    format!(
                        "library {lib} (used by functions in database {}) is missing for PostgreSQL {}: {} does not exist",
                        db.name,
                        new.major,
                        path.display()
                    ),
                    format!("Install the package that provides it for PostgreSQL {}, or drop the functions that use it", new.major),
                ));
            }
        }
    }
    for lib in &catalog.shared_preload_libraries {
        let path = library_path(new, lib);
        if !path.exists() {
            out.push(Finding::error(
                "preload-library-missing",
                format!(
                    "shared_preload_libraries names {lib}, which is missing for PostgreSQL {}: {} does not exist",
                    new.major,
                    path.display()
                ),
                format!(
                    "Install {lib} for PostgreSQL {}, or remove it from shared_preload_libraries",
                    new.major
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::catalog::{Database, Extension, LocaleInfo};

    use crate::inspect::install::tests::sample as install;

    #[test]
    fn extension_hints_name_only_packages_that_exist() {
        let fix = extension_fix("adminpack", "app", 17, &|_| true);
        assert!(
            fix.starts_with("adminpack was removed from PostgreSQL in 17"),
            "{fix}"
        );
        assert!(!fix.contains("postgresql-17-adminpack"), "{fix}");
        // Before 17 adminpack is contrib like any other.
        let fix = extension_fix("adminpack", "app", 16, &|_| false);
        assert!(!fix.contains("postgresql-16-adminpack"), "{fix}");
        let fix = extension_fix("postgis", "app", 17, &|p| p == "postgresql-17-postgis");
        assert_eq!(
            fix,
            "Install postgresql-17-postgis, or DROP EXTENSION postgis in database app"
        );
        let fix = extension_fix("vector", "app", 17, &|_| false);
        assert!(
            fix.starts_with("Install the package that ships vector.control"),
            "{fix}"
        );
    }

    #[test]
    fn names_each_missing_extension_with_its_database() {
        let c = Catalog {
            server_version_num: 160_000,
            bootstrap_superuser: "postgres".into(),
            template0: LocaleInfo {
                encoding: "UTF8".into(),
                collate: "C".into(),
                ctype: "C".into(),
                provider: "libc".into(),
                provider_locale: None,
                icu_rules: None,
            },
            databases: vec![Database {
                name: "app".into(),
                encoding: "UTF8".into(),
                extensions: vec![Extension {
                    name: "postgis".into(),
                    version: "3.4".into(),
                }],
                libraries: vec!["$libdir/postgis-3".into()],
                relations: 10,
                user_relations: 0,
            }],
            shared_preload_libraries: vec!["timescaledb".into()],
            prepared: Vec::new(),
            replication: crate::inspect::replication::Replication::default(),
            archiving: crate::inspect::archive::Archiving::default(),
            synchronous_standby_names: String::new(),
            collations: Vec::new(),
        };
        let f = missing_in(&c, &install(), &|_| false);
        let codes: Vec<&str> = f.iter().map(|f| f.code).collect();
        assert_eq!(
            codes,
            [
                "extension-missing",
                "library-missing",
                "preload-library-missing"
            ]
        );
        assert!(
            f[0].message
                .contains("extension postgis 3.4 (database app)"),
            "{}",
            f[0].message
        );
    }
}
