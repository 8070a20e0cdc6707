//! What the old cluster's catalogs say: bootstrap superuser, template0's encoding and locale,
//! and per database the extensions and C libraries in use.
//!
//! Read over a Unix socket with tokio-postgres, by [`crate::inspect::db`], as the cluster owner.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::exec::process::{Opts, Runner};
use crate::inspect::install::Install;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct LocaleInfo {
    pub(crate) encoding: String,
    pub(crate) collate: String,
    pub(crate) ctype: String,
    /// `libc`, `icu` or `builtin`.
    pub(crate) provider: String,
    pub(crate) provider_locale: Option<String>,
    pub(crate) icu_rules: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Extension {
    pub(crate) name: String,
    pub(crate) version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Database {
    pub(crate) name: String,
    pub(crate) encoding: String,
    pub(crate) extensions: Vec<Extension>,
    /// `probin` of C-language functions, e.g. `$libdir/hstore`.
    pub(crate) libraries: Vec<String>,
    pub(crate) relations: u64,
    /// Relations created by users (oid 16384 and up): what pg_upgrade dumps and restores.
    #[serde(default)]
    pub(crate) user_relations: u64,
}

/// A transaction prepared for two-phase commit and not yet finished.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct PreparedXact {
    pub(crate) gid: String,
    pub(crate) database: String,
    pub(crate) owner: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Catalog {
    pub(crate) server_version_num: u32,
    pub(crate) bootstrap_superuser: String,
    pub(crate) template0: LocaleInfo,
    pub(crate) databases: Vec<Database>,
    pub(crate) shared_preload_libraries: Vec<String>,
    /// pg_upgrade refuses a cluster with any.
    #[serde(default)]
    pub(crate) prepared: Vec<PreparedXact>,
    /// Standbys, slots, subscriptions and publications.
    #[serde(default)]
    pub(crate) replication: crate::inspect::replication::Replication,
    /// Per database: collations in use, their versions, and what sorts by them.
    #[serde(default)]
    pub(crate) collations: Vec<crate::inspect::collation::Database>,
    /// WAL archiving: its settings and whether it fails now.
    #[serde(default)]
    pub(crate) archiving: crate::inspect::archive::Archiving,
    /// `synchronous_standby_names` (empty when no commit waits for a standby).
    #[serde(default)]
    pub(crate) synchronous_standby_names: String,
}

type PgResult<T> = Result<T, tokio_postgres::Error>;

/// Reads the catalog through `first` (connected to any database) and one connection per
/// database made by `connect`.
pub(crate) async fn read<F, Fut>(first: &Client, connect: F) -> PgResult<Catalog>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = PgResult<Client>>,
{
    let version: u32 = first
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await?
        .get::<_, i32>(0)
        .try_into()
        .unwrap_or(0);
    let bootstrap_superuser: String = first
        .query_one(
            "SELECT rolname::text FROM pg_catalog.pg_authid WHERE oid = 10",
            &[],
        )
        .await?
        .get(0);
    let template0 = template0_locale(first, version).await?;
    let spl: String = first
        .query_one("SELECT current_setting('shared_preload_libraries')", &[])
        .await?
        .get(0);
    let names = first
        .query(
            "SELECT datname::text, pg_catalog.pg_encoding_to_char(encoding)::text FROM pg_catalog.pg_database \
             WHERE datallowconn ORDER BY datname",
            &[],
        )
        .await?;
    let mut replication = crate::inspect::replication::read(first, version).await?;
    let archiving = crate::inspect::archive::read(first, version).await?;
    let synchronous_standby_names: String = first
        .query_one("SELECT current_setting('synchronous_standby_names')", &[])
        .await?
        .get(0);
    let mut databases = Vec::new();
    let mut collations = Vec::new();
    for r in names {
        let name: String = r.get(0);
        let client = connect(name.clone()).await?;
        crate::inspect::replication::read_database(&client, &name, &mut replication).await?;
        databases.push(read_database(&client, name, r.get(1)).await?);
        collations.push(crate::inspect::collation::read_database(&client, version).await?);
    }
    let prepared = first
        .query(
            "SELECT gid, database::text, owner::text FROM pg_catalog.pg_prepared_xacts ORDER BY prepared, gid",
            &[],
        )
        .await?
        .iter()
        .map(|r| PreparedXact {
            gid: r.get(0),
            database: r.get(1),
            owner: r.get(2),
        })
        .collect();
    Ok(Catalog {
        server_version_num: version,
        bootstrap_superuser,
        template0,
        databases,
        shared_preload_libraries: split_library_list(&spl),
        prepared,
        replication,
        collations,
        archiving,
        synchronous_standby_names,
    })
}

/// template0's encoding and locale: what initdb of the new cluster must repeat.
async fn template0_locale(first: &Client, version: u32) -> PgResult<LocaleInfo> {
    // 15: datlocprovider and daticulocale; 16: daticurules; 17: daticulocale became datlocale.
    let locale_cols = match version {
        v if v >= 170_000 => "datlocprovider::text, datlocale::text, daticurules::text",
        v if v >= 160_000 => "datlocprovider::text, daticulocale::text, daticurules::text",
        v if v >= 150_000 => "datlocprovider::text, daticulocale::text, NULL::text",
        _ => "'c'::text, NULL::text, NULL::text",
    };
    let row = first
        .query_one(
            &format!(
                "SELECT pg_catalog.pg_encoding_to_char(encoding)::text, datcollate::text, datctype::text, {locale_cols} \
                 FROM pg_catalog.pg_database WHERE datname = 'template0'"
            ),
            &[],
        )
        .await?;
    let provider = match row.get::<_, String>(3).as_str() {
        "i" => "icu",
        "b" => "builtin",
        _ => "libc",
    }
    .to_string();
    let template0 = LocaleInfo {
        encoding: row.get(0),
        collate: row.get(1),
        ctype: row.get(2),
        provider,
        provider_locale: row.get(4),
        icu_rules: row.get(5),
    };
    Ok(template0)
}

/// One database's extensions, C libraries and relation count.
async fn read_database(client: &Client, name: String, encoding: String) -> PgResult<Database> {
    let extensions = client
        .query(
            "SELECT extname::text, extversion FROM pg_catalog.pg_extension ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| Extension {
            name: r.get(0),
            version: r.get(1),
        })
        .collect();
    // The same set pg_upgrade checks for loadable_libraries.txt: C functions outside
    // the initial catalog.
    let libraries = client
        .query(
            "SELECT DISTINCT probin FROM pg_catalog.pg_proc WHERE prolang = 13 \
             AND probin IS NOT NULL AND oid >= 16384 ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let counts = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE oid >= 16384) FROM pg_catalog.pg_class",
            &[],
        )
        .await?;
    let (relations, user_relations): (i64, i64) = (counts.get(0), counts.get(1));
    Ok(Database {
        name,
        encoding,
        extensions,
        libraries,
        relations: relations.try_into().unwrap_or(0),
        user_relations: user_relations.try_into().unwrap_or(0),
    })
}

/// The bootstrap superuser (role oid 10) of a stopped cluster, from a single-user backend,
/// which runs as that role whatever its name: the one role sure to exist (`initdb -U admin`
/// leaves no `postgres` role to connect as).
pub(crate) fn bootstrap_superuser(
    runner: &Runner,
    install: &Install,
    datadir: &Path,
) -> crate::error::Result<String> {
    // A cluster may have dropped its `postgres` database; template1 is always there.
    bootstrap_superuser_in(runner, install, datadir, "postgres")
        .or_else(|_| bootstrap_superuser_in(runner, install, datadir, "template1"))
}

fn bootstrap_superuser_in(
    runner: &Runner,
    install: &Install,
    datadir: &Path,
    dbname: &str,
) -> crate::error::Result<String> {
    use std::io::Write as _;
    use std::process::Stdio;
    let postgres = install.postgres();
    let args = [
        "--single".as_ref(),
        "-D".as_ref(),
        datadir.as_os_str(),
        dbname.as_ref(),
    ];
    let mut cmd = runner.command(&postgres, &args, &Opts::default());
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let failed = |e| crate::error::Error::io("could not run postgres --single", &postgres, e);
    let mut child = cmd.spawn().map_err(failed)?;
    if let Some(mut stdin) = child.stdin.take() {
        // Closing stdin afterwards ends the session.
        stdin
            .write_all(b"SELECT rolname FROM pg_catalog.pg_authid WHERE oid = 10\n")
            .map_err(failed)?;
    }
    crate::exec::interrupt::set_child(child.id());
    let out = child.wait_with_output();
    crate::exec::interrupt::clear_child();
    let out = out.map_err(failed)?;
    single_user_value(&String::from_utf8_lossy(&out.stdout), "rolname").ok_or_else(|| {
        crate::error::Error::BootstrapSuperuserUnknown {
            datadir: datadir.to_path_buf(),
            status: out.status.to_string(),
            stderr_tail: crate::exec::process::last_lines(&String::from_utf8_lossy(&out.stderr), 5),
        }
    })
}

/// The value of `column` in a single-user backend's answer:
/// `\t 1: rolname = "admin"\t(typeid = 19, len = 64, typmod = -1, byval = f)` → `admin`.
pub(crate) fn single_user_value(stdout: &str, column: &str) -> Option<String> {
    let marker = format!("1: {column} = \"");
    stdout.lines().find_map(|l| {
        let rest = l.split_once(&marker)?.1;
        Some(rest[..rest.rfind('"')?].to_string())
    })
}

/// Splits `shared_preload_libraries` (`'a', "b" ,c`) into names.
pub(crate) fn split_library_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|s| s.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Where the new installation would load a library from, as the server resolves it.
pub(crate) fn library_path(install: &Install, name: &str) -> PathBuf {
    let rel = name.strip_prefix("$libdir/").unwrap_or(name);
    let base = if Path::new(rel).is_absolute() {
        PathBuf::from(rel)
    } else {
        install.pkglibdir.join(rel)
    };
    if base.extension().is_some() {
        base
    } else {
        base.with_extension("so")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::inspect::install::tests::sample as install;

    #[test]
    fn reads_single_user_answers() {
        let out = "\nPostgreSQL stand-alone backend 16.15\nbackend> \t 1: rolname\t(typeid = 19, len = 64, typmod = -1, byval = f)\n\t----\n\t 1: rolname = \"admin\"\t(typeid = 19, len = 64, typmod = -1, byval = f)\n\t----\nbackend> \n";
        assert_eq!(single_user_value(out, "rolname").as_deref(), Some("admin"));
        assert_eq!(single_user_value("backend> \n", "rolname"), None);
    }

    #[test]
    fn splits_preload_lists() {
        assert_eq!(split_library_list(""), Vec::<String>::new());
        assert_eq!(
            split_library_list("pg_stat_statements, 'auto_explain',\"x\""),
            ["pg_stat_statements", "auto_explain", "x"]
        );
    }

    #[test]
    fn resolves_library_paths_like_the_server() {
        let i = install();
        assert_eq!(
            library_path(&i, "$libdir/hstore"),
            PathBuf::from("/pg/lib/hstore.so")
        );
        assert_eq!(
            library_path(&i, "pg_stat_statements"),
            PathBuf::from("/pg/lib/pg_stat_statements.so")
        );
        assert_eq!(
            library_path(&i, "/opt/x/lib.so"),
            PathBuf::from("/opt/x/lib.so")
        );
    }
}
