//! Preflights that passed and then failed inside the downtime window, or refused for the wrong
//! reason, as a DBA found them on real clusters. One test per finding; each names what it
//! guards. Real clusters, binaries and pg_upgrade.

mod common;

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use common::{Fixture, Run, bindir, chown};

/// Appends lines to the old cluster's postgresql.conf.
fn append_conf(fx: &Fixture, text: &str) {
    let path = fx.datadir.join("postgresql.conf");
    let mut conf = std::fs::read_to_string(&path).unwrap();
    conf.push_str(text);
    std::fs::write(&path, conf).unwrap();
}

/// Runs `check --json` and returns the run and its document.
fn check_json(fx: &Fixture, new: u32, extra: &[&str]) -> (common::Run, serde_json::Value) {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let run = fx.pgleap(fx.args("check", new, &args));
    let doc = run.json();
    (run, doc)
}

/// Runs pgleap and asserts a refusal quoting each of `messages`, with nothing below `root`
/// changed and `new_datadir` not created.
#[track_caller]
fn assert_refused(root: &Path, args: &[String], messages: &[&str], new_datadir: &Path) -> Run {
    let before = common::snapshot(root);
    let run = common::pgleap(args);
    for m in messages {
        run.refused(m);
    }
    assert!(
        run.stderr.contains("Nothing was changed."),
        "a refusal says nothing was changed:\n{}",
        run.stderr
    );
    assert_eq!(
        before,
        common::snapshot(root),
        "{} changed files on disk",
        args[0]
    );
    assert!(
        std::fs::symlink_metadata(new_datadir).is_err(),
        "{} refused but created {}",
        args[0],
        new_datadir.display()
    );
    run
}

/// pgleap args for `cmd` on `datadir` with explicit bindirs and new data directory.
fn args(cmd: &str, datadir: &Path, old: u32, new: u32, new_datadir: &Path) -> Vec<String> {
    vec![
        cmd.to_string(),
        "--old-datadir".into(),
        datadir.display().to_string(),
        "--old-bindir".into(),
        bindir(old).display().to_string(),
        "--new-bindir".into(),
        bindir(new).display().to_string(),
        "--new-datadir".into(),
        new_datadir.display().to_string(),
    ]
}

fn write_owned(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    chown(path);
}

// Valid settings were commented out as "rejected": `postgres --describe-config` omits the
// settings not shown in the sample file (remove_temp_files_after_crash, jit_tuple_deforming,
// ignore_checksum_failure, application_name, ...).
#[test]
fn settings_missing_from_describe_config_are_kept() {
    let fx = Fixture::new(16).running().build();
    let kept = [
        "remove_temp_files_after_crash = off",
        "jit_tuple_deforming = off",
        "ignore_checksum_failure = off",
        "application_name = 'billing'",
    ];
    append_conf(&fx, &format!("{}\n", kept.join("\n")));
    fx.sql("postgres", "SELECT pg_reload_conf()");
    let (run, doc) = check_json(&fx, 17, &[]);
    run.success();
    assert_eq!(
        doc["config"]["commented"],
        serde_json::json!([]),
        "{}",
        run.stdout
    );
    let findings = doc["findings"].to_string();
    assert!(!findings.contains("config-setting-dropped"), "{findings}");
}

// A removed setting in an include_dir outside the data directory: `check` exited 1 with the
// new server's raw FATAL instead of the refusal a removed setting in postgresql.conf gets.
#[test]
fn removed_setting_in_an_outside_include_dir_is_refused() {
    let fx = Fixture::new(16).running().build();
    let shared = fx.root.path().join("shared-conf.d");
    std::fs::create_dir(&shared).unwrap();
    chown(&shared);
    let file = shared.join("old.conf");
    // old_snapshot_threshold: removed in 17.
    write_owned(&file, "work_mem = '8MB'\nold_snapshot_threshold = -1\n");
    append_conf(&fx, &format!("include_dir '{}'\n", shared.display()));
    fx.sql("postgres", "SELECT pg_reload_conf()");
    let new = fx.new_datadir(17);
    for cmd in ["check", "upgrade"] {
        let before = common::snapshot(fx.root.path());
        let run = fx.pgleap(fx.args(cmd, 17, &[]));
        run.refused(&format!(
            "PostgreSQL 17 has no setting old_snapshot_threshold, set in {} line 2, outside the data directory",
            file.display()
        ));
        assert!(
            run.stderr.contains(&format!(
                "Comment out line 2 of {} or remove the setting",
                file.display()
            )),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("FATAL"), "{}", run.stderr);
        assert!(!new.exists(), "{cmd} left {}", new.display());
        // The old cluster's files and the shared file are untouched (the running server's
        // own files aside).
        let after = common::snapshot(fx.root.path());
        for p in [
            Path::new("shared-conf.d/old.conf"),
            Path::new("data/16/postgresql.conf"),
        ] {
            assert_eq!(before.get(p), after.get(p), "{cmd} changed {}", p.display());
        }
    }
    assert!(
        fx.sql("postgres", "SHOW server_version_num")
            .starts_with("16")
    );
}

/// The single JSON document on stdout; fails when there are none or several.
#[track_caller]
fn one_document(run: &common::Run) -> serde_json::Value {
    let docs: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&run.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                run.stdout, run.stderr
            )
        });
    assert_eq!(
        docs.len(),
        1,
        "expected one JSON document on stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    docs.into_iter().next().unwrap()
}

// `--json` printed nothing for `upgrade` on a finished upgrade, `finalize` on a finalized one
// and usage errors, and two documents for a refused `check`. Every outcome prints one.
#[test]
fn every_json_outcome_prints_one_document() {
    let fx = Fixture::new(16).build();
    let new = fx.new_datadir(17);

    // Usage error: exit 2, and the document says so.
    let run = fx.pgleap(fx.args("check", 17, &["--json", "--mode", "sideways"]));
    assert_eq!(run.code(), 2, "{}", run.stderr);
    let doc = one_document(&run);
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["exit_code"], 2);
    assert!(doc["error"].as_str().unwrap().contains("sideways"), "{doc}");

    // A refusal found by the preflight.
    std::fs::create_dir(&new).unwrap();
    std::fs::write(new.join("stray"), "x").unwrap();
    let run = fx.pgleap(fx.args("check", 17, &["--json"]));
    assert_eq!(run.code(), 3, "{}", run.stderr);
    let doc = one_document(&run);
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["exit_code"], 3);
    assert!(doc["findings"].to_string().contains("not empty"), "{doc}");
    std::fs::remove_dir_all(&new).unwrap();

    let run = fx.pgleap(fx.args("upgrade", 17, &["--json", "--no-analyze"]));
    run.success();
    assert_eq!(one_document(&run)["ok"], true);
    // Again: nothing to do, said in JSON too.
    let run = fx.pgleap(fx.args("upgrade", 17, &["--json", "--no-analyze"]));
    run.success();
    let doc = one_document(&run);
    assert_eq!(doc["ok"], true, "{doc}");
    assert_eq!(doc["state"], "done", "{doc}");
    assert_eq!(doc["new_datadir"], new.display().to_string(), "{doc}");

    let target = ["-d", &fx.datadir.display().to_string(), "--json"];
    let run = fx.pgleap(["status"].iter().chain(&target));
    run.success();
    assert_eq!(one_document(&run)["state"], "done");
    let run = fx.pgleap(["finalize", "--yes"].iter().chain(&target));
    run.success();
    assert_eq!(one_document(&run)["ok"], true);
    let run = fx.pgleap(["finalize", "--yes"].iter().chain(&target));
    run.success();
    let doc = one_document(&run);
    assert_eq!(doc["ok"], true, "{doc}");
    assert_eq!(doc["state"], "finalized", "{doc}");
    assert_eq!(doc["removed"], serde_json::json!([]), "{doc}");
}

// A data directory whose PG_VERSION says 15 while pg_control holds 16's catalog: pg_ctl
// failed after the preflight had passed (exit 1).
#[test]
fn pg_version_not_matching_pg_control_is_refused() {
    let fx = Fixture::new(16).build();
    write_owned(&fx.datadir.join("PG_VERSION"), "15\n");
    let new = fx.root.path().join("data/17");
    for cmd in ["check", "upgrade"] {
        assert_refused(
            fx.root.path(),
            &args(cmd, &fx.datadir, 15, 17, &new),
            &[
                &format!(
                    "{}/PG_VERSION says 15, but global/pg_control holds catalog version 202307071, which is PostgreSQL 16's",
                    fx.datadir.display()
                ),
                "Put the cluster's real major in PG_VERSION",
            ],
            &new,
        );
    }
}

// An empty or corrupt global/pg_control: pg_controldata's failure surfaced as exit 1, or its
// garbage was trusted.
#[test]
fn empty_or_corrupt_pg_control_is_refused() {
    let fx = Fixture::new(16).build();
    let control = fx.datadir.join("global/pg_control");
    let good = std::fs::read(&control).unwrap();
    let new = fx.new_datadir(17);
    let mut corrupt = good.clone();
    for b in &mut corrupt[16..64] {
        *b = !*b;
    }
    for (what, bytes, says) in [
        ("empty", Vec::new(), "could not read"),
        ("corrupt", corrupt, "CRC"),
    ] {
        std::fs::write(&control, &bytes).unwrap();
        for cmd in ["check", "upgrade"] {
            let run = assert_refused(
                fx.root.path(),
                &args(cmd, &fx.datadir, 16, 17, &new),
                &[
                    &format!("{} cannot be trusted", control.display()),
                    "Restore global/pg_control from a backup of this cluster",
                ],
                &new,
            );
            assert!(run.stderr.contains(says), "{what}: {}", run.stderr);
        }
    }
    std::fs::write(&control, good).unwrap();
}

// A new data directory whose parent is a file, is not writable by the owner, or is a
// dangling symlink: initdb or the journal failed after the preflight passed (exit 1).
#[test]
fn unusable_parent_of_the_new_datadir_is_refused() {
    let fx = Fixture::new(16).build();
    let root = fx.root.path();
    let file = root.join("a-file");
    write_owned(&file, "x");
    let locked = root.join("locked");
    std::fs::create_dir(&locked).unwrap();
    // Another user's directory that the owner cannot write (root would create the new data
    // directory in root's own directories and hand it over).
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    if common::is_root() {
        nix::unistd::chown(&locked, Some(65534.into()), Some(65534.into())).unwrap();
    }
    let dangling = root.join("dangling");
    std::os::unix::fs::symlink(root.join("nowhere"), &dangling).unwrap();
    let owner = common::owner().name;
    let cases = [
        (
            file.join("17"),
            format!("{} is not a directory", file.display()),
        ),
        (
            dangling.join("17"),
            format!(
                "{} is a symbolic link to {}, which does not exist",
                dangling.display(),
                root.join("nowhere").display()
            ),
        ),
        (
            locked.join("17"),
            format!(
                "{} is not writable by {owner} (it belongs to uid 65534, mode 755)",
                locked.display()
            ),
        ),
    ];
    for (new, why) in &cases {
        if new.starts_with(&locked) && !common::is_root() {
            // As the owner, the parent is the owner's own: only root can set this up.
            continue;
        }
        for cmd in ["check", "upgrade"] {
            assert_refused(
                root,
                &args(cmd, &fx.datadir, 16, 17, new),
                &[
                    &format!("{} cannot be created: {why}", new.display()),
                    "Pass --new-datadir with a directory the cluster owner can create",
                ],
                new,
            );
        }
    }
}

// A cluster without a `postgres` database was refused ("database postgres does not exist",
// with an unrelated authentication fix); pg_upgrade handles it, and PostgreSQL's own tools
// fall back to template1.
#[test]
fn cluster_without_postgres_database_is_upgraded() {
    let fx = Fixture::new(16).running().build();
    fx.sql("template1", "DROP DATABASE postgres");
    fx.sql("template1", "CREATE DATABASE app");
    fx.sql("app", "CREATE TABLE kept AS SELECT 42 AS answer");
    // Read from the live server.
    let (run, doc) = check_json(&fx, 17, &[]);
    run.success();
    assert_eq!(doc["ok"], true, "{}", run.stderr);
    // Read through a fenced start of the stopped server, then upgraded.
    fx.stop();
    let run = fx.pgleap(fx.args("upgrade", 17, &[]));
    run.success();
    // The old server was stopped, so the new one is left stopped too.
    common::start_server(
        17,
        &fx.new_datadir(17),
        &fx.root.path().join("server-17.log"),
    );
    assert!(fx.sql("app", "SHOW server_version_num").starts_with("17"));
    assert_eq!(fx.sql("app", "SELECT answer FROM kept").trim(), "42");
}

// initdb -U admin, and a role `postgres` that is no superuser: pgleap connected as
// `postgres` and failed on the catalog without saying which role to use.
#[test]
fn non_superuser_postgres_role_suggests_the_real_superuser() {
    let fx = Fixture::new(16).superuser("admin").running().build();
    fx.sql("postgres", "CREATE ROLE postgres LOGIN");
    let new = fx.new_datadir(17);
    for cmd in ["check", "upgrade"] {
        assert_refused(
            fx.root.path(),
            &fx.args(cmd, 17, &[]),
            &[
                "connected as postgres, which is not a superuser: the bootstrap superuser is admin",
                "Pass --username admin",
            ],
            &new,
        );
    }
    fx.pgleap(fx.args("check", 17, &["--username", "admin"]))
        .success();
}

/// Runs pgleap with `PGPASSFILE` set (and `PGPASSWORD` unset).
fn pgleap_with_passfile(args: &[String], passfile: &Path) -> Run {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgleap"))
        .args(args)
        .env_remove("PGLEAP_OLD_DATADIR")
        .env_remove("PGLEAP_NEW_DATADIR")
        .env_remove("PGPASSWORD")
        .env("PGPASSFILE", passfile)
        .output()
        .unwrap();
    Run::from(out)
}

// PGPASSFILE and ~/.pgpass were ignored by pgleap's own connections (only PGPASSWORD
// worked), and the refusal read "invalid configuration" without naming the method.
#[test]
fn password_file_is_honoured_with_libpq_rules() {
    use std::os::unix::fs::PermissionsExt as _;
    let fx = Fixture::new(16).running().build();
    fx.sql("postgres", "ALTER ROLE postgres PASSWORD 'sekrit'");
    write_owned(
        &fx.datadir.join("pg_hba.conf"),
        "local all all scram-sha-256\n",
    );
    fx.sql("postgres", "SELECT pg_reload_conf()");
    let passfile = fx.root.path().join("pgpass");
    // Comments and escapes as libpq reads them; the first matching line wins.
    write_owned(
        &passfile,
        &format!(
            "# pgleap test\nelsewhere:*:*:postgres:wrong\n*:{}:*:postgres:sekrit\n*:*:*:*:wrong\n",
            fx.port
        ),
    );
    let new = fx.new_datadir(17);
    let args = fx.args("check", 17, &[]);

    // A password file others may read is ignored, as libpq does, and the refusal says so.
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = common::snapshot(fx.root.path());
    let run = pgleap_with_passfile(&args, &passfile);
    run.refused("the server asks postgres for a password (scram-sha-256 authentication)");
    assert!(
        run.stderr.contains(&format!(
            "{} was ignored: it has group or world access (chmod 0600 it)",
            passfile.display()
        )),
        "{}",
        run.stderr
    );
    assert_eq!(before, common::snapshot(fx.root.path()));
    assert!(!new.exists());

    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    pgleap_with_passfile(&args, &passfile).success();

    // A wrong password: the server's own words, with the method.
    write_owned(&passfile, "*:*:*:postgres:wrong\n");
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    pgleap_with_passfile(&args, &passfile)
        .refused("password authentication failed for user \"postgres\"");
}

// Prepared transactions: pg_upgrade --check refused without naming them or the way out.
#[test]
fn prepared_transactions_are_listed_with_the_fix() {
    let fx = Fixture::new(16).build();
    append_conf(&fx, "max_prepared_transactions = 5\n");
    fx.start();
    fx.sql("postgres", "CREATE DATABASE app");
    fx.sql(
        "postgres",
        "BEGIN; CREATE TABLE a (); PREPARE TRANSACTION 'pay-1'",
    );
    fx.sql(
        "app",
        "BEGIN; CREATE TABLE b (); PREPARE TRANSACTION 'pay-2'",
    );
    let new = fx.new_datadir(17);
    for cmd in ["check", "upgrade"] {
        let run = fx.pgleap(fx.args(cmd, 17, &[]));
        run.refused(
            "the old cluster has 2 prepared transactions, which pg_upgrade cannot carry: 'pay-1' (database postgres, owner postgres), 'pay-2' (database app, owner postgres)",
        );
        run.refused(
            "Finish each in its database with COMMIT PREPARED 'gid' or ROLLBACK PREPARED 'gid'",
        );
        assert!(
            run.stderr.contains("Nothing was changed."),
            "{}",
            run.stderr
        );
        // Refused by the preflight: no new directory, no work directory.
        assert!(!new.exists(), "{cmd} created {}", new.display());
        let work = fx.root.path().join("data/.pgleap-17-16-to-17");
        assert!(!work.exists(), "{cmd} created {}", work.display());
    }
    assert_eq!(
        fx.sql(
            "postgres",
            "SELECT string_agg(gid, ',' ORDER BY gid) FROM pg_prepared_xacts"
        )
        .trim(),
        "pay-1,pay-2"
    );
}

/// The report file a refusal quotes (a path ending in `name`).
fn quoted_file(stderr: &str, name: &str) -> std::path::PathBuf {
    let word = stderr
        .split_whitespace()
        .find(|w| w.trim_end_matches([':', '.']).ends_with(name))
        .unwrap_or_else(|| panic!("no {name} quoted:\n{stderr}"));
    std::path::PathBuf::from(word.trim_end_matches([':', '.']))
}

// pg_upgrade's report files were quoted at paths inside directories already removed, and
// the offending objects were only in those files.
#[test]
fn pg_upgrade_report_files_are_quoted_from_the_kept_copy() {
    let fx = Fixture::new(16).running().build();
    fx.sql("postgres", "CREATE DATABASE closed");
    fx.sql("postgres", "ALTER DATABASE closed ALLOW_CONNECTIONS false");
    for cmd in ["check", "upgrade"] {
        let run = fx.pgleap(fx.args(cmd, 17, &[]));
        run.refused("pg_upgrade --check failed");
        let file = quoted_file(&run.stderr, "databases_with_datallowconn_false.txt");
        assert!(
            file.is_file(),
            "{cmd} quotes {} which is gone:\n{}",
            file.display(),
            run.stderr
        );
        assert!(std::fs::read_to_string(&file).unwrap().contains("closed"));
        // The list itself, in the message.
        assert!(
            run.stderr
                .contains(&format!("{}:\n      closed", file.display())),
            "{}",
            run.stderr
        );
        if cmd == "check" {
            // check keeps its logs outside the fixture: clean up.
            let logs = file.ancestors().find(|a| {
                a.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("pgleap-check-"))
            });
            std::fs::remove_dir_all(logs.unwrap()).unwrap();
        }
    }
}

// A missing extension's package hint named a package that does not exist: adminpack left
// PostgreSQL's contrib in 17, and no postgresql-17-adminpack was ever built.
#[test]
fn removed_contrib_extension_names_no_package() {
    let fx = Fixture::new(16).running().build();
    fx.sql("postgres", "CREATE EXTENSION adminpack");
    let run = fx.pgleap(fx.args("check", 17, &[]));
    run.refused("extension adminpack 2.1 (database postgres) is not installed for PostgreSQL 17");
    run.refused("adminpack was removed from PostgreSQL in 17, so no package provides it: DROP EXTENSION adminpack in database postgres");
    assert!(
        !run.stderr.contains("postgresql-17-adminpack"),
        "{}",
        run.stderr
    );
}

// server.key as a symbolic link to a key that root owns and the group ssl-cert may read
// (Debian's snakeoil arrangement): it was carried as a postgres-owned 0640 copy, which
// PostgreSQL rejects, and check and upgrade refused with "could not connect".
#[test]
fn server_key_symlink_to_a_group_readable_key_is_kept() {
    if !common::is_root() {
        eprintln!("skipped: needs root (a root-owned key)");
        return;
    }
    let fx = Fixture::new(16).running().build();
    let (key, crt) = serve_ssl_with_a_root_owned_key(&fx, "snakeoil.key", "snakeoil.pem");
    assert_eq!(fx.sql("postgres", "SHOW ssl").trim(), "on");

    fx.pgleap(fx.args("check", 17, &[])).success();
    fx.pgleap(fx.args("upgrade", 17, &[])).success();
    let new = fx.new_datadir(17);
    for (name, to) in [("server.key", &key), ("server.crt", &crt)] {
        let link = new.join(name);
        assert!(
            link.symlink_metadata().unwrap().file_type().is_symlink(),
            "{name} is no longer a symbolic link"
        );
        assert_eq!(&std::fs::read_link(&link).unwrap(), to);
    }
    assert!(
        fx.sql("postgres", "SHOW server_version_num")
            .starts_with("17")
    );
    assert_eq!(fx.sql("postgres", "SHOW ssl").trim(), "on");
}

// A copied key keeps PostgreSQL's rules: root may own a 0640 key, the owner only a 0600 one.
#[test]
fn copied_server_key_keeps_postgres_key_rules() {
    use std::os::unix::fs::PermissionsExt as _;
    if !common::is_root() {
        eprintln!("skipped: needs root (a root-owned key)");
        return;
    }
    let fx = Fixture::new(16).running().build();
    let (key, crt) = (fx.datadir.join("server.key"), fx.datadir.join("server.crt"));
    self_signed(&key, &crt);
    // Root's own key, readable by the owner's group: PostgreSQL accepts 0640 from root only.
    nix::unistd::chown(&key, Some(0.into()), Some(common::owner().gid.into())).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    chown(&crt);
    append_conf(&fx, "ssl = on\n");
    fx.stop();
    fx.start();
    assert_eq!(fx.sql("postgres", "SHOW ssl").trim(), "on");
    fx.pgleap(fx.args("upgrade", 17, &[])).success();
    let copied = fx.new_datadir(17).join("server.key");
    let meta = std::fs::metadata(&copied).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), common::owner().uid);
    assert_eq!(fx.sql("postgres", "SHOW ssl").trim(), "on");
}

// When the new server does not start, the refusal quotes its FATAL line instead of only
// pg_upgrade's "could not connect".
#[test]
fn new_server_fatal_is_quoted_in_the_refusal() {
    use std::os::unix::fs::PermissionsExt as _;
    if !common::is_root() {
        eprintln!("skipped: needs root (a root-owned key)");
        return;
    }
    let fx = Fixture::new(16).running().build();
    let (key, _crt) = serve_ssl_with_a_root_owned_key(&fx, "server.key", "server.pem");
    // The running server has loaded its key; a server starting now cannot read it.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = fx.pgleap(fx.args("check", 17, &[]));
    run.refused("pg_upgrade --check failed");
    run.refused(
        "a server pg_upgrade started said: FATAL:  could not load private key file \"server.key\": Permission denied",
    );
    assert!(
        !run.stderr.contains("postmaster.pid\" already exists"),
        "{}",
        run.stderr
    );
    if let Some(logs) = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("pg_upgrade --check logs kept in "))
    {
        let _ = std::fs::remove_dir_all(logs.trim());
    }
}

// The downtime estimate was 8-9× too high for many objects (30 databases and 3,000 tables:
// 118 s estimated, 13-14 s measured) and did not say what it rested on.
#[test]
fn downtime_estimate_shows_its_basis_and_is_near_the_measured_downtime() {
    /// The factor the estimate promises, either way, once scaled to the machine.
    const FACTOR: f64 = 3.0;
    let fx = Fixture::new(16).running().build();
    for i in 1..=8 {
        fx.sql("postgres", &format!("CREATE DATABASE db{i}"));
    }
    fx.sql(
        "db1",
        "DO $$ BEGIN FOR i IN 1..50 LOOP \
         EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, v text)', i); END LOOP; END $$",
    );
    let run = fx.pgleap(fx.args("upgrade", 17, &["--json", "--mode", "link", "--no-analyze"]));
    run.success();
    let doc = one_document(&run);
    // The inputs: every database pg_upgrade dumps (template1, postgres, db1-db8) with its
    // user relations; db1's 50 tables each have a primary key and a TOAST table and index,
    // the fixture's table in postgres a TOAST table and index.
    let mut per_db: Vec<u64> = doc["plan"]["downtime_inputs"]["relations_per_database"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    per_db.sort_unstable();
    assert_eq!(per_db.len(), 10, "{per_db:?}");
    assert_eq!(per_db[per_db.len() - 2..], [3, 200], "{per_db:?}");
    let basis = doc["plan"]["downtime_basis"].as_str().unwrap();
    assert!(
        basis.starts_with("10 databases and 203 user relations, 2 at a time")
            || basis.starts_with("10 databases and 203 user relations, 1 at a time"),
        "{basis}"
    );
    assert!(basis.ends_with("(reference machine)"), "{basis}");
    assert!(
        run.stderr.contains("downtime      about "),
        "{}",
        run.stderr
    );

    let scaled = &doc["downtime_estimate"];
    assert!(
        scaled["basis"]
            .as_str()
            .unwrap()
            .contains("for this machine (initdb took"),
        "{scaled}"
    );
    let estimate = scaled["seconds"].as_f64().unwrap();
    let measured = doc["downtime_seconds"].as_f64().unwrap();
    assert!(
        estimate / measured <= FACTOR && measured / estimate <= FACTOR,
        "estimate {estimate:.1}s against {measured:.1}s measured ({})",
        scaled["basis"]
    );
}

/// Makes a self-signed key pair in `<root>/ssl` whose key root owns and the owner's group
/// reads (0640, as Debian's snakeoil key for the group ssl-cert), links it as the data
/// directory's `server.key`/`server.crt`, and restarts the fixture with `ssl = on`.
fn serve_ssl_with_a_root_owned_key(fx: &Fixture, key: &str, crt: &str) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    let ssl = fx.root.path().join("ssl");
    std::fs::create_dir(&ssl).unwrap();
    let (key, crt) = (ssl.join(key), ssl.join(crt));
    self_signed(&key, &crt);
    // Debian's group is ssl-cert; the fixture starts servers with the owner's primary group
    // only, so that group stands in for it: root owns the key, the owner's group reads it.
    nix::unistd::chown(&key, Some(0.into()), Some(common::owner().gid.into())).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::set_permissions(&crt, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(&key, fx.datadir.join("server.key")).unwrap();
    std::os::unix::fs::symlink(&crt, fx.datadir.join("server.crt")).unwrap();
    append_conf(fx, "ssl = on\n");
    fx.stop();
    fx.start();
    (key, crt)
}

/// A self-signed certificate `crt` and its unencrypted key `key`, made by openssl.
fn self_signed(key: &Path, crt: &Path) {
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(key)
        .arg("-out")
        .arg(crt)
        .output()
        .unwrap();
    common::ok(&out, "openssl req");
}
