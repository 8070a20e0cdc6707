//! Field hardening (issue 11, data loss and outages): one test per defect a DBA hit on real
//! clusters, each named by the comment above it. Real clusters, binaries and pg_upgrade.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{Fixture, Run, bindir, chown};

use common::assert_unchanged;

/// Runs pgleap, asserts a refusal quoting `message` and that nothing below the fixture root
/// changed.
#[track_caller]
fn assert_refused(fx: &Fixture, args: &[String], message: &str) -> Run {
    let before = common::snapshot(fx.root.path());
    let run = fx.pgleap(args);
    run.refused(message);
    assert_unchanged(&before, &common::snapshot(fx.root.path()), &args[0]);
    run
}

/// Runs `upgrade ... --json` and returns its document, asserting success.
fn upgrade(fx: &Fixture, new: u32, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let run = fx.pgleap(fx.args("upgrade", new, &args));
    run.success();
    run.json()
}

/// `pgleap <command> --old-datadir OLD [extra]` for the commands that read the journal.
fn after(fx: &Fixture, command: &str, extra: &[&str]) -> Run {
    let mut a = vec![
        command.to_string(),
        "--old-datadir".into(),
        fx.datadir.display().to_string(),
    ];
    a.extend(extra.iter().map(ToString::to_string));
    fx.pgleap(a)
}

/// A directory below the fixture root owned by the cluster owner.
fn owned_dir(path: &Path) -> PathBuf {
    std::fs::create_dir_all(path).unwrap();
    chown(path);
    path.to_path_buf()
}

/// SQL against a server of the fixture's socket directory on `port`.
fn sql_on(fx: &Fixture, major: u32, port: u16, sql: &str) -> String {
    common::psql(major, &fx.socket, port, &fx.superuser, "postgres", sql)
}

// Issue 11 #2: --new-datadir reached through a symlink into the old data directory passed the
// lexical overlap check, and finalize then destroyed the new cluster.
#[test]
fn new_datadir_through_a_symlink_into_the_old_one_is_refused() {
    let fx = Fixture::new(16).build();
    let link = fx.root.path().join("link");
    std::os::unix::fs::symlink(&fx.datadir, &link).unwrap();
    let new = link.join("17");
    for cmd in ["check", "upgrade"] {
        let args = fx.args(cmd, 17, &["--new-datadir", &new.display().to_string()]);
        assert_refused(
            &fx,
            &args,
            &format!(
                "the new data directory {} (resolved: {}) overlaps the old one {}",
                new.display(),
                fx.datadir.join("17").display(),
                fx.datadir.display()
            ),
        );
        assert!(!fx.datadir.join("17").exists());
    }
}

// Issue 11 #2: `-D OLD/../17` names the sibling /…/17 and was wrongly refused as overlapping.
#[test]
fn sibling_spelled_through_the_old_datadir_is_accepted() {
    let fx = Fixture::new(16).build();
    let dotted = fx.datadir.join("../17");
    let run = fx.pgleap(fx.args(
        "check",
        17,
        &["--json", "--new-datadir", &dotted.display().to_string()],
    ));
    run.success();
    let doc = run.json();
    assert_eq!(
        doc["plan"]["new"]["datadir"],
        fx.root.path().join("data/17").display().to_string(),
        "{}",
        run.stdout
    );
}

/// Files below `dir` with one link (what removing it frees), in bytes.
fn unshared_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file() && m.nlink() == 1)
        .map(|m| m.len())
        .sum()
}

/// Restarts the new server so that what it reads next comes from disk.
fn restart(major: u32, datadir: &Path, log: &Path) {
    common::stop_server(major, datadir);
    common::start_server(major, datadir, log);
}

// Issue 11 #1: a tablespace inside the old data directory: finalize removed the old directory
// with the new cluster's PG_17_* subdirectory in it, and the new server's tables were gone.
#[test]
fn tablespace_inside_the_old_datadir_survives_finalize() {
    let fx = Fixture::new(16).running().build();
    let inner = owned_dir(&fx.datadir.join("inner_ts"));
    sql_on(
        &fx,
        16,
        fx.port,
        &format!("CREATE TABLESPACE inner_ts LOCATION '{}'", inner.display()),
    );
    sql_on(
        &fx,
        16,
        fx.port,
        "CREATE TABLE kept (id int) TABLESPACE inner_ts; INSERT INTO kept SELECT generate_series(1, 300); CHECKPOINT",
    );
    let doc = upgrade(&fx, 17, &["--mode", "copy"]);
    let warned = doc["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["code"] == "tablespace-inside-datadir");
    assert!(warned, "no tablespace-inside-datadir warning: {doc}");
    let new = fx.new_datadir(17);
    let fin = after(&fx, "finalize", &["--yes", "--json"]);
    fin.success();
    let new_ts: Vec<PathBuf> = std::fs::read_dir(&inner)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(new_ts.len(), 1, "{new_ts:?}");
    assert!(
        new_ts[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("PG_17_"),
        "{new_ts:?}"
    );
    assert!(!fx.datadir.join("base").exists());
    assert!(!fx.datadir.join("PG_VERSION").exists());
    assert_eq!(
        fin.json()["kept"][0],
        new_ts[0].display().to_string(),
        "{}",
        fin.stdout
    );
    restart(17, &new, &fx.root.path().join("server-17.log"));
    assert_eq!(
        sql_on(&fx, 17, fx.port, "SELECT count(*) FROM kept").trim(),
        "300"
    );
}

// Issue 11 #6: an initdb --waldir cluster: the new cluster's WAL landed inside its data
// directory, and finalize left the old WAL directory behind, unnamed and uncounted.
#[test]
fn waldir_cluster_gets_its_wal_beside_the_old_one_and_finalize_removes_it() {
    let wal_root = tempfile::Builder::new()
        .prefix("pgleap-wal-")
        .tempdir_in("/tmp")
        .unwrap();
    owned_dir(wal_root.path());
    let old_wal = wal_root.path().join("16");
    let fx = Fixture::new(16)
        .running()
        .initdb_args(&[&format!("--waldir={}", old_wal.display())])
        .build();
    let new_wal = wal_root.path().join("17");
    let doc = upgrade(&fx, 17, &["--mode", "link"]);
    assert_eq!(doc["plan"]["new"]["waldir"], new_wal.display().to_string());
    let new = fx.new_datadir(17);
    assert_eq!(std::fs::read_link(new.join("pg_wal")).unwrap(), new_wal);
    sql_on(
        &fx,
        17,
        fx.port,
        "INSERT INTO t SELECT generate_series(1001, 1100)",
    );
    let old_wal_bytes = unshared_bytes(&old_wal);
    let old_bytes = unshared_bytes(&fx.datadir);
    assert!(old_wal_bytes > 0);
    let fin = after(&fx, "finalize", &["--yes", "--json"]);
    fin.success();
    let out = fin.json();
    assert!(!old_wal.exists(), "the old WAL directory is left behind");
    assert!(
        out["removed"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(old_wal.display().to_string())),
        "{out}"
    );
    assert_eq!(out["freed_bytes"], old_wal_bytes + old_bytes, "{out}");
    restart(17, &new, &fx.root.path().join("server-17.log"));
    assert_eq!(
        sql_on(&fx, 17, fx.port, "SELECT count(*) FROM t").trim(),
        "1100"
    );
}

// Issue 11 #6: a symlinked old data directory: finalize removed only the link and reported
// the space of what it pointed at as freed.
#[test]
fn symlinked_old_datadir_is_removed_where_it_points() {
    let fx = Fixture::new(16).build();
    let pg = owned_dir(&fx.root.path().join("pg"));
    let link = pg.join("16");
    std::os::unix::fs::symlink(&fx.datadir, &link).unwrap();
    let args = |cmd: &str, extra: &[&str]| {
        let mut a = vec![
            cmd.to_string(),
            "--old-datadir".into(),
            link.display().to_string(),
            "--old-bindir".into(),
            bindir(16).display().to_string(),
            "--new-bindir".into(),
            bindir(17).display().to_string(),
        ];
        a.extend(extra.iter().map(ToString::to_string));
        a
    };
    fx.pgleap(args("upgrade", &["--mode", "copy"])).success();
    assert!(pg.join("17/PG_VERSION").exists());
    let old_bytes = unshared_bytes(&fx.datadir);
    let fin = fx.pgleap(vec![
        "finalize".to_string(),
        "--old-datadir".into(),
        link.display().to_string(),
        "--yes".into(),
        "--json".into(),
    ]);
    fin.success();
    assert!(!fx.datadir.exists(), "what the link pointed at is left");
    assert!(
        std::fs::symlink_metadata(&link).is_err(),
        "the link is left"
    );
    assert_eq!(fin.json()["freed_bytes"], old_bytes, "{}", fin.stdout);
}

/// A live process to name in a socket lock file; killed on drop.
struct Holder(std::process::Child);

impl Holder {
    /// `sleep`, as the cluster owner: PostgreSQL ignores a lock naming another user's process.
    fn spawn() -> Holder {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("600");
        if common::is_root() {
            let o = common::owner();
            cmd.uid(o.uid).gid(o.gid);
        }
        Holder(cmd.spawn().unwrap())
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Writes the lock file PostgreSQL checks before creating `.s.PGSQL.<port>`, naming this
    /// process.
    fn lock(&self, socket_dir: &Path, port: u16) -> PathBuf {
        let lock = socket_dir.join(format!(".s.PGSQL.{port}.lock"));
        std::fs::write(&lock, format!("{}\n{}\n", self.pid(), socket_dir.display())).unwrap();
        chown(&lock);
        lock
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// Issue 11 #4: a port already in use was found only when the new server failed to start
// inside the downtime window (in link mode, with rollback then refused).
#[test]
fn port_in_use_is_refused_before_the_window() {
    let fx = Fixture::new(16).running().build();
    let port = common::port();
    let holder = Holder::spawn();
    let lock = holder.lock(&fx.socket, port);
    let args = fx.args(
        "upgrade",
        17,
        &["--mode", "link", "--port", &port.to_string()],
    );
    let run = assert_refused(
        &fx,
        &args,
        &format!(
            "port {port} is in use: {} names process {} (sleep), so the new server could not create its socket there",
            lock.display(),
            holder.pid()
        ),
    );
    assert!(
        run.stderr
            .contains("Stop the program that holds it, or pass --port with a free port"),
        "{}",
        run.stderr
    );
    assert!(!fx.new_datadir(17).exists());
    assert_eq!(
        sql_on(&fx, 16, fx.port, "SELECT count(*) FROM t").trim(),
        "1000"
    );
}

// Issue 11 #4: the point of no return was journaled before the new server's first start, so
// a start that failed (the port taken meanwhile) left rollback refusing with a false "the new
// cluster has started" in link mode.
#[test]
fn failed_first_start_in_link_mode_still_rolls_back() {
    let fx = Fixture::new(16).running().build();
    let pause = fx.root.path().join("go-on");
    let log = fx.root.path().join("pgleap.stderr");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pgleap"))
        .args(fx.args("upgrade", 17, &["--mode", "link"]))
        .env(
            "PGLEAP_FAULT",
            format!("before:start-new:pause={}", pause.display()),
        )
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("fault point before:start-new")
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "pgleap ended early:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        assert!(started.elapsed().as_secs() < 300, "pgleap never paused");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The old server is stopped now; another program takes its socket for the new server.
    let holder = Holder::spawn();
    let lock = holder.lock(&fx.socket, fx.port);
    std::fs::write(&pause, "").unwrap();
    let status = child.wait().unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no server ran on the new cluster, so the old cluster at"),
        "{stderr}"
    );
    // The cause fixed, rollback brings the old cluster back.
    drop(holder);
    std::fs::remove_file(&lock).unwrap();
    let rb = after(&fx, "rollback", &["--yes"]);
    rb.success();
    assert_eq!(
        sql_on(&fx, 16, fx.port, "SELECT count(*) FROM t").trim(),
        "1000"
    );
}

// Issue 11 #5: rollback silently discarded what clients had written to the new cluster
// (copy mode: rows written after the upgrade vanished, exit 0, no warning).
#[test]
fn rollback_refuses_to_discard_writes_to_the_new_cluster() {
    let fx = Fixture::new(16).running().build();
    upgrade(&fx, 17, &["--mode", "copy"]);
    for i in 0..3 {
        sql_on(
            &fx,
            17,
            fx.port,
            &format!("INSERT INTO t VALUES ({}, 'new')", 2000 + i),
        );
    }
    let before = common::snapshot(&fx.datadir);
    let run = after(&fx, "rollback", &["--yes"]);
    run.refused(&format!(
        "the new cluster at {} has run 3 writing transactions since the upgrade finished",
        fx.new_datadir(17).display()
    ));
    assert!(
        run.stderr
            .contains("pass --discard-new-writes to roll back anyway"),
        "{}",
        run.stderr
    );
    assert_unchanged(&before, &common::snapshot(&fx.datadir), "rollback");
    assert_eq!(
        sql_on(&fx, 17, fx.port, "SELECT count(*) FROM t").trim(),
        "1003"
    );
    after(&fx, "rollback", &["--yes", "--discard-new-writes"]).success();
    assert_eq!(
        sql_on(&fx, 16, fx.port, "SELECT count(*) FROM t").trim(),
        "1000"
    );
}

/// Starts the fixture's old server with `pg_ctl -o OPTIONS`, as a DBA might.
fn start_with_options(fx: &Fixture, options: &str) {
    let out = common::as_owner(
        &bindir(fx.major).join("pg_ctl"),
        &[
            "start",
            "-D",
            &fx.datadir.display().to_string(),
            "-w",
            "-l",
            &fx.root.path().join("server-opts.log").display().to_string(),
            "-o",
            options,
        ],
    );
    common::ok(&out, "pg_ctl start -o");
}

// Issue 11 #3: options given on the old server's command line (postmaster.opts) were dropped:
// the new server came back on the configuration file's socket directory and settings, and a
// rollback restarted the old server the same wrong way.
#[test]
fn command_line_options_are_carried_and_rollback_restarts_with_them() {
    let fx = Fixture::new(16).build();
    let sock = owned_dir(&fx.root.path().join("sock2"));
    let port = common::port();
    start_with_options(
        &fx,
        &format!("-p {port} -k {} -c max_connections=33", sock.display()),
    );
    let on = |major: u32, sql: &str| {
        common::psql(major, &sock, port, &fx.superuser, "postgres", sql)
            .trim()
            .to_string()
    };
    let doc = upgrade(&fx, 17, &["--mode", "copy"]);
    // Clients reach the new server where they reached the old one.
    assert!(on(17, "SHOW server_version_num").starts_with("17"));
    assert_eq!(on(17, "SHOW max_connections"), "33");
    assert_eq!(doc["plan"]["new"]["port"], port);
    assert_eq!(
        doc["config"]["command_line"],
        serde_json::json!([
            format!("unix_socket_directories = '{}'", sock.display()),
            "max_connections = '33'"
        ])
    );
    after(&fx, "rollback", &["--yes"]).success();
    assert!(on(16, "SHOW server_version_num").starts_with("16"));
    assert_eq!(on(16, "SHOW max_connections"), "33");
    assert_eq!(on(16, "SELECT count(*) FROM t"), "1000");
}

// Issue 11 #3: an option that sets nothing pgleap can write into a configuration file is
// refused before anything starts, by name.
#[test]
fn command_line_options_that_cannot_be_carried_are_refused_by_name() {
    let fx = Fixture::new(16).build();
    start_with_options(&fx, "-e");
    let args = fx.args("upgrade", 17, &[]);
    let run = assert_refused(
        &fx,
        &args,
        &format!(
            "the old server was started with options pgleap cannot carry into the new cluster's configuration (postmaster.opts in {}): -e",
            fx.datadir.display()
        ),
    );
    assert!(
        run.stderr.contains("Set them in postgresql.conf instead"),
        "{}",
        run.stderr
    );
}

// Issue 11 #3, with a `check` first: the fenced start of a stopped old cluster and
// `pg_upgrade --check` each rewrite postmaster.opts, so a `check` before the `upgrade` lost the
// old server's command line and the new server came back without it.
#[test]
fn command_line_options_survive_a_check_of_the_stopped_cluster() {
    let fx = Fixture::new(16).build();
    let sock = owned_dir(&fx.root.path().join("sock2"));
    let port = common::port();
    start_with_options(
        &fx,
        &format!("-p {port} -k {} -c max_connections=33", sock.display()),
    );
    fx.stop();
    let opts = fx.datadir.join("postmaster.opts");
    let before = std::fs::read_to_string(&opts).unwrap();
    assert!(before.contains("max_connections=33"), "{before}");
    fx.pgleap(fx.args("check", 17, &[])).success();
    assert_eq!(std::fs::read_to_string(&opts).unwrap(), before);
    let doc = upgrade(&fx, 17, &["--mode", "copy"]);
    assert_eq!(doc["plan"]["new"]["port"], port);
    assert_eq!(
        doc["config"]["command_line"],
        serde_json::json!([
            format!("unix_socket_directories = '{}'", sock.display()),
            "max_connections = '33'"
        ])
    );
}

// A cluster with group access (`initdb -g`): the `check` above put postmaster.opts back with
// mode 0600 instead of the 0640 PostgreSQL gave it.
#[test]
fn check_puts_postmaster_opts_back_with_its_mode() {
    use std::os::unix::fs::PermissionsExt as _;
    let fx = Fixture::new(16).initdb_args(&["-g"]).build();
    fx.start();
    fx.stop();
    let opts = fx.datadir.join("postmaster.opts");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&opts), 0o640);
    let before = std::fs::read_to_string(&opts).unwrap();
    fx.pgleap(fx.args("check", 17, &[])).success();
    assert_eq!(std::fs::read_to_string(&opts).unwrap(), before);
    assert_eq!(mode(&opts), 0o640);
}

// A versioned layout under a root-owned mount point (`/data` holding `/data/16`): the owner
// cannot add or remove entries there, so rollback left the new directory in place ("could not
// move aside ... Permission denied") and a second upgrade was then refused.
#[test]
fn rollback_and_finalize_work_in_a_root_owned_parent() {
    use std::os::unix::fs::PermissionsExt as _;
    if !common::is_root() {
        eprintln!("skipped: a root-owned parent needs root");
        return;
    }
    let fx = Fixture::new(16).build();
    let parent = fx.datadir.parent().unwrap().to_path_buf();
    std::os::unix::fs::chown(&parent, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let names = || -> BTreeSet<String> {
        std::fs::read_dir(&parent)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect()
    };
    upgrade(&fx, 17, &["--mode", "copy"]);
    let run = after(&fx, "rollback", &[]);
    run.success();
    let after_rollback = names();
    assert!(after_rollback.contains("16"), "{after_rollback:?}");
    assert!(
        !after_rollback.contains("17"),
        "{after_rollback:?}\n{}",
        run.stderr
    );
    assert!(
        after_rollback
            .iter()
            .any(|n| n.starts_with("17.rolled-back-")),
        "{after_rollback:?}"
    );
    upgrade(&fx, 17, &["--mode", "copy"]);
    after(&fx, "finalize", &["--yes"]).success();
    let left = names();
    assert!(!left.contains("16"), "{left:?}");
    assert!(parent.join("17/PG_VERSION").exists(), "{left:?}");
}
