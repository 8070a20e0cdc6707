//! `pgleap rehearse`: the upgrade on a copy, while the old server keeps serving, with a proof
//! that the upgraded copy holds the copy's data and a downtime prediction that a real
//! upgrade right after confirms.

mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::reflink::ReflinkFs;
use common::{Fixture, Snapshot, is_root, owner, written_by_a_start_and_stop};

/// The entries that differ between two snapshots.
fn changed(before: &Snapshot, after: &Snapshot) -> Vec<PathBuf> {
    before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Entries of the data directory's parent whose name starts with `prefix`.
fn siblings(fx: &Fixture, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(fx.datadir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect()
}

fn rehearse(fx: &Fixture, extra: &[&str]) -> common::Run {
    let mut extra = extra.to_vec();
    extra.push("--json");
    fx.pgleap(fx.args("rehearse", 17, &extra))
}

/// Asserts the proof compared real items and found every one equal.
#[track_caller]
fn assert_all_equal(doc: &serde_json::Value, at_least: u64) {
    let proof = &doc["proof"];
    assert_eq!(proof["equal"], true, "{proof:#}");
    assert_eq!(proof["differences"].as_array().unwrap().len(), 0);
    let compared = proof["compared"].as_u64().unwrap();
    assert!(compared >= at_least, "only {compared} items compared");
    let tables: Vec<&serde_json::Value> = proof["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "table")
        .collect();
    assert!(tables.iter().any(|t| {
        t["before"]
            .as_str()
            .is_some_and(|b| !b.starts_with("0 rows"))
    }));
}

/// A client inserting a timestamped row every 20 ms into `w` over one session, counting
/// what it sent.
struct Writer {
    child: std::process::Child,
    sent: u64,
}

impl Writer {
    fn start(fx: &Fixture) -> Writer {
        fx.sql(
            "postgres",
            "CREATE TABLE w (id bigserial PRIMARY KEY, at timestamptz NOT NULL)",
        );
        let o = owner();
        let mut cmd = Command::new(fx.bindir().join("psql"));
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&fx.socket)
            .args([
                "-p",
                &fx.port.to_string(),
                "-U",
                &fx.superuser,
                "-d",
                "postgres",
            ])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        if is_root() {
            cmd.uid(o.uid).gid(o.gid);
        }
        Writer {
            child: cmd.spawn().unwrap(),
            sent: 0,
        }
    }

    fn write_for(&mut self, until: &std::sync::atomic::AtomicBool) {
        let stdin = self.child.stdin.as_mut().unwrap();
        while !until.load(std::sync::atomic::Ordering::SeqCst) {
            stdin
                .write_all(b"INSERT INTO w (at) VALUES (clock_timestamp());\n")
                .unwrap();
            stdin.flush().unwrap();
            self.sent += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(mut self) -> u64 {
        drop(self.child.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the writing client failed: {status}");
        self.sent
    }
}

/// Every write the client sent landed in the old cluster, and none waited a second.
fn assert_writes_landed(fx: &Fixture, sent: u64) {
    let landed: u64 = fx
        .sql("postgres", "SELECT count(*) FROM w")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(landed, sent, "writes lost");
    assert!(sent > 20, "the client wrote only {sent} rows");
    let gap: f64 = fx
        .sql(
            "postgres",
            "SELECT coalesce(max(extract(epoch FROM at - prev)), 0) FROM (SELECT at, lag(at) OVER (ORDER BY id) AS prev FROM w) g",
        )
        .trim()
        .parse()
        .unwrap();
    assert!(gap < 1.0, "a write waited {gap:.2}s");
}

#[test]
fn rehearse_a_serving_cluster_then_upgrade_as_predicted() {
    let fx = Fixture::new(16).rich().tablespace().running().build();
    let config: Vec<(PathBuf, Vec<u8>)> = [
        "postgresql.conf",
        "postgresql.auto.conf",
        "pg_hba.conf",
        "PG_VERSION",
    ]
    .iter()
    .map(|f| {
        (
            fx.datadir.join(f),
            std::fs::read(fx.datadir.join(f)).unwrap(),
        )
    })
    .collect();
    let tablespace_before = common::snapshot(fx.tablespace.as_ref().unwrap());
    let mut writer = Writer::start(&fx);
    // The writer's table, index and sequence are the only user relations that change.
    let written: Vec<String> = fx
        .sql(
            "postgres",
            "SELECT pg_relation_filepath(r) FROM unnest(ARRAY['w', 'w_pkey', 'w_id_seq']::regclass[]) r",
        )
        .lines()
        .map(str::to_string)
        .collect();
    fx.sql("postgres", "CHECKPOINT");
    let datadir_before = common::snapshot(&fx.datadir);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let run = std::thread::scope(|s| {
        let w = s.spawn(|| writer.write_for(&stop));
        let run = rehearse(&fx, &["--mode", "link"]);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        w.join().unwrap();
        run
    });
    let sent = writer.finish();
    run.success();
    let doc = run.json();
    assert_eq!(doc["ok"], true);
    // /tmp has no reflinks: the copy came from pg_basebackup over the owner's socket.
    assert_eq!(doc["copy"]["method"], "base-backup", "{:#}", doc["copy"]);
    assert_all_equal(&doc, 12);
    assert_writes_landed(&fx, sent);
    // The old cluster's configuration and tablespace are as they were; nothing was left.
    for (path, bytes) in &config {
        assert_eq!(
            &std::fs::read(path).unwrap(),
            bytes,
            "{} changed",
            path.display()
        );
    }
    let unexpected: Vec<PathBuf> = changed(&datadir_before, &common::snapshot(&fx.datadir))
        .into_iter()
        .filter(|p| !written_by_a_start_and_stop(&fx.datadir, p))
        .filter(|p| {
            !written
                .iter()
                .any(|w| p.to_string_lossy().starts_with(w.as_str()))
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "the old data directory changed: {unexpected:?}"
    );
    let tablespace_after = common::snapshot(fx.tablespace.as_ref().unwrap());
    let added: Vec<&PathBuf> = tablespace_after
        .keys()
        .filter(|k| !tablespace_before.contains_key(*k))
        .collect();
    assert!(added.is_empty(), "the tablespace gained {added:?}");
    assert!(
        siblings(&fx, ".pgleap-").is_empty(),
        "left {:?}",
        siblings(&fx, ".pgleap-")
    );
    assert!(!fx.new_datadir(17).exists());
    let command = doc["upgrade_command"].as_str().unwrap();
    assert!(
        command.starts_with("pgleap upgrade --old-datadir "),
        "{command}"
    );
    assert!(command.contains(" --mode link "), "{command}");

    // The real upgrade, right after: its downtime is what the rehearsal predicted (within
    // 2x and a second either way).
    let predicted = doc["downtime"]["predicted_seconds"].as_f64().unwrap();
    let up = fx.pgleap(fx.args("upgrade", 17, &["--mode", "link", "--json"]));
    up.success();
    let actual = up.json()["downtime_seconds"].as_f64().unwrap();
    assert!(
        predicted <= 2.0 * actual + 1.0 && actual <= 2.0 * predicted + 1.0,
        "predicted {predicted:.2}s, the upgrade took {actual:.2}s"
    );
}

/// `rehearse` arguments for the postgresql-common cluster: its configuration directory
/// below the fixture's root.
fn common_args(fx: &Fixture, confdir: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let root = fx.root.path().display().to_string();
    let mut with_root = vec!["--root", root.as_str()];
    with_root.extend_from_slice(extra);
    let mut args = fx.args("rehearse", 17, &with_root);
    args[2] = confdir.display().to_string();
    args
}

#[test]
fn rehearse_a_stopped_cluster_changes_nothing_and_cleans_an_interrupted_one() {
    // Configured the postgresql-common way: the copy gets the configuration from /etc.
    let (fx, confdir) = postgresql_common_cluster();
    let before = common::snapshot(&fx.datadir);
    let ts_before = common::snapshot(fx.tablespace.as_ref().unwrap());
    let conf_before = common::snapshot(&confdir);

    // Killed in the middle of the copy's upgrade: the scratch area stays behind.
    let killed = Command::new(env!("CARGO_BIN_EXE_pgleap"))
        .args(common_args(&fx, &confdir, &[]))
        .env("PGLEAP_FAULT", "after:pg_upgrade")
        .output()
        .unwrap();
    assert!(!killed.status.success());
    let scratch = siblings(&fx, ".pgleap-rehearse-");
    assert_eq!(
        scratch.len(),
        1,
        "{}",
        String::from_utf8_lossy(&killed.stderr)
    );

    let run = fx.pgleap(common_args(&fx, &confdir, &["--json"]));
    run.success();
    let layout = format!("Debian cluster 16/main, config in {}", confdir.display());
    assert!(run.stderr.contains(&layout), "{}", run.stderr);
    let doc = run.json();
    assert_eq!(doc["copy"]["method"], "file-copy");
    assert!(
        doc["notes"][0]
            .as_str()
            .unwrap()
            .starts_with("removed what an earlier rehearsal left in"),
        "{:#}",
        doc["notes"]
    );
    assert_all_equal(&doc, 12);
    assert!(doc["downtime"]["predicted_seconds"].as_f64().unwrap() > 0.0);
    assert!(
        siblings(&fx, ".pgleap-").is_empty(),
        "left {:?}",
        siblings(&fx, ".pgleap-")
    );

    let after = common::snapshot(&fx.datadir);
    let unexpected: Vec<PathBuf> = changed(&before, &after)
        .into_iter()
        .filter(|p| !written_by_a_start_and_stop(&fx.datadir, p))
        .collect();
    assert!(unexpected.is_empty(), "rehearse changed {unexpected:?}");
    common::assert_unchanged(
        &ts_before,
        &common::snapshot(fx.tablespace.as_ref().unwrap()),
        "rehearse (the tablespace)",
    );
    common::assert_unchanged(&conf_before, &common::snapshot(&confdir), "rehearse (/etc)");
}

#[test]
fn a_row_lost_in_the_copy_is_reported_as_a_difference() {
    let fx = Fixture::new(16).running().build();
    let out = Command::new(env!("CARGO_BIN_EXE_pgleap"))
        .args(fx.args("rehearse", 17, &["--json"]))
        .env("PGLEAP_FAULT", "rehearse:delete-row")
        .output()
        .unwrap();
    let run = common::Run::from(out);
    assert_eq!(run.code(), 1, "{}", run.stderr);
    let doc = run.json();
    assert_eq!(doc["ok"], false);
    let diffs = doc["proof"]["differences"].as_array().unwrap();
    assert_eq!(diffs.len(), 1, "{diffs:#?}");
    assert_eq!(diffs[0]["kind"], "table");
    assert_eq!(diffs[0]["name"], "public.t");
    assert!(
        diffs[0]["before"]
            .as_str()
            .unwrap()
            .starts_with("1000 rows, hash "),
        "{:#}",
        diffs[0]
    );
    assert!(
        diffs[0]["after"]
            .as_str()
            .unwrap()
            .starts_with("999 rows, hash "),
        "{:#}",
        diffs[0]
    );
    assert!(
        run.stderr.contains(
            "pgleap: the rehearsal found 1 difference(s) between the copy and the upgraded copy"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("DIFFERENT table public.t in postgres: 1000 rows"),
        "{}",
        run.stderr
    );
}

#[test]
fn rehearse_on_a_reflink_filesystem_copies_between_backup_start_and_stop() {
    let Some(fs) = ReflinkFs::mount_or_skip("rehearse_on_a_reflink_filesystem") else {
        return;
    };
    let fx = Fixture::new(16)
        .root_in(fs.path())
        .tablespace()
        .running()
        .build();
    let run = rehearse(&fx, &["--keep"]);
    run.success();
    let doc = run.json();
    assert_eq!(doc["copy"]["method"], "reflink-backup", "{:#}", doc["copy"]);
    assert!(
        doc["copy"]["reflinked_files"].as_u64().unwrap() > 100,
        "{:#}",
        doc["copy"]
    );
    assert_all_equal(&doc, 5);
    // Kept: the upgraded copy is a cluster of the new major, stopped, and says how to start it.
    let scratch = PathBuf::from(doc["scratch"].as_str().unwrap());
    let new = scratch.join("new");
    assert_eq!(
        std::fs::read_to_string(new.join("PG_VERSION"))
            .unwrap()
            .trim(),
        "17"
    );
    assert!(!new.join("postmaster.pid").exists());
    assert!(
        doc["kept"]
            .as_str()
            .unwrap()
            .contains("listen_addresses=''")
    );
    // Its tablespace lives in the scratch area, not in the old cluster's.
    let link = std::fs::read_dir(scratch.join("old/pg_tblspc"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert!(
        std::fs::read_link(link.path())
            .unwrap()
            .starts_with(&scratch)
    );
    drop(fx);
}

#[test]
fn not_enough_space_for_the_copy_is_refused_before_anything_is_written() {
    if !is_root() {
        eprintln!("skipped: needs root to mount a small tmpfs");
        return;
    }
    let fx = Fixture::new(16).rich().build();
    let small = fx.root.path().join("small");
    let _mount = common::Tmpfs::mount(&small, "16m", "0755");
    let scratch = small.join("rehearsal");
    let before = common::snapshot(&fx.datadir);
    let run = fx.pgleap(fx.args(
        "rehearse",
        17,
        &["--scratch", &scratch.display().to_string()],
    ));
    run.refused(&format!(
        "not enough free space for the rehearsal's copy on the filesystem of {}: needs ",
        scratch.display()
    ));
    assert!(run.stderr.contains(" free"), "{}", run.stderr);
    assert_eq!(
        std::fs::read_dir(&small).unwrap().count(),
        0,
        "the tmpfs was written"
    );
    let unexpected: Vec<PathBuf> = changed(&before, &common::snapshot(&fx.datadir))
        .into_iter()
        .filter(|p| !written_by_a_start_and_stop(&fx.datadir, p))
        .collect();
    assert!(unexpected.is_empty(), "the refusal changed {unexpected:?}");
}

#[test]
fn an_interrupted_rehearsal_leaves_the_serving_cluster_alone() {
    let fx = Fixture::new(16).running().build();
    let gate = fx.root.path().join("go");
    let child = Command::new(env!("CARGO_BIN_EXE_pgleap"))
        .args(fx.args("rehearse", 17, &[]))
        .env(
            "PGLEAP_FAULT",
            format!("before:pg_upgrade:pause={}", gate.display()),
        )
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let scratch = fx.datadir.parent().unwrap().join(".pgleap-rehearse-16");
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while !scratch.join("new/PG_VERSION").exists()
        || !scratch.join("old/global/pg_control").exists()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the rehearsal never reached pg_upgrade"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    std::fs::write(&gate, "").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("pgleap: the rehearsal stopped"), "{stderr}");
    assert!(
        stderr.contains("The old cluster was not touched."),
        "{stderr}"
    );
    assert!(
        !scratch.exists(),
        "the interrupted rehearsal left {}",
        scratch.display()
    );
    // The old server kept serving and still answers as 16.
    let version = fx.sql("postgres", "SHOW server_version_num");
    assert!(version.starts_with("16"), "{version}");
    assert_eq!(fx.sql("postgres", "SELECT count(*) FROM t").trim(), "1000");
}

/// A cluster configured the postgresql-common way, below the fixture root: the data
/// directory in `var/lib/postgresql/16/main`, its configuration in `etc/postgresql/16/main`
/// (with data_directory, hba_file, ident_file, external_pid_file and `conf.d`).
fn postgresql_common_cluster() -> (Fixture, PathBuf) {
    let fx = Fixture::new(16)
        .layout("var/lib/postgresql/{major}/main")
        .rich()
        .tablespace()
        .build();
    let root = fx.root.path();
    let confdir = root.join("etc/postgresql/16/main");
    std::fs::create_dir_all(confdir.join("conf.d")).unwrap();
    for f in ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"] {
        std::fs::rename(fx.datadir.join(f), confdir.join(f)).unwrap();
    }
    let pid = root.join("16-main.pid");
    let mut conf = std::fs::read_to_string(confdir.join("postgresql.conf")).unwrap();
    write!(
        conf,
        "data_directory = '{}'\nhba_file = '{c}/pg_hba.conf'\nident_file = '{c}/pg_ident.conf'\nexternal_pid_file = '{}'\ncluster_name = '16/main'\ninclude_dir = 'conf.d'\n",
        fx.datadir.display(),
        pid.display(),
        c = confdir.display()
    )
    .unwrap();
    std::fs::write(confdir.join("postgresql.conf"), conf).unwrap();
    std::fs::write(confdir.join("conf.d/tuning.conf"), "work_mem = '8MB'\n").unwrap();
    for d in confdir
        .ancestors()
        .take_while(|a| a.starts_with(root) && *a != root)
    {
        common::chown(d);
    }
    (fx, confdir)
}

/// A scratch area inside the data directory, and an existing directory that is not a
/// rehearsal's: both refused before anything is copied, and nothing is written there.
#[test]
fn scratch_inside_the_cluster_or_not_a_rehearsals_is_refused() {
    let fx = Fixture::new(16).build();
    let unexpected = |before: &Snapshot| -> Vec<PathBuf> {
        changed(before, &common::snapshot(&fx.datadir))
            .into_iter()
            .filter(|p| !written_by_a_start_and_stop(&fx.datadir, p))
            .collect()
    };

    let inside = fx.datadir.join("rehearsal");
    let before = common::snapshot(&fx.datadir);
    let run = rehearse(&fx, &["--scratch", inside.to_str().unwrap()]);
    run.refused(&format!(
        "the scratch area {} overlaps {}, which the old cluster uses",
        inside.display(),
        fx.datadir.display()
    ))
    .refused("Pass --scratch with a directory outside the data directory, its tablespaces and its WAL directory");
    assert!(!inside.exists(), "the refused scratch area was created");
    assert_eq!(unexpected(&before), Vec::<PathBuf>::new());

    let foreign = fx.root.path().join("not-a-rehearsal");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("keep.txt"), "somebody's file\n").unwrap();
    let foreign_before = common::snapshot(&foreign);
    let before = common::snapshot(&fx.datadir);
    let run = rehearse(&fx, &["--scratch", foreign.to_str().unwrap()]);
    run.refused(&format!(
        "{} exists and is not a rehearsal's scratch area (it has no rehearsal.json)",
        foreign.display()
    ))
    .refused("Remove it, or pass --scratch with a directory that does not exist yet");
    common::assert_unchanged(
        &foreign_before,
        &common::snapshot(&foreign),
        "a refused rehearsal",
    );
    assert_eq!(unexpected(&before), Vec::<PathBuf>::new());
    assert!(
        siblings(&fx, ".pgleap-").is_empty(),
        "{:?}",
        siblings(&fx, ".pgleap-")
    );
}

/// A smoke-test file for the owner to read.
fn smoke_file(fx: &Fixture, name: &str, sql: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let f = fx.root.path().join(name);
    std::fs::write(&f, sql).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    f
}

/// `--smoke-sql` runs on the upgraded copy and its output is in the report; `--max-rate`
/// reaches pg_basebackup. A failing smoke query fails the rehearsal (exit 1) and says so.
#[test]
fn smoke_queries_run_on_the_upgraded_copy_and_a_failing_one_fails_the_rehearsal() {
    let fx = Fixture::new(16).running().build();
    fx.sql(
        "postgres",
        "CREATE TABLE smoke AS SELECT g AS id FROM generate_series(1, 4321) g",
    );
    let good = smoke_file(
        &fx,
        "good.sql",
        "SELECT 'rows: ' || count(*) AS smoke FROM smoke;\nSELECT current_setting('server_version_num')::int / 10000 AS major;\n",
    );
    let run = rehearse(
        &fx,
        &[
            "--smoke-sql",
            good.to_str().unwrap(),
            "--max-rate",
            "64M",
            "-vv",
        ],
    );
    run.success();
    assert!(
        run.stderr.contains("--max-rate=64M"),
        "pg_basebackup was not given the rate:\n{}",
        run.stderr
    );
    let doc = run.json();
    assert_eq!(doc["copy"]["method"], "base-backup", "{:#}", doc["copy"]);
    let smoke = &doc["smoke"];
    assert_eq!(smoke["ok"], true, "{smoke:#}");
    let output = smoke["output"].as_str().unwrap();
    assert!(output.contains("rows: 4321"), "{output}");
    assert!(
        output.contains(" 17\n") || output.ends_with(" 17"),
        "ran on the upgraded copy: {output}"
    );
    assert!(output.contains("Time: "), "no statement timings: {output}");

    let bad = smoke_file(
        &fx,
        "bad.sql",
        "SELECT count(*) FROM smoke;\nSELECT * FROM no_such_table;\nSELECT 'not reached';\n",
    );
    let run = rehearse(&fx, &["--smoke-sql", bad.to_str().unwrap()]);
    assert_eq!(run.code(), 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("the rehearsal found a failing smoke query; the report lists them"),
        "{}",
        run.stderr
    );
    let smoke = &run.json()["smoke"];
    assert_eq!(smoke["ok"], false, "{smoke:#}");
    let output = smoke["output"].as_str().unwrap();
    assert!(
        output.contains("relation \"no_such_table\" does not exist"),
        "{output}"
    );
    assert!(
        !output.contains("not reached"),
        "psql went on after the error: {output}"
    );
    assert!(
        siblings(&fx, ".pgleap-").is_empty(),
        "{:?}",
        siblings(&fx, ".pgleap-")
    );
}
