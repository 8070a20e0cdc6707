//! Extensions and C libraries the old cluster uses that the new installation lacks: read
//! from the old catalog, checked against the new installation's files.

use crate::error::Finding;
use crate::inspect::catalog::{Catalog, library_path};
use crate::inspect::install::Install;

/// Findings for extensions and libraries the new installation lacks.
pub(crate) fn missing_in(catalog: &Catalog, new: &Install) -> Vec<Finding> {
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
                    format!(
                        "Install the extension for PostgreSQL {} (on Debian postgresql-{}-{}), or DROP EXTENSION {} in database {}",
                        new.major, new.major, ext.name, ext.name, db.name
                    ),
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

    fn install() -> Install {
        Install {
            bindir: "/pg/bin".into(),
            major: 17,
            version: "17.11".into(),
            pkglibdir: "/pg/lib".into(),
            sharedir: "/pg/share".into(),
        }
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
            }],
            shared_preload_libraries: vec!["timescaledb".into()],
        };
        let f = missing_in(&c, &install());
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
