//! One test per way major upgrades fail in the field (the field-failure list of the design
//! notes, FIELD-FAILURES.md), each named by the comment above it. Small fixtures; real
//! clusters, binaries and pg_upgrade.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Fixture, Run, bindir, chown, is_root, ok, owner, start_server};

/// Runs `upgrade ... --json` and returns the run (asserted successful) and its document.
fn upgrade(fx: &Fixture, new: u32, extra: &[&str]) -> (Run, serde_json::Value) {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let run = fx.pgleap(fx.args("upgrade", new, &args));
    run.success();
    let doc = run.json();
    assert_eq!(doc["ok"], true, "{}", run.stdout);
    (run, doc)
}

/// True when running as root; otherwise says the test is skipped.
fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    eprintln!("{test}: skipped, needs root");
    false
}

/// Runs a program as root (the tests that call this are root-only), asserting success.
fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    ok(&out, &format!("{program} {}", args.join(" ")))
}

/// A tmpfs mounted on a fresh directory, owned by the cluster owner: unmounted before the
/// directory is removed (fields drop in declaration order).
struct Tmpfs {
    mount: common::Tmpfs,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount() -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("pgleap-tmpfs-")
            .tempdir_in("/tmp")
            .unwrap();
        let mount = common::Tmpfs::mount(dir.path(), "1g", "0755");
        Tmpfs { mount, _dir: dir }
    }

    fn path(&self) -> &Path {
        &self.mount.path
    }
}

/// A copy of the `major` installation at `to` (installations are relocatable); returns its
/// bindir.
fn copy_install(major: u32, to: &Path) -> PathBuf {
    let prefix = bindir(major).parent().unwrap().to_path_buf();
    ok(
        &Command::new("cp")
            .arg("-a")
            .arg(&prefix)
            .arg(to)
            .output()
            .unwrap(),
        "cp -a",
    );
    to.join("bin")
}

/// pgleap args for `command` with an explicit new bindir.
fn args_with_bindir(fx: &Fixture, command: &str, new_bindir: &Path) -> Vec<String> {
    vec![
        command.to_string(),
        "--old-datadir".into(),
        fx.datadir.display().to_string(),
        "--old-bindir".into(),
        fx.bindir().display().to_string(),
        "--new-bindir".into(),
        new_bindir.display().to_string(),
    ]
}

fn postmaster_pid(datadir: &Path) -> i32 {
    std::fs::read_to_string(datadir.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Appends lines to the old cluster's postgresql.conf.
fn append_conf(fx: &Fixture, text: &str) {
    let path = fx.datadir.join("postgresql.conf");
    let mut conf = std::fs::read_to_string(&path).unwrap();
    conf.push_str(text);
    std::fs::write(&path, conf).unwrap();
}

// FIELD-FAILURES #2: `--link` across filesystems, "Invalid cross-device link" mid-downtime.
#[test]
fn link_across_filesystems_is_refused_before_the_old_server_stops() {
    if !root_or_skip("link_across_filesystems") {
        return;
    }
    let fx = Fixture::new(16).running().build();
    let pid = postmaster_pid(&fx.datadir);
    let tmpfs = Tmpfs::mount();
    let new = tmpfs.path().join("17");
    let new_s = new.display().to_string();

    let run = fx.pgleap(fx.args("upgrade", 17, &["--mode", "link", "--new-datadir", &new_s]));
    run.refused("different filesystems");
    // Both filesystems, by mount point.
    let old_mount = sh("stat", &["-c", "%m", &fx.datadir.display().to_string()]);
    for want in [
        fx.datadir.display().to_string(),
        new_s.clone(),
        format!("mounted at {},", old_mount.trim()),
        format!("mounted at {})", tmpfs.path().display()),
        "--mode copy".into(),
    ] {
        assert!(
            run.stderr.contains(&want),
            "stderr lacks {want:?}:\n{}",
            run.stderr
        );
    }
    // Nothing stopped, nothing written.
    assert_eq!(fx.sql("postgres", "SELECT count(*) FROM t").trim(), "1000");
    assert_eq!(postmaster_pid(&fx.datadir), pid, "the old server restarted");
    let entries: Vec<_> = std::fs::read_dir(tmpfs.path()).unwrap().collect();
    assert!(entries.is_empty(), "the tmpfs was written: {entries:?}");
}

// FIELD-FAILURES #4: locale/encoding mismatch (`lc_collate values … do not match`).
#[test]
fn locale_and_encoding_of_every_database_are_kept() {
    // 15 → 17: pg_upgrade 16+ copies locales itself. 14 → 15: pg_upgrade refuses unless
    // pgleap's initdb matches them. 17 → 18: the builtin provider (17+) and its locale.
    let sql_ascii: &[&str] = &["-E", "SQL_ASCII", "--locale=C"];
    let builtin: &[&str] = &["--locale-provider=builtin", "--builtin-locale=C.UTF-8"];
    for (old, new, initdb, rich, template0) in [
        (15, 17, sql_ascii, true, "template0 SQL_ASCII C C"),
        (14, 15, sql_ascii, false, "template0 SQL_ASCII C C"),
        (
            17,
            18,
            builtin,
            false,
            "template0 UTF8 C.UTF-8 C.UTF-8 b C.UTF-8",
        ),
    ] {
        let mut builder = Fixture::new(old).initdb_args(initdb).running();
        if rich {
            builder = builder.rich();
        }
        let fx = builder.build();
        // 17: datlocale (the provider's locale) next to datcollate and datctype.
        let provider = if old >= 17 {
            " || ' ' || datlocprovider::text || ' ' || coalesce(datlocale, '-')"
        } else {
            ""
        };
        let databases = format!(
            "SELECT datname || ' ' || pg_encoding_to_char(encoding) || ' ' || datcollate || ' ' || datctype{provider} FROM pg_database ORDER BY datname"
        );
        let before = fx.sql("postgres", &databases);
        assert!(before.contains(template0), "fixture databases: {before}");
        let rows = fx.checksums(old, fx.port);

        upgrade(&fx, new, &[]);
        let version = fx.sql("postgres", "SHOW server_version_num");
        assert!(version.starts_with(&new.to_string()), "{version}");
        assert_eq!(fx.sql("postgres", &databases), before, "{old} → {new}");
        assert_eq!(fx.checksums(new, fx.port), rows, "{old} → {new}");
        if rich {
            let names = "SELECT pg_encoding_to_char(encoding) || ' ' || (SELECT string_agg(name, ',' ORDER BY id) FROM names) FROM pg_database WHERE datname = current_database()";
            assert_eq!(
                fx.sql("legacy", names).trim(),
                "LATIN1 Müller,José,Ærøskøbing"
            );
        }
    }
}

// FIELD-FAILURES #5: checksums mismatch, mostly because 18's initdb enables them by default.
#[test]
fn data_checksums_follow_the_old_cluster_into_18() {
    for (old, checksums) in [(17, false), (16, true)] {
        let fx = Fixture::new(old).checksums(checksums).running().build();
        let (_, doc) = upgrade(&fx, 18, &[]);
        assert_eq!(doc["plan"]["initdb"]["checksums"], checksums);
        let on = fx.sql("postgres", "SHOW data_checksums");
        assert_eq!(
            on.trim(),
            if checksums { "on" } else { "off" },
            "{old} → 18"
        );
        if !checksums {
            // 18's initdb would enable them unless told not to.
            let log_dir = Path::new(doc["log_dir"].as_str().unwrap());
            let initdb_log = std::fs::read_dir(log_dir)
                .unwrap()
                .filter_map(Result::ok)
                .find(|e| e.file_name().to_string_lossy().contains("initdb"))
                .unwrap_or_else(|| panic!("no initdb log in {}", log_dir.display()));
            let initdb_log = std::fs::read_to_string(initdb_log.path()).unwrap();
            assert!(
                initdb_log
                    .lines()
                    .next()
                    .unwrap()
                    .contains("--no-data-checksums"),
                "{initdb_log}"
            );
        }
    }
}

// FIELD-FAILURES #6: extension library missing in the new binaries, found after the stop.
#[test]
fn missing_extension_libraries_are_found_while_the_old_server_runs() {
    let fx = Fixture::new(16).rich().running().build();
    let pid = postmaster_pid(&fx.datadir);

    // Installations live where only root can write (pgleap refuses others as root).
    let installs = tempfile::Builder::new()
        .prefix("pgleap-installs-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(
        installs.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let no_hstore = copy_install(17, &installs.path().join("pg17-no-hstore"));
    let prefix = no_hstore.parent().unwrap();
    std::fs::remove_file(prefix.join("lib/hstore.so")).unwrap();
    for e in std::fs::read_dir(prefix.join("share/extension")).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().starts_with("hstore") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    let run = fx.pgleap(args_with_bindir(&fx, "check", &no_hstore));
    run.refused("extension hstore");
    assert!(run.stderr.contains("(database app)"), "{}", run.stderr);
    assert!(run.stderr.contains("$libdir/hstore"), "{}", run.stderr);
    assert_eq!(postmaster_pid(&fx.datadir), pid, "the old server restarted");
    assert_eq!(fx.sql("app", "SELECT count(*) FROM items").trim(), "2000");

    // shared_preload_libraries naming a library the new installation lacks.
    append_conf(&fx, "shared_preload_libraries = 'pg_stat_statements'\n");
    fx.stop();
    fx.start();
    let pid = postmaster_pid(&fx.datadir);
    let no_pgss = copy_install(17, &installs.path().join("pg17-no-pgss"));
    std::fs::remove_file(no_pgss.parent().unwrap().join("lib/pg_stat_statements.so")).unwrap();
    let run = fx.pgleap(args_with_bindir(&fx, "check", &no_pgss));
    run.refused("shared_preload_libraries names pg_stat_statements");
    assert!(!run.stderr.contains("hstore"), "{}", run.stderr);
    assert_eq!(postmaster_pid(&fx.datadir), pid, "the old server restarted");
    assert_eq!(fx.sql("app", "SELECT count(*) FROM items").trim(), "2000");
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

// FIELD-FAILURES #7: old cluster not shut down cleanly; stale postmaster.pid.
#[test]
fn unclean_shutdown_is_recovered_before_upgrading() {
    let fx = Fixture::new(16).running().build();
    // Written after the fixture's last checkpoint: only WAL replay brings these back.
    fx.sql(
        "postgres",
        "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1001, 1500) g",
    );
    let rows = fx.checksums(16, fx.port);
    let pid = postmaster_pid(&fx.datadir);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let started = Instant::now();
    while alive(pid) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "postmaster {pid} survived SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(fx.datadir.join("postmaster.pid").exists());

    let (run, doc) = upgrade(&fx, 17, &[]);
    assert!(
        run.stderr.contains("warning:") && run.stderr.contains("crash recovery"),
        "{}",
        run.stderr
    );
    assert!(
        doc["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["code"] == "crash-recovered"),
        "{}",
        doc["warnings"]
    );
    let new = fx.new_datadir(17);
    start_server(17, &new, &fx.root.path().join("server-17.log"));
    assert_eq!(fx.checksums(17, fx.port), rows);
}

// FIELD-FAILURES #8: superuser name mismatch ("postgres" is not the install user).
#[test]
fn bootstrap_superuser_other_than_postgres_is_kept() {
    // Stopped, as in an upgrade container: no role "postgres" to connect as, and pgleap is
    // not told the superuser's name.
    let fx = Fixture::new(16).superuser("admin").build();
    let (_, doc) = upgrade(&fx, 17, &[]);
    assert_eq!(doc["plan"]["initdb"]["superuser"], "admin");
    start_server(
        17,
        &fx.new_datadir(17),
        &fx.root.path().join("server-17.log"),
    );
    assert!(
        fx.sql("postgres", "SHOW server_version_num")
            .starts_with("17")
    );
    assert_eq!(
        fx.sql("postgres", "SELECT rolname FROM pg_authid WHERE oid = 10")
            .trim(),
        "admin"
    );
    assert_eq!(
        fx.sql(
            "postgres",
            "SELECT count(*) FROM pg_authid WHERE rolname = 'postgres'"
        )
        .trim(),
        "0"
    );
}

// FIELD-FAILURES #9: permissions, UID mismatch between images, arbitrary UIDs.
#[test]
fn running_as_another_user_is_refused_naming_both_uids() {
    if !root_or_skip("running_as_another_user") {
        return;
    }
    let fx = Fixture::new(16).build();
    // The usual layout: parents anyone may traverse, the data directory itself 0700.
    for dir in [fx.root.path(), fx.datadir.parent().unwrap()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let (uid, gid) = (nobody.uid.as_raw(), nobody.gid.as_raw());
    let owner_uid = owner().uid;
    assert_ne!(uid, owner_uid);
    let out = Command::new(env!("CARGO_BIN_EXE_pgleap"))
        .args(fx.args("check", 17, &[]))
        .env_remove("PGLEAP_OLD_DATADIR")
        .env_remove("PGLEAP_NEW_DATADIR")
        .current_dir("/")
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap();
    let run = Run::from(out);
    run.refused(&format!("uid {owner_uid}"));
    for want in [format!("uid {uid}"), "Run pgleap as root".into()] {
        assert!(
            run.stderr.contains(&want),
            "stderr lacks {want:?}:\n{}",
            run.stderr
        );
    }
}

// FIELD-FAILURES #11: queries 10× slower after upgrade because statistics are missing.
#[test]
fn statistics_exist_after_upgrade() {
    // 17: pg_upgrade carries no statistics; pgleap analyzes everything, in stages.
    let fx = Fixture::new(16).running().build();
    let (_, doc) = upgrade(&fx, 17, &[]);
    let analyze = &doc["analyze"];
    assert_eq!(analyze["stages"], 3, "{analyze}");
    assert!(analyze["databases"].as_u64().unwrap() >= 2, "{analyze}");
    assert!(analyze["relations"].as_u64().unwrap() > 1, "{analyze}");
    let stats = "SELECT count(*) FROM pg_stats WHERE schemaname = 'public' AND tablename = 't'";
    assert_eq!(fx.sql("postgres", stats).trim(), "2");
    drop(fx);

    // 18: pg_upgrade carries optimizer statistics; pgleap analyzes what lacks them first.
    let fx = Fixture::new(17).running().build();
    fx.sql(
        "postgres",
        "ANALYZE t; CREATE TABLE fresh AS SELECT g AS id FROM generate_series(1, 500) g",
    );
    let (_, doc) = upgrade(&fx, 18, &[]);
    let analyze = &doc["analyze"];
    assert_eq!(analyze["stages"], 3, "{analyze}");
    assert!(analyze["relations"].as_u64().unwrap() >= 1, "{analyze}");
    assert!(
        fx.sql("postgres", "SHOW server_version_num")
            .starts_with("18")
    );
    let stats = "SELECT tablename || ' ' || count(*) FROM pg_stats WHERE schemaname = 'public' GROUP BY tablename ORDER BY tablename";
    assert_eq!(fx.sql("postgres", stats).trim(), "fresh 1\nt 2");
    // Stages 1 and 2 take only what lacks statistics (fresh); stage 3 then analyzes every
    // relation, as pg_upgrade 18 advises (tests/perf.rs checks the order of the stages).
    let analyzed =
        "SELECT relname || ' ' || (last_analyze IS NOT NULL) FROM pg_stat_user_tables ORDER BY 1";
    assert_eq!(fx.sql("postgres", analyzed).trim(), "fresh true\nt true");
}

// FIELD-FAILURES #13: carried-over config that the new major rejects, or `include_dir` lost.
#[test]
fn carried_config_drops_removed_settings_and_keeps_include_dir() {
    let fx = Fixture::new(16).running().build();
    // old_snapshot_threshold: removed in 17 (postgres --describe-config of 16 lists it, 17's
    // does not).
    append_conf(&fx, "old_snapshot_threshold = -1\ninclude_dir 'conf.d'\n");
    let conf_d = fx.datadir.join("conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    std::fs::write(conf_d.join("extra.conf"), "work_mem = '8MB'\n").unwrap();
    chown(&conf_d);
    chown(&conf_d.join("extra.conf"));
    fx.stop();
    fx.start();
    assert_eq!(fx.sql("postgres", "SHOW work_mem").trim(), "8MB");

    let (_, doc) = upgrade(&fx, 17, &[]);
    let commented = doc["config"]["commented"].to_string();
    assert!(commented.contains("old_snapshot_threshold"), "{commented}");
    let new = fx.new_datadir(17);
    let conf = std::fs::read_to_string(new.join("postgresql.conf")).unwrap();
    assert!(
        conf.lines()
            .any(|l| l.starts_with("#old_snapshot_threshold = -1") && l.contains("# pgleap:")),
        "{conf}"
    );
    assert!(
        !conf
            .lines()
            .any(|l| l.trim_start().starts_with("old_snapshot_threshold")),
        "{conf}"
    );
    assert_eq!(
        std::fs::read_to_string(new.join("conf.d/extra.conf")).unwrap(),
        "work_mem = '8MB'\n"
    );
    assert!(
        fx.sql("postgres", "SHOW server_version_num")
            .starts_with("17")
    );
    assert_eq!(fx.sql("postgres", "SHOW work_mem").trim(), "8MB");
}

// FIELD-FAILURES #14: wrong paths ("could not open version file … PG_VERSION").
#[test]
fn parent_of_the_data_directory_is_refused_with_the_fix() {
    let fx = Fixture::new(16).build();
    let parent = fx.datadir.parent().unwrap();
    let run = fx.pgleap([
        "upgrade",
        "--old-datadir",
        &parent.display().to_string(),
        "--old-bindir",
        &fx.bindir().display().to_string(),
        "--new-bindir",
        &bindir(17).display().to_string(),
    ]);
    run.refused(&format!(
        "{} is not a PostgreSQL data directory (no PG_VERSION)",
        parent.display()
    ));
    // The fix names the data directory found below it.
    assert!(
        run.stderr
            .contains(&format!("--old-datadir {}", fx.datadir.display())),
        "{}",
        run.stderr
    );
    assert!(!fx.new_datadir(17).exists());
}

/// A `pg_hba.conf` edited with an error and not reloaded: the old server still runs with the
/// rules it loaded, but no server can start with the file. `check` and `upgrade` refuse it
/// before the old server stops, naming the old file and line, and nothing changes; once it
/// is corrected the upgrade runs.
#[test]
fn a_pg_hba_conf_no_server_can_load_is_refused_before_the_stop() {
    let fx = Fixture::new(16).running().build();
    let hba = fx.datadir.join("pg_hba.conf");
    let good = std::fs::read_to_string(&hba).unwrap();
    let line = good.lines().count() + 1;
    std::fs::write(&hba, format!("{good}host all all 1.2.3.4/40 trust\n")).unwrap();
    let new = fx.new_datadir(17);
    let pid = postmaster_pid(&fx.datadir);
    let expected = format!(
        "refused: PostgreSQL 17 does not start with the configuration carried from the old cluster (invalid CIDR mask in address \"1.2.3.4/40\"; line {line} of configuration file \"{}\"",
        hba.display()
    );
    for cmd in ["check", "upgrade"] {
        let run = fx.pgleap(fx.args(cmd, 17, &["--mode", "link"]));
        run.refused(&expected);
        assert!(
            run.stderr.contains("Correct the file in the old cluster"),
            "{}",
            run.stderr
        );
        assert!(!new.exists(), "{cmd} left {}", new.display());
        assert_eq!(fx.sql("postgres", "SELECT count(*) FROM t").trim(), "1000");
    }
    assert_eq!(postmaster_pid(&fx.datadir), pid, "the old server restarted");
    assert_eq!(
        std::fs::read_to_string(&hba).unwrap(),
        format!("{good}host all all 1.2.3.4/40 trust\n")
    );
    std::fs::write(&hba, good).unwrap();
    upgrade(&fx, 17, &["--mode", "link"]).0.success();
}

/// An old data directory its group may read (`initdb -g`, mode 0750, for a backup agent or a
/// monitoring user in the owner's group): the new one is made the same, not 0700.
#[test]
fn group_access_to_the_data_directory_is_kept() {
    use std::os::unix::fs::MetadataExt as _;
    let fx = Fixture::new(16).initdb_args(&["-g"]).running().build();
    assert_eq!(
        std::fs::metadata(&fx.datadir).unwrap().mode() & 0o777,
        0o750
    );
    let (_, doc) = upgrade(&fx, 18, &["--mode", "copy"]);
    assert_eq!(doc["plan"]["initdb"]["group_access"], true, "{doc}");
    let new = fx.new_datadir(18);
    assert_eq!(std::fs::metadata(&new).unwrap().mode() & 0o777, 0o750);
    let mode = common::psql(
        18,
        &fx.socket,
        fx.port,
        &fx.superuser,
        "postgres",
        "SHOW data_directory_mode",
    );
    assert_eq!(mode.trim(), "0750");
}
