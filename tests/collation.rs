//! Collation drift, with real clusters: the drift is made real by setting the versions the
//! old cluster recorded to another glibc's (`UPDATE pg_database SET datcollversion`,
//! `UPDATE pg_collation SET collversion`), as a cluster indexed under bullseye's glibc 2.31
//! and upgraded by binaries on a newer one would have them. The locales come from
//! `scripts/test` (en_US.UTF-8, de_DE.UTF-8).

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;

use common::{Fixture, assert_unchanged, bindir, psql};

const OLD: u32 = 16;
const NEW: u32 = 17;

/// Indexes that sort by a drifted collation: the default (en_US, recorded 2.31) by key,
/// expression, uniqueness and predicate; de_DE (recorded 2.28) by an explicit COLLATE.
const DRIFTED: [&str; 5] = [
    "public.people_city_idx",
    "public.people_email_key",
    "public.people_lower_idx",
    "public.people_name_idx",
    "public.people_partial_idx",
];

/// Indexes that must not be touched: integer keys, the C collation, a hash index.
const UNTOUCHED: [&str; 4] = [
    "people_code_idx",
    "people_hash_idx",
    "people_n_idx",
    "people_pkey",
];

/// A running 16 cluster under en_US.UTF-8 whose database `app` holds text indexes of every
/// kind, with the recorded versions of its default collation and of de_DE set back.
fn drifted_fixture() -> Fixture {
    let fx = Fixture::new(OLD)
        .initdb_args(&["--locale=en_US.UTF-8"])
        .running()
        .build();
    fx.sql("postgres", "CREATE DATABASE app");
    fx.sql(
        "app",
        r#"CREATE TABLE people (id int PRIMARY KEY, name text, email text, city text COLLATE "de_DE.utf8", code text COLLATE "C", n int);
           INSERT INTO people SELECT g, 'name ' || g, 'user' || g || '@example.org', 'Stadt ' || (g % 50), 'c' || g, g % 100 FROM generate_series(1, 2000) g;
           CREATE INDEX people_name_idx ON people (name);
           CREATE UNIQUE INDEX people_email_key ON people (email);
           CREATE INDEX people_lower_idx ON people (lower(name));
           CREATE INDEX people_partial_idx ON people (n) WHERE name > 'name 5';
           CREATE INDEX people_city_idx ON people (city);
           CREATE INDEX people_code_idx ON people (code);
           CREATE INDEX people_n_idx ON people (n);
           CREATE INDEX people_hash_idx ON people USING hash (name);"#,
    );
    fx.sql(
        "app",
        "UPDATE pg_database SET datcollversion = '2.31' WHERE datname = 'app';
         UPDATE pg_collation SET collversion = '2.28' WHERE collname = 'de_DE.utf8';",
    );
    fx
}

fn sorted(v: &serde_json::Value, key: &str) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x[key].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn check_lists_exactly_the_drifted_indexes() {
    let fx = drifted_fixture();
    let run = fx.pgleap(fx.args("check", NEW, &["--json"]));
    run.success();
    let doc = run.json();
    let c = &doc["plan"]["collations"];
    assert_eq!(c["mode"], "report");
    assert_eq!(c["compared_with"], "new installation", "{c:#}");
    assert_eq!(sorted(&c["indexes"], "name"), DRIFTED, "{c:#}");
    assert!(
        c["indexes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["database"] == "app" && i["bytes"].as_u64().unwrap() > 0)
    );
    let drifted = sorted(&c["drifted"], "collation");
    assert_eq!(drifted, ["default", "pg_catalog.\"de_DE.utf8\""], "{c:#}");
    let default = c["drifted"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["collation"] == "default")
        .unwrap();
    assert_eq!(default["recorded"], "2.31");
    assert_eq!(default["locale"], "en_US.UTF-8");
    let sql: Vec<&str> = c["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["sql"].as_str().unwrap())
        .collect();
    assert!(sql.contains(&"REINDEX INDEX CONCURRENTLY public.people_name_idx"));
    assert!(sql.contains(&"ALTER DATABASE app REFRESH COLLATION VERSION"));
    assert!(sql.contains(&"ALTER COLLATION pg_catalog.\"de_DE.utf8\" REFRESH VERSION"));
    let finding = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "collation-drift")
        .expect("a collation-drift warning");
    assert_eq!(finding["severity"], "warning");
    assert!(
        run.stderr
            .contains("collations    report: 2 collation versions drifted in 1 databases"),
        "{}",
        run.stderr
    );
}

#[test]
fn collations_refuse_makes_drift_a_refusal() {
    let fx = drifted_fixture();
    let new = fx.new_datadir(NEW);
    for cmd in ["check", "upgrade"] {
        let before = untouched(&fx);
        let run = fx.pgleap(fx.args(cmd, NEW, &["--collations", "refuse"]));
        run.refused("collation versions changed, so 5 indexes");
        assert!(
            run.stderr
                .contains("\\connect app\nREINDEX INDEX CONCURRENTLY public.people_city_idx;"),
            "{}",
            run.stderr
        );
        assert!(!new.exists(), "{cmd} created {}", new.display());
        assert_unchanged(&before, &untouched(&fx), cmd);
    }
}

/// `relname → relfilenode` of the indexes of `app`.
fn filenodes(fx: &Fixture, port: u16) -> BTreeMap<String, String> {
    psql(
        NEW.max(fx.major),
        &fx.socket,
        port,
        &fx.superuser,
        "app",
        "SELECT c.relname || '=' || c.relfilenode FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'people'::regclass",
    )
    .lines()
    .filter_map(|l| l.split_once('='))
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

#[test]
fn reindex_rebuilds_exactly_the_drifted_indexes_and_resumes_after_a_crash() {
    let fx = drifted_fixture();
    let before = filenodes(&fx, fx.port);
    let args = fx.args(
        "upgrade",
        NEW,
        &["--mode", "link", "--collations", "reindex"],
    );
    // Killed between the rebuilds and the refresh of the versions.
    let out = Command::new(env!("CARGO_BIN_EXE_pgleap"))
        .args(&args)
        .env("PGLEAP_FAULT", "reindexed:collations")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the fault point did not kill pgleap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("fault point reindexed:collations"),
        "{stderr}"
    );
    // Resumed: rebuilds what still drifts, then refreshes.
    let mut resumed = args.clone();
    resumed.push("--json".into());
    let run = fx.pgleap(&resumed);
    run.success();
    let doc = run.json();
    let c = &doc["collations"];
    let mut rebuilt: Vec<String> = c["rebuilt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().trim_start_matches("app: ").to_string())
        .collect();
    rebuilt.sort();
    assert_eq!(rebuilt, DRIFTED, "{c:#}");
    assert_eq!(c["failed"], serde_json::json!([]));
    assert_eq!(c["left"], serde_json::json!([]));
    // pg_upgrade recreates the collations initdb imports (de_DE.utf8) with the new
    // library's version: only the database's recorded version was left to refresh.
    assert_eq!(
        sorted(&c["refreshed"], "sql"),
        ["ALTER DATABASE app REFRESH COLLATION VERSION"],
        "{c:#}"
    );

    // No connection warns, and every recorded version is the library's.
    for db in ["postgres", "app", "template1"] {
        let out = common::as_owner(
            &bindir(NEW).join("psql"),
            &[
                "-X",
                "-At",
                "-h",
                &fx.socket.display().to_string(),
                "-p",
                &fx.port.to_string(),
                "-U",
                &fx.superuser,
                "-d",
                db,
                "-c",
                "SELECT 1",
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.is_empty(), "{db}: {err}");
    }
    let versions = fx.sql(
        "app",
        "SELECT count(*) FILTER (WHERE datcollversion IS DISTINCT FROM pg_database_collation_actual_version(oid)) FROM pg_database WHERE datallowconn",
    );
    assert_eq!(versions.trim(), "0");
    let colls = fx.sql(
        "app",
        "SELECT count(*) FROM pg_collation WHERE collversion IS DISTINCT FROM pg_collation_actual_version(oid) AND collprovider = 'c'",
    );
    assert_eq!(colls.trim(), "0");
    // Every btree index is sound in the new order, and no invalid leftover remains.
    let checked = fx.sql(
        "app",
        "CREATE EXTENSION amcheck;
         SELECT count(bt_index_check(c.oid, true)) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         JOIN pg_am am ON am.oid = c.relam WHERE am.amname = 'btree' AND c.relnamespace = 'public'::regnamespace",
    );
    assert_eq!(checked.trim(), "8");
    assert_eq!(
        fx.sql("app", "SELECT count(*) FROM pg_index WHERE NOT indisvalid")
            .trim(),
        "0"
    );
    let after = filenodes(&fx, fx.port);
    for name in UNTOUCHED {
        assert_eq!(before[name], after[name], "{name} was rebuilt");
    }
    for name in DRIFTED {
        let short = name.trim_start_matches("public.");
        assert_ne!(before[short], after[short], "{short} was not rebuilt");
    }
}

#[test]
fn a_locale_missing_from_the_new_environment_is_refused_before_the_old_server_stops() {
    if !common::is_root() {
        eprintln!("skipped: compiling a private locale and starting a server with it needs root");
        return;
    }
    let fx = Fixture::new(OLD).running().build();
    // fr_FR.UTF-8 exists only in a private directory that the old server alone is given
    // (LOCPATH): to the new server, as to pgleap's children, it does not exist.
    let locpath = fx.root.path().join("locales");
    std::fs::create_dir(&locpath).unwrap();
    let made = Command::new("localedef")
        .args(["-i", "fr_FR", "-f", "UTF-8"])
        .arg(locpath.join("fr_FR.UTF-8"))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "localedef: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    start_with_locpath(&fx, &locpath);
    fx.sql(
        "postgres",
        "CREATE DATABASE fr LOCALE 'fr_FR.UTF-8' TEMPLATE template0",
    );
    fx.sql("fr", "CREATE TABLE t (s text PRIMARY KEY)");
    let new = fx.new_datadir(NEW);
    for cmd in ["check", "upgrade"] {
        let before = untouched(&fx);
        let run = fx.pgleap(fx.args(cmd, NEW, &[]));
        run.refused("the old cluster uses the locale fr_FR.UTF-8 (database fr), which this system does not have");
        assert!(
            run.stderr.contains(
                "Generate it, then run pgleap again: localedef -i fr_FR -f UTF-8 fr_FR.UTF-8"
            ),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("Nothing was changed."),
            "{}",
            run.stderr
        );
        assert!(!new.exists(), "{cmd} created {}", new.display());
        assert_unchanged(&before, &untouched(&fx), cmd);
        // The old server still serves.
        assert_eq!(fx.sql("fr", "SELECT count(*) FROM t").trim(), "0");
    }
}

/// What a refusal must leave as it was while the old server keeps running: everything below
/// the fixture root but the running server's own data directory (whose pages its background
/// writer flushes at any time), plus that server's `postmaster.pid` (the same server, never
/// stopped) and `postgresql.conf`.
fn untouched(fx: &Fixture) -> common::Snapshot {
    let data = fx
        .datadir
        .strip_prefix(fx.root.path())
        .unwrap()
        .to_path_buf();
    let mut s: common::Snapshot = common::snapshot(fx.root.path())
        .into_iter()
        .filter(|(p, _)| !p.starts_with(&data))
        .collect();
    for f in ["postmaster.pid", "postgresql.conf", "postmaster.opts"] {
        s.extend(
            common::snapshot(&fx.datadir.join(f))
                .into_values()
                .map(|v| (data.join(f), v)),
        );
    }
    s
}

/// Restarts the fixture's server with `LOCPATH` in its environment.
fn start_with_locpath(fx: &Fixture, locpath: &Path) {
    fx.stop();
    let o = common::owner();
    let log = fx.root.path().join("server-locpath.log");
    let out = Command::new(bindir(OLD).join("pg_ctl"))
        .args(["start", "-w", "-D"])
        .arg(&fx.datadir)
        .arg("-l")
        .arg(&log)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LANG", "C")
        .env("LOCPATH", locpath)
        .current_dir("/")
        .uid(o.uid)
        .gid(o.gid)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_ctl start: {}{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[test]
fn a_unique_index_the_new_order_breaks_is_reported_not_papered_over() {
    let fx = Fixture::new(OLD)
        .initdb_args(&["--locale=en_US.UTF-8"])
        .running()
        .build();
    fx.sql("postgres", "CREATE DATABASE app");
    // Keys equal in the new order that the old one kept apart, made real the way the drift
    // is: the index is declared unique over rows that are not.
    fx.sql(
        "app",
        "CREATE TABLE accounts (id int PRIMARY KEY, login text);
         INSERT INTO accounts VALUES (1, 'anna'), (2, 'anna'), (3, 'bert');
         CREATE INDEX accounts_login_key ON accounts (login);
         UPDATE pg_index SET indisunique = true WHERE indexrelid = 'accounts_login_key'::regclass;
         UPDATE pg_database SET datcollversion = '2.31' WHERE datname = 'app';",
    );
    let run = fx.pgleap(fx.args(
        "upgrade",
        NEW,
        &["--mode", "link", "--collations", "reindex", "--json"],
    ));
    run.success();
    let c = &run.json()["collations"];
    let failed = c["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{c:#}");
    assert_eq!(failed[0]["index"], "public.accounts_login_key");
    assert_eq!(failed[0]["detail"], "Key (login)=(anna) is duplicated.");
    assert!(
        run.stderr.contains(
            "rebuilding public.accounts_login_key in app failed: could not create unique index"
        ) && run.stderr.contains("Key (login)=(anna) is duplicated."),
        "{}",
        run.stderr
    );
    assert_eq!(failed[0]["duplicates"], serde_json::json!(["anna"]));
    assert!(
        run.stderr.contains("duplicated keys: anna")
            && run.stderr.contains(
                "list them with: SELECT (login)::text, count(*) FROM public.accounts GROUP BY login HAVING count(*) > 1 ORDER BY 1; make them distinct or delete the extras, then run REINDEX INDEX CONCURRENTLY public.accounts_login_key"
            ),
        "{}",
        run.stderr
    );
    // Not papered over: the version stays recorded as it was, so PostgreSQL keeps warning,
    // and the refresh is left to do; the failed rebuild's INVALID index is gone.
    assert_eq!(
        sorted(&c["left"], "sql"),
        ["ALTER DATABASE app REFRESH COLLATION VERSION"],
        "{c:#}"
    );
    assert_eq!(
        fx.sql(
            "app",
            "SELECT datcollversion FROM pg_database WHERE datname = 'app'"
        )
        .trim(),
        "2.31"
    );
    assert_eq!(
        fx.sql("app", "SELECT count(*) FROM pg_index WHERE NOT indisvalid")
            .trim(),
        "0"
    );
}
