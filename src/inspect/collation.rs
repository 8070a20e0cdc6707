//! Collation versions: what a cluster recorded for each collation in use, what the C library
//! or ICU under a server says now, and which indexes, partition keys and materialized views
//! sort text by a collation whose version moved.
//!
//! A text index is built in the sort order of its collation's library version. When glibc or
//! ICU changes under the cluster (another OS, another container image), PostgreSQL 15+ notices
//! only by comparing `pg_database.datcollversion` and `pg_collation.collversion` with the
//! library's current version; 10–14 record `collversion` only. pg_upgrade copies the recorded
//! versions as they are. C, POSIX, `C.*` and the builtin provider have no version.
//!
//! Read over a Unix socket by [`crate::inspect::db`], as the cluster owner. The decisions here
//! are pure and unit-tested over captured catalog rows (ICU ones too: the PostgreSQL builds
//! the tests use have no ICU).

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::exec::process::{Opts, Runner};

/// The oid of the `default` collation: the database's own.
pub(crate) const DEFAULT_COLLATION: u32 = 100;

/// A collation with a provider, a locale and two versions: the recorded one and the one the
/// library of the server that was asked reports now (`None`: unversioned, or unknown).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Versioned {
    /// `libc`, `icu` or `builtin`.
    pub(crate) provider: String,
    pub(crate) locale: String,
    pub(crate) recorded: Option<String>,
    pub(crate) actual: Option<String>,
}

impl Versioned {
    /// Whether this provider and locale carry a version at all.
    pub(crate) fn versioned(&self) -> bool {
        versioned(&self.provider, &self.locale)
    }

    /// Whether the recorded version differs from `actual` (a version the asked library
    /// reports). Unversioned collations and those that recorded nothing never drift.
    pub(crate) fn drifts_from(&self, actual: Option<&str>) -> bool {
        match (self.recorded.as_deref(), actual) {
            (Some(r), Some(a)) => self.versioned() && r != a,
            _ => false,
        }
    }
}

/// A collation of `pg_collation` that something uses (or that a user created).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Collation {
    pub(crate) oid: u32,
    /// Schema-qualified and quoted, ready for SQL: `public."de"`.
    pub(crate) name: String,
    #[serde(flatten)]
    pub(crate) version: Versioned,
    /// libc: its LC_CTYPE, which must exist as well.
    pub(crate) ctype: Option<String>,
    /// Created by a user (pg_upgrade recreates it), not imported by initdb.
    pub(crate) user_defined: bool,
}

/// An index whose keys, expressions or predicate use a collation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Index {
    /// Schema-qualified as `regclass` prints it.
    pub(crate) name: String,
    pub(crate) table: String,
    pub(crate) bytes: u64,
    /// Access method: `btree`, `gin`, `hash`, ...
    pub(crate) method: String,
    /// `primary key`, `unique`, `exclusion`, or `None` for a plain index.
    pub(crate) constraint: Option<String>,
    pub(crate) valid: bool,
    /// Collation oids it depends on ([`DEFAULT_COLLATION`] for the database's).
    pub(crate) collations: Vec<u32>,
}

/// A partitioned table's key, or a materialized view's columns, and their collations.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Relation {
    pub(crate) name: String,
    pub(crate) bytes: u64,
    pub(crate) collations: Vec<u32>,
}

/// One database's collations and the objects that sort by them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Database {
    pub(crate) name: String,
    /// The database's default collation (`datcollate`, or its ICU/builtin locale).
    pub(crate) default: Versioned,
    pub(crate) ctype: String,
    pub(crate) collations: Vec<Collation>,
    pub(crate) indexes: Vec<Index>,
    pub(crate) partitioned: Vec<Relation>,
    pub(crate) matviews: Vec<Relation>,
}

impl Database {
    /// The recorded and actual versions of collation `oid` in this database.
    pub(crate) fn version_of(&self, oid: u32) -> Option<&Versioned> {
        if oid == DEFAULT_COLLATION {
            return Some(&self.default);
        }
        self.collations
            .iter()
            .find(|c| c.oid == oid)
            .map(|c| &c.version)
    }

    /// The SQL name of collation `oid` (`default` for the database's own).
    pub(crate) fn name_of(&self, oid: u32) -> String {
        if oid == DEFAULT_COLLATION {
            return "default".into();
        }
        self.collations
            .iter()
            .find(|c| c.oid == oid)
            .map_or_else(|| oid.to_string(), |c| c.name.clone())
    }
}

/// The collations of `db` (oids, [`DEFAULT_COLLATION`] for its own) whose recorded version
/// differs from what `actual` says the library reports.
pub(crate) fn drifted<'a>(
    db: &'a Database,
    actual: impl Fn(&'a Versioned) -> Option<&'a str>,
) -> Vec<u32> {
    let mut out = Vec::new();
    if db.default.drifts_from(actual(&db.default)) {
        out.push(DEFAULT_COLLATION);
    }
    for c in &db.collations {
        if c.version.drifts_from(actual(&c.version)) {
            out.push(c.oid);
        }
    }
    out
}

/// The indexes of `db` whose order depends on one of the `drifted` collations.
pub(crate) fn affected<'a>(db: &'a Database, drifted: &[u32]) -> Vec<&'a Index> {
    db.indexes
        .iter()
        .filter(|i| order_sensitive(&i.method) && i.collations.iter().any(|c| drifted.contains(c)))
        .collect()
}

/// One SQL command of a repair, in the database it runs in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Command {
    pub(crate) database: String,
    pub(crate) sql: String,
}

/// The command that records the library's current version for collation `oid` of `db`.
pub(crate) fn refresh_sql(db: &Database, oid: u32) -> String {
    if oid == DEFAULT_COLLATION {
        format!(
            "ALTER DATABASE {} REFRESH COLLATION VERSION",
            quote_ident(&db.name)
        )
    } else {
        format!("ALTER COLLATION {} REFRESH VERSION", db.name_of(oid))
    }
}

/// An SQL identifier, quoted when it needs to be.
pub(crate) fn quote_ident(name: &str) -> String {
    let plain = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Whether a provider's locale has a version PostgreSQL records: libc's C, POSIX and `C.*`
/// sort by bytes, as does the builtin provider (17); every ICU locale has one.
pub(crate) fn versioned(provider: &str, locale: &str) -> bool {
    match provider {
        "icu" => true,
        "libc" => {
            !(locale.eq_ignore_ascii_case("C")
                || locale.eq_ignore_ascii_case("POSIX")
                || locale.len() > 2 && locale[..2].eq_ignore_ascii_case("C."))
        }
        _ => false,
    }
}

/// An index method whose order depends on the collation: hash compares equality only, which
/// deterministic collations decide on bytes.
pub(crate) fn order_sensitive(method: &str) -> bool {
    method != "hash"
}

/// The provider's name for `pg_collation.collprovider` / `pg_database.datlocprovider`.
pub(crate) fn provider_name(code: &str) -> &'static str {
    match code {
        "i" => "icu",
        "b" => "builtin",
        "d" => "default",
        _ => "libc",
    }
}

/// glibc's spelling of a locale name as `locale -a` lists it: the codeset lowercased with
/// everything but letters and digits dropped (`de_DE.UTF-8` → `de_DE.utf8`).
pub(crate) fn normalized_locale(name: &str) -> String {
    let Some((lang, rest)) = name.split_once('.') else {
        return name.to_string();
    };
    let (codeset, modifier) = match rest.split_once('@') {
        Some((c, m)) => (c, Some(m)),
        None => (rest, None),
    };
    let codeset: String = codeset
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let mut out = format!("{lang}.{codeset}");
    if let Some(m) = modifier {
        out.push('@');
        out.push_str(m);
    }
    out
}

/// The command that generates a missing glibc locale (`de_DE.UTF-8` →
/// `localedef -i de_DE -f UTF-8 de_DE.UTF-8`).
pub(crate) fn localedef_command(name: &str) -> String {
    let (lang, codeset) = name.split_once('.').unwrap_or((name, "UTF-8"));
    let lang = lang.split('@').next().unwrap_or(lang);
    let codeset = codeset.split('@').next().unwrap_or(codeset);
    let charmap = if normalized_locale(&format!("x.{codeset}")) == "x.utf8" {
        "UTF-8".to_string()
    } else {
        codeset.to_ascii_uppercase()
    };
    format!("localedef -i {lang} -f {charmap} {name}")
}

type PgResult<T> = std::result::Result<T, tokio_postgres::Error>;

/// One database's collation facts, read through `client` connected to it.
pub(crate) async fn read_database(client: &Client, version: u32) -> PgResult<Database> {
    // 15: datlocprovider, daticulocale, datcollversion and its actual version; 17: datlocale.
    let cols = match version {
        v if v >= 170_000 => {
            "datlocprovider::text, coalesce(datlocale, datcollate)::text, datcollversion, \
             pg_catalog.pg_database_collation_actual_version(oid)"
        }
        v if v >= 150_000 => {
            "datlocprovider::text, coalesce(daticulocale, datcollate)::text, datcollversion, \
             pg_catalog.pg_database_collation_actual_version(oid)"
        }
        _ => "'c'::text, datcollate::text, NULL::text, NULL::text",
    };
    let row = client
        .query_one(
            &format!(
                "SELECT datname::text, datctype::text, {cols} FROM pg_catalog.pg_database \
                 WHERE datname = current_database()"
            ),
            &[],
        )
        .await?;
    let mut default = Versioned {
        provider: provider_name(&row.get::<_, String>(2)).to_string(),
        locale: row.get(3),
        recorded: row.get(4),
        actual: row.get(5),
    };
    let collations = read_collations(client, version).await?;
    if version < 150_000 && default.versioned() {
        // 10-14 record no version for the database; its library's version is that of any
        // libc collation of the same locale.
        default.actual = collations
            .iter()
            .find(|c| c.version.provider == "libc")
            .and_then(|c| c.version.actual.clone());
    }
    Ok(Database {
        name: row.get(0),
        default,
        ctype: row.get(1),
        collations,
        indexes: read_indexes(client).await?,
        partitioned: read_relations(client, PARTITIONED).await?,
        matviews: read_relations(client, MATVIEWS).await?,
    })
}

/// Collations something in this database uses, and those users created.
async fn read_collations(client: &Client, version: u32) -> PgResult<Vec<Collation>> {
    // 15: colliculocale; 17: colllocale.
    let locale = match version {
        v if v >= 170_000 => "coalesce(c.colllocale, c.collcollate)",
        v if v >= 150_000 => "coalesce(c.colliculocale, c.collcollate)",
        _ => "c.collcollate",
    };
    let sql = format!(
        "SELECT c.oid::bigint, pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.collname), \
         c.collprovider::text, coalesce({locale}, '')::text, c.collctype::text, c.collversion, \
         pg_catalog.pg_collation_actual_version(c.oid), c.oid >= 16384 \
         FROM pg_catalog.pg_collation c JOIN pg_catalog.pg_namespace n ON n.oid = c.collnamespace \
         WHERE c.oid <> {DEFAULT_COLLATION} AND c.collprovider IN ('c', 'i') AND (c.oid >= 16384 \
           OR EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attcollation = c.oid \
                      AND a.attrelid >= 16384 AND NOT a.attisdropped) \
           OR EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE c.oid = ANY (i.indcollation::oid[])) \
           OR EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.refclassid = 'pg_catalog.pg_collation'::regclass \
                      AND d.refobjid = c.oid AND d.objid >= 16384)) \
         ORDER BY 2"
    );
    let rows = client.query(&sql, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let provider = provider_name(&r.get::<_, String>(2)).to_string();
            Collation {
                oid: u32::try_from(r.get::<_, i64>(0)).unwrap_or(0),
                name: r.get(1),
                ctype: r.get::<_, Option<String>>(4).filter(|_| provider == "libc"),
                version: Versioned {
                    provider,
                    locale: r.get(3),
                    recorded: r.get(5),
                    actual: r.get(6),
                },
                user_defined: r.get(7),
            }
        })
        .collect())
}

/// User indexes that depend on a collation: in their key columns and expressions
/// (`indcollation`), through `pg_depend` (explicit `COLLATE`), or as the collation an
/// operator or function of an expression or predicate runs under (`:inputcollid` in the
/// stored node trees: `WHERE name > 'm'` or `lower(name)` under the database's default,
/// which `pg_depend` does not record).
async fn read_indexes(client: &Client) -> PgResult<Vec<Index>> {
    let sql = "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname), \
         pg_catalog.format('%I.%I', tn.nspname, t.relname), \
         pg_catalog.pg_relation_size(i.indexrelid), am.amname::text, \
         CASE WHEN i.indisprimary THEN 'primary key' WHEN i.indisexclusion THEN 'exclusion' \
              WHEN i.indisunique THEN 'unique' END, i.indisvalid, \
         ARRAY(SELECT DISTINCT x::bigint FROM (SELECT pg_catalog.unnest(i.indcollation::oid[]) \
               UNION SELECT d.refobjid FROM pg_catalog.pg_depend d \
               WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = i.indexrelid \
               AND d.refclassid = 'pg_catalog.pg_collation'::regclass \
               UNION SELECT m[1]::oid FROM pg_catalog.regexp_matches(coalesce(i.indexprs::text, '') \
                     || coalesce(i.indpred::text, ''), ':inputcollid (\\d+)', 'g') m) s(x) \
               WHERE x <> 0 ORDER BY 1) \
         FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid \
         JOIN pg_catalog.pg_am am ON am.oid = c.relam \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_catalog.pg_class t ON t.oid = i.indrelid \
         JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace \
         WHERE i.indexrelid >= 16384 AND c.relpersistence <> 't' AND c.relkind = 'i' \
         ORDER BY 1";
    let rows = client.query(sql, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| Index {
            name: r.get(0),
            table: r.get(1),
            bytes: u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
            method: r.get(3),
            constraint: r.get(4),
            valid: r.get(5),
            collations: oids(&r.get::<_, Vec<i64>>(6)),
        })
        .filter(|i| !i.collations.is_empty())
        .collect())
}

const PARTITIONED: &str = "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname), 0::bigint, \
     ARRAY(SELECT DISTINCT x::bigint FROM pg_catalog.unnest(p.partcollation::oid[]) x WHERE x <> 0 ORDER BY 1) \
     FROM pg_catalog.pg_partitioned_table p JOIN pg_catalog.pg_class c ON c.oid = p.partrelid \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE p.partrelid >= 16384 ORDER BY 1";

const MATVIEWS: &str = "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname), pg_catalog.pg_relation_size(c.oid), \
     ARRAY(SELECT DISTINCT a.attcollation::bigint FROM pg_catalog.pg_attribute a \
           WHERE a.attrelid = c.oid AND a.attnum > 0 AND a.attcollation <> 0 ORDER BY 1) \
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind = 'm' AND c.oid >= 16384 ORDER BY 1";

async fn read_relations(client: &Client, sql: &str) -> PgResult<Vec<Relation>> {
    let rows = client.query(sql, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| Relation {
            name: r.get(0),
            bytes: u64::try_from(r.get::<_, i64>(1)).unwrap_or(0),
            collations: oids(&r.get::<_, Vec<i64>>(2)),
        })
        .filter(|r| !r.collations.is_empty())
        .collect())
}

fn oids(v: &[i64]) -> Vec<u32> {
    v.iter().filter_map(|x| u32::try_from(*x).ok()).collect()
}

/// A provider and locale whose version a server of the new installation was asked for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Probe {
    pub(crate) provider: String,
    pub(crate) locale: String,
    /// The version it reports; `None` when the locale is unversioned or cannot be opened.
    pub(crate) version: Option<String>,
    /// The server's message when it cannot create the collation (a missing locale).
    pub(crate) error: Option<String>,
}

/// Asks the server behind `client` what version its library gives each `provider:locale`,
/// by creating each as a temporary collation in a transaction that is rolled back.
pub(crate) async fn probe(client: &Client, specs: &[String]) -> PgResult<Vec<Probe>> {
    let mut out = Vec::new();
    for spec in specs {
        let (provider, locale) = spec.split_once(':').unwrap_or(("libc", spec));
        let quoted = locale.replace('\'', "''");
        let sql = format!(
            "BEGIN; CREATE COLLATION pg_temp.pgleap_probe (provider = {provider}, locale = '{quoted}')"
        );
        let created = client.batch_execute(&sql).await;
        let (version, error) = match created {
            Ok(()) => {
                let v: Option<String> = client
                    .query_one(
                        "SELECT pg_catalog.pg_collation_actual_version('pg_temp.pgleap_probe'::pg_catalog.regcollation)",
                        &[],
                    )
                    .await?
                    .get(0);
                (v, None)
            }
            Err(e) => (
                None,
                Some(
                    e.as_db_error()
                        .map_or_else(|| e.to_string(), |d| d.message().to_string()),
                ),
            ),
        };
        client.batch_execute("ROLLBACK").await?;
        out.push(Probe {
            provider: provider.to_string(),
            locale: locale.to_string(),
            version,
            error,
        });
    }
    Ok(out)
}

/// The glibc locales among `names` that this process cannot open: run as the owner with the
/// clean environment servers get (so a `LOCPATH` of pgleap's own does not count), through
/// `pgleap __db locales`.
pub(crate) fn missing_locales(runner: &Runner, names: &[String]) -> Result<Vec<String>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let exe = crate::exec::owner::owner_executable(runner.owner())?;
    let mut args: Vec<String> = vec!["__db".into(), "locales".into()];
    for n in names {
        args.push("--locale".into());
        args.push(n.clone());
    }
    let out = runner.run(
        &exe,
        &args,
        &Opts {
            log_name: Some("db-locales"),
            ..Opts::default()
        },
    )?;
    serde_json::from_slice(&out.stdout).map_err(|e| Error::DbAnswer {
        request: "locales".into(),
        source: e,
    })
}

/// Of `names`, those glibc cannot open in this process for LC_COLLATE and LC_CTYPE, as a
/// server's `setlocale` would fail on them.
pub(crate) fn unopenable(names: &[String]) -> Vec<String> {
    use nix::libc;
    names
        .iter()
        .filter(|n| {
            let Ok(c) = std::ffi::CString::new(n.as_str()) else {
                return true;
            };
            // SAFETY: newlocale reads the NUL-terminated name and returns a new handle or
            // null; a non-null handle is released at once and never used.
            unsafe {
                let loc = libc::newlocale(
                    libc::LC_COLLATE_MASK | libc::LC_CTYPE_MASK,
                    c.as_ptr(),
                    std::ptr::null_mut(),
                );
                if loc.is_null() {
                    true
                } else {
                    libc::freelocale(loc);
                    false
                }
            }
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(provider: &str, locale: &str, recorded: Option<&str>, actual: Option<&str>) -> Versioned {
        Versioned {
            provider: provider.into(),
            locale: locale.into(),
            recorded: recorded.map(Into::into),
            actual: actual.map(Into::into),
        }
    }

    #[test]
    fn byte_order_locales_and_builtin_have_no_version() {
        for l in ["C", "POSIX", "C.UTF-8", "C.utf8", "c.utf8", "posix"] {
            assert!(!versioned("libc", l), "{l}");
        }
        assert!(!versioned("builtin", "C.UTF-8"));
        assert!(!versioned("builtin", "PG_UNICODE_FAST"));
        assert!(versioned("libc", "en_US.UTF-8"));
        assert!(versioned("libc", "de_DE"));
        // Not to be mistaken for C: a locale that merely starts with C.
        assert!(versioned("libc", "ca_ES.UTF-8"));
        // ICU locales, und (root) included, are all versioned.
        assert!(versioned("icu", "und"));
        assert!(versioned("icu", "de-DE-x-icu"));
    }

    #[test]
    fn drift_needs_a_recorded_and_an_actual_version() {
        // pg_database rows as 17 returns them: glibc 2.31 recorded, 2.36 here.
        let libc = v("libc", "en_US.UTF-8", Some("2.31"), Some("2.36"));
        assert!(libc.drifts_from(Some("2.36")));
        assert!(!libc.drifts_from(Some("2.31")));
        assert!(!libc.drifts_from(None));
        // template0 records none.
        assert!(!v("libc", "en_US.UTF-8", None, Some("2.36")).drifts_from(Some("2.36")));
        // ICU versions are ICU's collator versions: 153.14 (ICU 67) → 153.120 (ICU 72).
        let icu = v("icu", "de-DE", Some("153.14"), Some("153.120"));
        assert!(icu.drifts_from(Some("153.120")));
        assert!(!icu.drifts_from(Some("153.14")));
        // A C collation whose row somehow records a version is still unversioned.
        assert!(!v("libc", "C.UTF-8", Some("2.31"), None).drifts_from(Some("2.36")));
    }

    #[test]
    fn hash_indexes_do_not_depend_on_order() {
        assert!(!order_sensitive("hash"));
        assert!(order_sensitive("btree"));
        assert!(order_sensitive("gin"));
    }

    #[test]
    fn providers_are_named_from_catalog_codes() {
        assert_eq!(provider_name("c"), "libc");
        assert_eq!(provider_name("i"), "icu");
        assert_eq!(provider_name("b"), "builtin");
        assert_eq!(provider_name("d"), "default");
    }

    #[test]
    fn locale_names_are_normalized_like_glibc() {
        assert_eq!(normalized_locale("de_DE.UTF-8"), "de_DE.utf8");
        assert_eq!(normalized_locale("de_DE.utf8"), "de_DE.utf8");
        assert_eq!(
            normalized_locale("de_DE.ISO-8859-15@euro"),
            "de_DE.iso885915@euro"
        );
        assert_eq!(normalized_locale("de_DE"), "de_DE");
    }

    #[test]
    fn localedef_commands_name_the_charmap() {
        assert_eq!(
            localedef_command("fr_FR.UTF-8"),
            "localedef -i fr_FR -f UTF-8 fr_FR.UTF-8"
        );
        assert_eq!(
            localedef_command("fr_FR.utf8"),
            "localedef -i fr_FR -f UTF-8 fr_FR.utf8"
        );
        assert_eq!(
            localedef_command("de_DE.ISO-8859-1"),
            "localedef -i de_DE -f ISO-8859-1 de_DE.ISO-8859-1"
        );
    }

    #[test]
    fn databases_name_and_version_their_collations() {
        let db = Database {
            name: "app".into(),
            default: v("libc", "en_US.UTF-8", Some("2.31"), Some("2.36")),
            ctype: "en_US.UTF-8".into(),
            collations: vec![Collation {
                oid: 12352,
                name: "pg_catalog.\"de_DE.utf8\"".into(),
                version: v("libc", "de_DE.utf8", Some("2.28"), Some("2.36")),
                ctype: Some("de_DE.utf8".into()),
                user_defined: false,
            }],
            indexes: Vec::new(),
            partitioned: Vec::new(),
            matviews: Vec::new(),
        };
        assert_eq!(db.name_of(DEFAULT_COLLATION), "default");
        assert_eq!(db.name_of(12352), "pg_catalog.\"de_DE.utf8\"");
        assert_eq!(
            db.version_of(12352).and_then(|v| v.recorded.as_deref()),
            Some("2.28")
        );
        assert!(db.version_of(950).is_none());
    }
}
