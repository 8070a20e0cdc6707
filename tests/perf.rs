//! Performance behaviour under real conditions: ANALYZE in stages over relations across
//! databases, the CHECKPOINTs before the stop under a write load, and what `--mode auto`
//! picks on each filesystem. Real clusters, real pg_upgrade; timings are reported, never
//! asserted.

mod common;

use std::fmt::Write as _;
use std::process::{Command, Stdio};

use common::Fixture;

/// Three user databases of several tables each (with indexes and an expression index), so
/// that ANALYZE has relations of different sizes in more than one database.
fn populate(fx: &Fixture) {
    for db in ["shop", "crm", "logs"] {
        fx.sql("postgres", &format!("CREATE DATABASE {db}"));
        let mut sql = String::new();
        for t in 0..6 {
            let rows = 200 * (t + 1) * (t + 1);
            let _ = write!(
                sql,
                "CREATE TABLE t{t} (id int PRIMARY KEY, k int, note text);
                 INSERT INTO t{t} SELECT g, g % 97, repeat('x', g % 50) FROM generate_series(1, {rows}) g;
                 CREATE INDEX t{t}_k ON t{t} (k);"
            );
        }
        sql.push_str("CREATE INDEX t5_expr ON t5 ((k * 2));");
        fx.sql(db, &sql);
    }
}

/// Tables without column statistics, or never analyzed, in `db` ("" when none).
fn unanalyzed(fx: &Fixture, db: &str) -> String {
    fx.sql(
        db,
        "SELECT string_agg(c.relname, ',' ORDER BY c.relname) FROM pg_class c \
         JOIN pg_stat_user_tables s ON s.relid = c.oid \
         WHERE c.relkind = 'r' AND (s.last_analyze IS NULL \
            OR NOT EXISTS (SELECT 1 FROM pg_stats p WHERE p.schemaname = s.schemaname AND p.tablename = c.relname))",
    )
    .trim()
    .to_string()
}

/// Upgrades the multi-database fixture with --jobs 2 and checks that every table of every
/// database was analyzed and that the report gives each stage's time.
fn analyze_covers_everything(old: u32, new: u32, mode: &str) -> serde_json::Value {
    let fx = Fixture::new(old).running().build();
    populate(&fx);
    let run = fx.pgleap(fx.args("upgrade", new, &["--mode", mode, "--jobs", "2", "--json"]));
    run.success();
    let doc = run.json();
    for db in ["shop", "crm", "logs", "postgres"] {
        assert_eq!(
            unanalyzed(&fx, db),
            "",
            "tables left without statistics in {db}"
        );
    }
    let analyze = &doc["analyze"];
    assert_eq!(analyze["stages"], 3, "{analyze}");
    // shop, crm, logs, postgres and template1.
    assert_eq!(analyze["databases"], 5, "{analyze}");
    assert!(analyze["relations"].as_u64().unwrap() >= 18, "{analyze}");
    let times: Vec<f64> = analyze["stage_seconds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_f64().unwrap())
        .collect();
    assert_eq!(times.len(), 3, "{analyze}");
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "stages end in order: {times:?}"
    );
    assert!(
        run.stderr.contains("minimal statistics everywhere after ")
            && run.stderr.contains(", full after "),
        "the report says when each stage ended:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("stage 1/3 done after "),
        "progress says when stage 1 ended:\n{}",
        run.stderr
    );
    doc
}

#[test]
fn analyze_in_stages_over_relations_across_databases() {
    // 16 → 17 on ext4 in auto mode: copy-file-range, a real pg_upgrade --copy-file-range.
    let doc = analyze_covers_everything(16, 17, "auto");
    assert_eq!(doc["plan"]["mode"], "copy-file-range");
}

#[test]
fn analyze_18_takes_missing_statistics_first_then_every_relation() {
    // 18 carries optimizer statistics: the early stages take only what lacks them (here the
    // expression index's), the last stage every relation.
    let doc = analyze_covers_everything(17, 18, "link");
    assert_eq!(doc["plan"]["mode"], "link");
}

/// A pgbench write load on the old server, running until the stop cuts it off.
struct Load(std::process::Child);

impl Load {
    fn start(fx: &Fixture) -> Load {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = Command::new(fx.bindir().join("pgbench"));
        if common::is_root() {
            let o = common::owner();
            cmd.uid(o.uid).gid(o.gid);
        }
        cmd.current_dir("/");
        let child = cmd
            .args(["-n", "-c", "2", "-T", "600", "-h"])
            .arg(&fx.socket)
            .args(["-p", &fx.port.to_string(), "-U", &fx.superuser, "postgres"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(fx.root.path().join("pgbench.log")).unwrap())
            .spawn()
            .unwrap();
        Load(child)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn checkpoints_before_the_stop_under_write_load_and_reports_the_shutdown() {
    let fx = Fixture::new(16).running().build();
    let init = common::as_owner(
        &fx.bindir().join("pgbench"),
        &[
            "-i",
            "-q",
            "-s",
            "5",
            "-h",
            &fx.socket.display().to_string(),
            "-p",
            &fx.port.to_string(),
            "-U",
            &fx.superuser,
            "postgres",
        ],
    );
    common::ok(&init, "pgbench -i");
    let before = fx.sql("postgres", "SELECT count(*) FROM pgbench_accounts");
    let _load = Load::start(&fx);
    // Let the load dirty buffers before pgleap starts.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let run = fx.pgleap(fx.args("upgrade", 17, &["--mode", "link", "--json"]));
    run.success();
    let doc = run.json();
    let shutdown = doc["shutdown_seconds"].as_f64().unwrap();
    assert!(shutdown > 0.0, "{doc}");
    let rounds = doc["pre_stop_checkpoint"]["rounds"].as_array().unwrap();
    assert!(
        (1..=4).contains(&rounds.len()),
        "bounded CHECKPOINTs: {rounds:?}"
    );
    // 16: counted by pg_stat_bgwriter; the load left buffers for the first one to write.
    let written = rounds[0]["buffers_written"].as_i64().unwrap();
    assert!(
        written > 0,
        "{rounds:?}\npgbench: {}",
        std::fs::read_to_string(fx.root.path().join("pgbench.log")).unwrap_or_default()
    );
    assert!(
        run.stderr.contains("before the stop: ")
            && run.stderr.contains("the old server's shutdown: "),
        "{}",
        run.stderr
    );
    let steps = doc["steps"].as_array().unwrap();
    assert!(steps.iter().any(|s| s["name"] == "stop-old"), "{steps:?}");
    // pg_upgrade's phases, timed from its output: the transfer phase among them, said.
    let phases = doc["pg_upgrade_phases"].as_array().unwrap();
    let linking = phases
        .iter()
        .find(|p| p["name"] == "Linking user relation files")
        .unwrap_or_else(|| panic!("{phases:?}"));
    assert!(linking["seconds"].as_f64().unwrap() >= 0.0, "{phases:?}");
    assert!(phases.len() >= 5, "{phases:?}");
    assert!(
        run.stderr.contains("      Linking user relation files: "),
        "{}",
        run.stderr
    );
    // The data is all there (the load only updates rows).
    assert_eq!(
        fx.sql("postgres", "SELECT count(*) FROM pgbench_accounts"),
        before
    );
    // pgleap status shows the same shutdown time and the statistics stages, later.
    let target = ["--old-datadir", &fx.datadir.display().to_string()];
    let status = fx
        .pgleap(["status"].iter().chain(&target))
        .success()
        .stderr
        .clone();
    assert!(
        status.contains(&format!(
            "\n  shutdown:  {shutdown:.1}s (the old server's, inside the downtime; {} CHECKPOINT",
            rounds.len()
        )),
        "{status}"
    );
    let stages = doc["analyze"]["stage_seconds"].as_array().unwrap();
    assert!(
        status.contains(&format!(
            "\n  analyze:   {} relations in {} databases: minimal statistics everywhere after {:.1}s",
            doc["analyze"]["relations"], doc["analyze"]["databases"], stages[0].as_f64().unwrap()
        )),
        "{status}"
    );
    let json = fx
        .pgleap(["status"].iter().chain(&target).chain(&["--json"]))
        .success()
        .json();
    assert_eq!(json["shutdown_seconds"], doc["shutdown_seconds"], "{json}");
    assert_eq!(json["analyze"], doc["analyze"], "{json}");
    assert_eq!(
        json["pre_stop_checkpoint"], doc["pre_stop_checkpoint"],
        "{json}"
    );
}

#[test]
fn auto_mode_says_why_copy_file_range_or_copy() {
    let fx = Fixture::new(16).build();
    let doc = fx
        .pgleap(fx.args("check", 17, &["--mode", "auto", "--json"]))
        .success()
        .json();
    assert_eq!(doc["plan"]["mode"], "copy-file-range", "{doc}");
    let why = doc["plan"]["mode_reason"].as_str().unwrap();
    assert!(
        why.starts_with("the filesystem has no reflinks; the kernel copies with copy_file_range"),
        "{why}"
    );
    // A 16 target has no --copy-file-range.
    let fx = Fixture::new(15).build();
    let doc = fx
        .pgleap(fx.args("check", 16, &["--mode", "auto", "--json"]))
        .success()
        .json();
    assert_eq!(doc["plan"]["mode"], "copy", "{doc}");
    let why = doc["plan"]["mode_reason"].as_str().unwrap();
    assert!(
        why.starts_with(
            "the filesystem has no reflinks and pg_upgrade before 17 has no --copy-file-range, so files are copied"
        ),
        "{why}"
    );
}

/// Old data on a tmpfs, new on the disk: Linux refuses copy_file_range across them (EXDEV),
/// so pg_upgrade 17's check would refuse --copy-file-range; auto copies instead.
#[test]
fn auto_mode_copies_where_the_kernel_refuses_copy_file_range() {
    if !common::is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let mnt = tempfile::Builder::new()
        .prefix("pgleap-cfr-")
        .tempdir_in("/tmp")
        .unwrap();
    let fs = common::Tmpfs::mount(&mnt.path().join("old"), "200m", "0755");
    let fx = Fixture::new(16).root_in(&fs.path).build();
    let new_dir = mnt.path().join("new17");
    common::chown(mnt.path());
    let new = new_dir.display().to_string();
    let doc = fx
        .pgleap(fx.args(
            "check",
            17,
            &["--mode", "auto", "--new-datadir", &new, "--json"],
        ))
        .success()
        .json();
    assert_eq!(doc["plan"]["mode"], "copy", "{doc}");
    let why = doc["plan"]["mode_reason"].as_str().unwrap();
    assert!(
        why.starts_with(
            "old and new data are on different filesystems (no reflinks across them) and the kernel refuses copy_file_range between them, so files are copied"
        ),
        "{why}"
    );
    drop(fx);
}

/// A file bind-mounted over another, unmounted when dropped.
struct BindMount(std::path::PathBuf);

impl BindMount {
    fn new(from: &std::path::Path, over: &std::path::Path) -> BindMount {
        let out = Command::new("mount")
            .arg("--bind")
            .arg(from)
            .arg(over)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        BindMount(over.to_path_buf())
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// pg_upgrade's check refuses the copy-file-range that auto chose: the upgrade falls back to
/// copy before the window, journals it and says so, and copies. What makes the kernel refuse
/// (EXDEV, for real) appears between the plan's probe and pg_upgrade --check: once initdb is
/// done, the old cluster's `PG_VERSION` (the file pg_upgrade's probe copies) is a file of a
/// tmpfs, bind-mounted over the original with the same contents.
#[test]
fn auto_falls_back_to_copy_when_pg_upgrade_check_refuses_copy_file_range() {
    if !common::is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let fx = Fixture::new(16).running().build();
    fx.sql(
        "postgres",
        "CREATE TABLE cfr AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 20000) g",
    );
    let sum = fx.sql("postgres", "SELECT sum(g) FROM cfr");
    let tmpfs = common::Tmpfs::mount(&fx.root.path().join("other-fs"), "1m", "0755");
    let version = fx.datadir.join("PG_VERSION");
    std::fs::copy(&version, tmpfs.path.join("PG_VERSION")).unwrap();
    common::chown(&tmpfs.path.join("PG_VERSION"));
    let gate = fx.root.path().join("go");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgleap"))
        .args(fx.args("upgrade", 17, &["--mode", "auto", "--json"]))
        .env(
            "PGLEAP_FAULT",
            format!("after:initdb:pause={}", gate.display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let new = fx.new_datadir(17);
    let journal = new
        .with_file_name(format!(
            ".pgleap-{}-16-to-17",
            new.file_name().unwrap().to_string_lossy()
        ))
        .join("journal.json");
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&journal).is_ok_and(|t| t.contains("\"new-initialized\"")) {
        if started.elapsed().as_secs() > 120 || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("{:?}", child.wait_with_output().unwrap());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let bind = BindMount::new(&tmpfs.path.join("PG_VERSION"), &version);
    std::fs::write(&gate, "").unwrap();
    let run = common::Run::from(child.wait_with_output().unwrap());
    drop(bind);
    run.success();
    let doc = run.json();
    let refusal =
        "could not copy file range between old and new data directories: Invalid cross-device link";
    assert_eq!(doc["plan"]["mode"], "copy", "{doc}");
    assert_eq!(doc["plan"]["mode_auto"], true, "{doc}");
    assert_eq!(doc["plan"]["mode_fallback"], refusal, "{doc}");
    // The estimate describes the copy that ran, in the plan and scaled to this machine.
    assert_eq!(doc["plan"]["downtime_inputs"]["copy_mode"], "copy", "{doc}");
    for basis in [
        &doc["plan"]["downtime_basis"],
        &doc["downtime_estimate"]["basis"],
    ] {
        let basis = basis.as_str().unwrap();
        assert!(basis.contains(" MiB copied with --copy at "), "{basis}");
        assert!(!basis.contains("copy-file-range"), "{basis}");
    }
    assert_eq!(
        doc["plan"]["mode_reason"],
        format!(
            "pg_upgrade --check refused --copy-file-range ({refusal}), so files are copied; the old cluster stays usable"
        )
    );
    // Said before the window opens, and in the report.
    let said = run
        .stderr
        .find(&format!(
            "pg_upgrade --check refused --copy-file-range ({refusal}): falling back to --copy, before the window"
        ))
        .unwrap_or_else(|| panic!("{}", run.stderr));
    let stop = run.stderr.find("stop-old: ").unwrap();
    assert!(said < stop, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "in --copy mode (pg_upgrade --check refused --copy-file-range before the window: {refusal})"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("[5/10] pg_upgrade: --copy with "),
        "{}",
        run.stderr
    );
    // pg_upgrade's probe file is gone; the data is all there; the old cluster is intact.
    assert!(!new.join("PG_VERSION.copy_file_range_test").exists());
    assert_eq!(fx.sql("postgres", "SELECT sum(g) FROM cfr"), sum);
    assert!(fx.datadir.join("global/pg_control").exists());
    let status = fx
        .pgleap([
            "status",
            "--old-datadir",
            &fx.datadir.display().to_string(),
            "--json",
        ])
        .success()
        .json();
    assert_eq!(status["mode"], "copy", "{status}");
    assert_eq!(status["mode_fallback"], refusal, "{status}");
}

/// `check` meets the same refusal as the upgrade above, the same way (EXDEV for real, a
/// tmpfs file bind-mounted over the old `PG_VERSION` once its scratch cluster is ready):
/// its plan falls back to copy, says why, checks again with --copy and passes, and leaves
/// nothing behind.
#[test]
fn check_falls_back_to_copy_when_pg_upgrade_check_refuses_copy_file_range() {
    if !common::is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let fx = Fixture::new(16).running().build();
    let tmpfs = common::Tmpfs::mount(&fx.root.path().join("other-fs"), "1m", "0755");
    let version = fx.datadir.join("PG_VERSION");
    std::fs::copy(&version, tmpfs.path.join("PG_VERSION")).unwrap();
    common::chown(&tmpfs.path.join("PG_VERSION"));
    let gate = fx.root.path().join("go");
    let err = fx.root.path().join("check.err");
    let before = common::snapshot(fx.root.path());
    let child = Command::new(env!("CARGO_BIN_EXE_pgleap"))
        .args(fx.args("check", 17, &["--mode", "auto", "--json"]))
        .env(
            "PGLEAP_FAULT",
            format!("check:scratch-ready:pause={}", gate.display()),
        )
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    common::wait_for(
        "check to reach its scratch cluster's pg_upgrade --check",
        std::time::Duration::from_secs(120),
        || {
            std::fs::read_to_string(&err)
                .is_ok_and(|t| t.contains("fault point check:scratch-ready"))
        },
    );
    let bind = BindMount::new(&tmpfs.path.join("PG_VERSION"), &version);
    std::fs::write(&gate, "").unwrap();
    let out = child.wait_with_output().unwrap();
    drop(bind);
    let run = common::Run::from(std::process::Output {
        stderr: std::fs::read(&err).unwrap(),
        ..out
    });
    run.success();
    let doc = run.json();
    let refusal =
        "could not copy file range between old and new data directories: Invalid cross-device link";
    assert_eq!(doc["ok"], true, "{doc}");
    assert_eq!(doc["plan"]["mode"], "copy", "{doc}");
    assert_eq!(doc["plan"]["mode_auto"], true, "{doc}");
    assert_eq!(doc["plan"]["mode_fallback"], refusal, "{doc}");
    assert_eq!(
        doc["plan"]["mode_reason"],
        format!(
            "pg_upgrade --check refused --copy-file-range ({refusal}), so files are copied; the old cluster stays usable"
        )
    );
    for basis in [
        &doc["plan"]["downtime_basis"],
        &doc["downtime_estimate"]["basis"],
    ] {
        let basis = basis.as_str().unwrap();
        assert!(basis.contains(" MiB copied with --copy at "), "{basis}");
        assert!(!basis.contains("copy-file-range"), "{basis}");
    }
    assert!(
        run.stderr.contains(&format!(
            "pg_upgrade --check refused --copy-file-range ({refusal}): upgrade falls back to --copy, before the window"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("check passed: the upgrade can run."),
        "{}",
        run.stderr
    );
    // Nothing left beside the cluster: no new data directory, no scratch cluster, no probe.
    let after = common::snapshot(fx.root.path());
    let added: Vec<&std::path::PathBuf> = after
        .keys()
        .filter(|p| !before.contains_key(*p))
        .filter(|p| !p.starts_with(fx.datadir.strip_prefix(fx.root.path()).unwrap()))
        .filter(|p| !p.ends_with("go") && !p.ends_with("check.err"))
        .collect();
    assert!(added.is_empty(), "check left {added:?}");
    assert!(!fx.new_datadir(17).exists());
}

/// Every line of the files below `dir` (pgleap's logs, pg_upgrade's among them).
fn log_lines(dir: &std::path::Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            lines.extend(log_lines(&path));
        } else if let Ok(text) = std::fs::read_to_string(&path) {
            lines.extend(text.lines().map(str::to_string));
        }
    }
    lines
}

/// A cluster set to more than PostgreSQL's default shared_buffers: pg_upgrade's own servers
/// (the old one it dumps the schema from, the new one it restores into) start with the
/// default, the upgrade verifies, and the new server runs with the user's setting.
#[test]
fn pg_upgrade_starts_its_servers_with_default_buffers_and_the_new_server_keeps_the_users() {
    let fx = Fixture::new(16).running().build();
    let conf = fx.datadir.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\nshared_buffers = 256MB\n");
    std::fs::write(&conf, text).unwrap();
    fx.stop();
    fx.start();
    assert_eq!(fx.sql("postgres", "SHOW shared_buffers").trim(), "256MB");
    fx.sql(
        "postgres",
        "CREATE TABLE sb AS SELECT g FROM generate_series(1, 50000) g",
    );
    let sum = fx.sql("postgres", "SELECT sum(g) FROM sb");
    let run = fx.pgleap(fx.args("upgrade", 17, &["--mode", "link", "--json"]));
    run.success();
    assert_eq!(fx.sql("postgres", "SELECT sum(g) FROM sb"), sum);
    assert_eq!(
        fx.sql("postgres", "SHOW server_version_num").trim()[..2],
        *"17"
    );
    assert_eq!(fx.sql("postgres", "SHOW shared_buffers").trim(), "256MB");
    // pg_upgrade's logs (kept with pgleap's) show each pg_ctl start it ran with pgleap's
    // options (its fenced hba): the new server for the check before the window, then the
    // old one once and the new one three times in the run, every one with the default
    // pool. (The check against the running old server gives that server no options.)
    let new = fx.new_datadir(17);
    let logs = new.with_file_name(format!(
        ".pgleap-{}-16-to-17",
        new.file_name().unwrap().to_string_lossy()
    ));
    let starts: Vec<String> = log_lines(&logs)
        .into_iter()
        .filter(|l| l.contains("pg_ctl\" -w -l") && l.contains("\" start >> "))
        .filter(|l| l.contains("-c hba_file="))
        .collect();
    assert!(starts.len() >= 5, "{starts:#?}");
    for bindir in ["/16/bin/pg_ctl\"", "/17/bin/pg_ctl\""] {
        assert!(starts.iter().any(|l| l.contains(bindir)), "{starts:#?}");
    }
    for start in &starts {
        assert!(start.contains("-c shared_buffers=16384"), "{starts:#?}");
    }
}

/// Bytes of `file` in the page cache (util-linux's fincore).
fn cached_bytes(file: &std::path::Path) -> u64 {
    let out = Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The copying modes read the old cluster's relation files ahead into the page cache while
/// the old server still serves (here: a table's file pushed out of the cache first is back
/// in it when the window opens), and the upgrade verifies in copy-file-range and copy modes.
#[test]
fn copying_modes_read_the_relation_files_ahead_before_the_window() {
    for mode in ["copy-file-range", "copy"] {
        let fx = Fixture::new(16).running().build();
        fx.sql(
            "postgres",
            "CREATE TABLE ra AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g; CHECKPOINT",
        );
        let sum = fx.sql("postgres", "SELECT sum(g) FROM ra");
        let file = fx.datadir.join(
            fx.sql("postgres", "SELECT pg_relation_filepath('ra')")
                .trim(),
        );
        let size = std::fs::metadata(&file).unwrap().len();
        // Out of the page cache (written back first).
        let synced = Command::new("sync").arg(&file).output().unwrap();
        assert!(synced.status.success(), "{synced:?}");
        let dropped = Command::new("dd")
            .arg(format!("if={}", file.display()))
            .args(["iflag=nocache", "count=0", "status=none"])
            .output()
            .unwrap();
        assert!(dropped.status.success(), "{dropped:?}");
        assert!(
            cached_bytes(&file) < size / 2,
            "{} still cached",
            file.display()
        );
        let gate = fx.root.path().join("go");
        let err = fx.root.path().join("upgrade.err");
        let child = Command::new(env!("CARGO_BIN_EXE_pgleap"))
            .args(fx.args("upgrade", 17, &["--mode", mode, "--json"]))
            .env(
                "PGLEAP_FAULT",
                format!("before:stop-old:pause={}", gate.display()),
            )
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        common::wait_for(
            "pgleap to reach the stop of the old server",
            std::time::Duration::from_secs(120),
            || {
                std::fs::read_to_string(&err)
                    .is_ok_and(|t| t.contains("fault point before:stop-old"))
            },
        );
        // The kernel reads in the background: give it a moment.
        if mode == "copy-file-range" {
            common::wait_for(
                "the table's file back in the page cache",
                std::time::Duration::from_secs(20),
                || cached_bytes(&file) >= size / 2,
            );
        }
        std::fs::write(&gate, "").unwrap();
        let out = child.wait_with_output().unwrap();
        let run = common::Run::from(std::process::Output {
            stderr: std::fs::read(&err).unwrap(),
            ..out
        });
        run.success();
        assert_eq!(run.json()["plan"]["mode"], mode);
        let ahead = run
            .stderr
            .find("      read ahead: ")
            .unwrap_or_else(|| panic!("{}", run.stderr));
        assert!(
            run.stderr[ahead..].contains(" of relation files (")
                && run.stderr[ahead..].contains(" files) into the page cache ("),
            "{}",
            run.stderr
        );
        assert!(
            ahead < run.stderr.find("stop-old: ").unwrap(),
            "{}",
            run.stderr
        );
        assert_eq!(fx.sql("postgres", "SELECT sum(g) FROM ra"), sum);
        assert_eq!(
            fx.sql("postgres", "SHOW server_version_num").trim()[..2],
            *"17"
        );
        // Copying modes leave the old cluster as it was.
        assert!(fx.datadir.join("global/pg_control").exists());
    }
}
