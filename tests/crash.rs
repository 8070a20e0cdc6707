//! Crash safety: pgleap killed at every step boundary, pg_upgrade killed midway, a disk that
//! fills during the copy, signals, two concurrent runs, rollback and finalize. After each
//! crash both `pgleap upgrade` (resume) and `pgleap rollback` must lead to a working cluster
//! holding exactly the fixture's rows.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Fixture, Run, is_root};

fn pgleap_env(args: &[String], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgleap"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    Run::from(out)
}

fn spawn_pgleap(args: &[String], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgleap"));
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

fn wait_run(child: Child) -> Run {
    let out = child.wait_with_output().unwrap();
    Run::from(out)
}

/// The journal of the fixture's upgrade to `new`, as JSON.
fn journal(fx: &Fixture, new: u32) -> Option<serde_json::Value> {
    let name = fx
        .new_datadir(new)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let path = fx
        .new_datadir(new)
        .with_file_name(format!(".pgleap-{name}-{}-to-{new}", fx.major))
        .join("journal.json");
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn wait_for(what: &str, f: impl FnMut() -> bool) {
    common::wait_for(what, Duration::from_secs(120), f);
}

const OLD: u32 = 16;
const NEW: u32 = 17;

/// A small running cluster with a tablespace, and its rows.
fn fixture() -> (Fixture, BTreeMap<String, String>) {
    let fx = Fixture::new(OLD).tablespace().running().build();
    fx.sql("postgres", "CREATE TABLE ts_t (id int) TABLESPACE ext; INSERT INTO ts_t SELECT generate_series(1, 300)");
    let rows = fx.checksums(OLD, fx.port);
    (fx, rows)
}

fn upgrade_args(fx: &Fixture, mode: &str) -> Vec<String> {
    fx.args("upgrade", NEW, &["--mode", mode])
}

fn target_args(fx: &Fixture, cmd: &str, extra: &[&str]) -> Vec<String> {
    let mut a = vec![
        cmd.to_string(),
        "--old-datadir".into(),
        fx.datadir.display().to_string(),
    ];
    a.extend(extra.iter().map(ToString::to_string));
    a
}

/// The old server is up on its own settings and holds the fixture's rows.
fn assert_old_back(fx: &Fixture, rows: &BTreeMap<String, String>) {
    let v = fx.sql("postgres", "SHOW server_version_num");
    assert!(v.starts_with(&OLD.to_string()), "old server answers as {v}");
    assert_eq!(
        &fx.checksums(OLD, fx.port),
        rows,
        "rows differ after rollback"
    );
}

fn assert_new_up(fx: &Fixture, rows: &BTreeMap<String, String>) {
    let v = fx.sql("postgres", "SHOW server_version_num");
    assert!(v.starts_with(&NEW.to_string()), "new server answers as {v}");
    assert_eq!(
        &fx.checksums(NEW, fx.port),
        rows,
        "rows differ after resume"
    );
}

/// Kills pgleap at `point`, then recovers with `recovery` ("resume" or "rollback").
fn crash_then(point: &str, mode: &str, recovery: &str) {
    let (fx, rows) = fixture();
    let crashed = pgleap_env(&upgrade_args(&fx, mode), &[("PGLEAP_FAULT", point)]);
    assert_eq!(
        crashed.status.signal(),
        Some(9),
        "pgleap was not killed at {point}:\n{}",
        crashed.stderr
    );
    let status = common::pgleap(target_args(&fx, "status", &[]));
    status.success();
    assert!(status.stderr.contains("next:"), "{}", status.stderr);
    let past_no_return = mode == "link"
        && matches!(
            point,
            "after:start-new" | "after:update-extensions" | "after:analyze"
        );
    match recovery {
        "resume" => {
            common::pgleap(upgrade_args(&fx, mode)).success();
            assert_new_up(&fx, &rows);
            let j = journal(&fx, NEW).unwrap();
            assert_eq!(j["state"], "done");
        }
        "rollback" if past_no_return => {
            common::pgleap(target_args(&fx, "rollback", &["--yes"]))
                .refused("cannot be brought back");
            common::pgleap(upgrade_args(&fx, mode)).success();
            assert_new_up(&fx, &rows);
        }
        _ => {
            common::pgleap(target_args(&fx, "rollback", &[])).success();
            assert_old_back(&fx, &rows);
            assert!(
                !fx.new_datadir(NEW).exists(),
                "the new directory was not moved aside"
            );
            // The moved-aside copy is kept for inspection, and a new upgrade can start again.
            common::pgleap(upgrade_args(&fx, mode)).success();
            assert_new_up(&fx, &rows);
        }
    }
}

macro_rules! crash_tests {
    ($($name:ident: $point:expr, $mode:expr, $recovery:expr;)*) => {
        $(#[test] fn $name() { crash_then($point, $mode, $recovery); })*
    };
}

crash_tests! {
    killed_before_initdb_resumes: "before:initdb", "link", "resume";
    killed_after_initdb_rolls_back: "after:initdb", "link", "rollback";
    killed_after_carry_config_resumes: "after:carry-config", "link", "resume";
    killed_after_check_rolls_back: "after:check", "link", "rollback";
    killed_after_stop_old_resumes: "after:stop-old", "link", "resume";
    killed_after_stop_old_rolls_back: "after:stop-old", "link", "rollback";
    killed_after_pg_upgrade_link_resumes: "after:pg_upgrade", "link", "resume";
    killed_after_pg_upgrade_link_rolls_back: "after:pg_upgrade", "link", "rollback";
    killed_after_pg_upgrade_copy_rolls_back: "after:pg_upgrade", "copy", "rollback";
    killed_after_start_new_link_resumes: "after:start-new", "link", "resume";
    killed_after_start_new_link_cannot_roll_back: "after:start-new", "link", "rollback";
    killed_after_start_new_copy_rolls_back: "after:start-new", "copy", "rollback";
    killed_after_update_extensions_resumes: "after:update-extensions", "copy", "resume";
    killed_after_analyze_rolls_back_in_copy_mode: "after:analyze", "copy", "rollback";
}

/// pg_upgrade itself killed midway (link mode): automatic rollback restores the old cluster.
#[test]
fn pg_upgrade_killed_midway_rolls_back_automatically() {
    let (fx, rows) = fixture();
    let child = spawn_pgleap(&upgrade_args(&fx, "link"), &[]);
    let pgleap_pid = child.id();
    // Find pg_upgrade (not --check) running as pgleap's child, then kill it.
    wait_for("pg_upgrade to start", || {
        let Some(pid) = child_named(pgleap_pid, "pg_upgrade", "--check") else {
            return false;
        };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        true
    });
    let run = wait_run(child);
    assert_eq!(run.code(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("rolled back automatically"),
        "{}",
        run.stderr
    );
    assert_old_back(&fx, &rows);
    assert_eq!(journal(&fx, NEW).unwrap()["state"], "rolled-back");
    common::pgleap(upgrade_args(&fx, "link")).success();
    assert_new_up(&fx, &rows);
}

/// SIGKILL of pgleap while pg_upgrade runs: pg_upgrade dies with it; resume redoes it.
#[test]
fn pgleap_killed_during_pg_upgrade_resumes() {
    let (fx, rows) = fixture();
    let mut child = spawn_pgleap(&upgrade_args(&fx, "link"), &[]);
    let pgleap_pid = child.id();
    wait_for("pg_upgrade to start", || {
        child_named(pgleap_pid, "pg_upgrade", "--check").is_some()
    });
    child.kill().unwrap();
    let _ = child.wait();
    wait_for("pg_upgrade to die with pgleap", || {
        !any_process("pg_upgrade", &fx.datadir.display().to_string())
    });
    assert_eq!(journal(&fx, NEW).unwrap()["running"], "pg_upgrade");
    common::pgleap(upgrade_args(&fx, "link")).success();
    assert_new_up(&fx, &rows);
}

/// FIELD-FAILURES #1: the disk fills during a copy: clean failure, automatic rollback, old
/// cluster intact and running, and a later run is not blocked by a stale lock.
#[test]
fn disk_full_during_copy_rolls_back() {
    if !is_root() {
        eprintln!("skipped: needs root to mount a small tmpfs");
        return;
    }
    let (fx, _) = fixture();
    // pg_upgrade copies only user relations: make them larger than what will be left free.
    fx.sql(
        "postgres",
        "CREATE TABLE big AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 60000) g",
    );
    let rows = fx.checksums(OLD, fx.port);
    let small = fx.root.path().join("small");
    let _mount = common::Tmpfs::mount(&small, "300m", "0755");
    let new_dir = small.join("17");
    let gate = fx.root.path().join("go");
    let mut args = upgrade_args(&fx, "copy");
    args.extend(["--new-datadir".to_string(), new_dir.display().to_string()]);
    let spec = format!("before:pg_upgrade:pause={}", gate.display());
    let child = spawn_pgleap(&args, &[("PGLEAP_FAULT", spec.as_str())]);
    let jpath = small.join(".pgleap-17-16-to-17/journal.json");
    wait_for("the old server to stop", || {
        std::fs::read_to_string(&jpath).is_ok_and(|t| t.contains("\"state\": \"old-stopped\""))
    });
    // Another process eats the space pgleap counted on.
    let filler = small.join("filler");
    let free = nix::sys::statvfs::statvfs(&small).unwrap();
    let leave = 2 * 1024 * 1024;
    let size = (free.blocks_available() * free.fragment_size()).saturating_sub(leave);
    let status = Command::new("fallocate")
        .args(["-l", &size.to_string()])
        .arg(&filler)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(&gate, "").unwrap();
    let run = wait_run(child);
    assert_eq!(run.code(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("No space left on device") || run.stderr.contains("could not"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("rolled back automatically"),
        "{}",
        run.stderr
    );
    assert_old_back(&fx, &rows);
    assert!(!new_dir.exists());
    std::fs::remove_file(&filler).unwrap();
    // Nothing stale blocks the retry.
    pgleap_env(&args, &[]).success();
    assert_new_up(&fx, &rows);
}

/// Two upgrades of one cluster at once: exactly one proceeds.
#[test]
fn concurrent_upgrades_one_is_refused() {
    let (fx, rows) = fixture();
    let gate = fx.root.path().join("go");
    let spec = format!("after:initdb:pause={}", gate.display());
    let first = spawn_pgleap(
        &upgrade_args(&fx, "link"),
        &[("PGLEAP_FAULT", spec.as_str())],
    );
    wait_for("the first run to initdb", || {
        journal(&fx, NEW).is_some_and(|j| j["state"] == "new-initialized")
    });
    let second = common::pgleap(upgrade_args(&fx, "link"));
    second.refused(&format!(
        "another pgleap (pid {}) is working on an upgrade of",
        first.id()
    ));
    let status = common::pgleap(target_args(&fx, "status", &[]));
    assert!(
        status
            .stderr
            .contains(&format!("wait: pgleap (pid {})", first.id())),
        "{}",
        status.stderr
    );
    std::fs::write(&gate, "").unwrap();
    wait_run(first).success();
    assert_new_up(&fx, &rows);
}

/// SIGTERM (a Kubernetes stop) stops at the next step boundary and rolls back.
#[test]
fn sigterm_stops_at_the_next_safe_point_and_rolls_back() {
    let (fx, rows) = fixture();
    let gate = fx.root.path().join("go");
    let spec = format!("after:carry-config:pause={}", gate.display());
    let child = spawn_pgleap(
        &upgrade_args(&fx, "link"),
        &[("PGLEAP_FAULT", spec.as_str())],
    );
    wait_for("carry-config", || {
        journal(&fx, NEW).is_some_and(|j| j["state"] == "config-carried")
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&gate, "").unwrap();
    let run = wait_run(child);
    assert_eq!(run.code(), 130, "{}", run.stderr);
    assert!(
        run.stderr.contains("interrupted by a signal before check"),
        "{}",
        run.stderr
    );
    assert_old_back(&fx, &rows);
    assert_eq!(journal(&fx, NEW).unwrap()["state"], "rolled-back");
}

/// After a link-mode upgrade has started the new cluster, rollback is refused with the reason.
#[test]
fn rollback_refused_after_point_of_no_return_in_link_mode() {
    let (fx, rows) = fixture();
    common::pgleap(upgrade_args(&fx, "link")).success();
    let snap = common::snapshot(&fx.datadir);
    let run = common::pgleap(target_args(&fx, "rollback", &["--yes"]));
    run.refused("the new cluster has started after a --link upgrade: it shares its data files with the old cluster and has changed them, so the old cluster cannot be brought back");
    assert!(run.stderr.contains("restore a backup"), "{}", run.stderr);
    assert_eq!(
        snap,
        common::snapshot(&fx.datadir),
        "rollback changed the old directory"
    );
    assert_new_up(&fx, &rows);
}

/// Copy mode can roll back even after the new cluster served, and finalize removes the old.
#[test]
fn copy_mode_rolls_back_after_start_and_finalize_frees_space() {
    let (fx, rows) = fixture();
    common::pgleap(upgrade_args(&fx, "copy")).success();
    assert_new_up(&fx, &rows);
    common::pgleap(target_args(&fx, "rollback", &["--yes"])).success();
    assert_old_back(&fx, &rows);
    assert!(!fx.new_datadir(NEW).exists());
    common::pgleap(upgrade_args(&fx, "copy")).success();
    // Without a terminal and without --yes, finalize refuses and removes nothing.
    common::pgleap(target_args(&fx, "finalize", &[]))
        .refused("Run it on a terminal to confirm, or pass --yes");
    assert!(fx.datadir.exists());
    let run = common::pgleap(target_args(&fx, "finalize", &["--yes"]));
    run.success();
    assert!(run.stderr.contains("finalized: freed"), "{}", run.stderr);
    assert!(!fx.datadir.exists(), "old data directory still there");
    let ts = fx.tablespace.as_ref().unwrap();
    let left: Vec<String> = std::fs::read_dir(ts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter().all(|n| !n.starts_with("PG_16_")),
        "old tablespace subdirectory left: {left:?}"
    );
    assert_eq!(fx.checksums(NEW, fx.port), rows);
}

/// finalize refuses while the new cluster cannot start, and removes nothing.
#[test]
fn finalize_refused_while_new_cluster_unhealthy() {
    let (fx, _rows) = fixture();
    common::pgleap(upgrade_args(&fx, "copy")).success();
    let new_dir = fx.new_datadir(NEW);
    common::stop_server(NEW, &new_dir);
    let conf = new_dir.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\nshared_buffers = 'not a size'\n");
    std::fs::write(&conf, text).unwrap();
    let snap = common::snapshot(&fx.datadir);
    let run = common::pgleap(target_args(&fx, "finalize", &["--yes"]));
    run.refused(&format!(
        "the new cluster at {} is not healthy",
        new_dir.display()
    ));
    assert_eq!(snap, common::snapshot(&fx.datadir));
}

fn child_named(parent: u32, name: &str, not_arg: &str) -> Option<i32> {
    for e in std::fs::read_dir("/proc").ok()?.filter_map(Result::ok) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let parent_pid: u32 = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let argv0 = cmdline.split('\0').next().unwrap_or("");
        if parent_pid == parent
            && Path::new(argv0).file_name().is_some_and(|n| n == name)
            && !cmdline.contains(not_arg)
        {
            return Some(pid);
        }
    }
    None
}

fn any_process(name: &str, arg: &str) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| {
            let cmdline = std::fs::read_to_string(e.path().join("cmdline")).unwrap_or_default();
            let argv0 = cmdline.split('\0').next().unwrap_or("");
            Path::new(argv0).file_name().is_some_and(|n| n == name) && cmdline.contains(arg)
        })
}

/// Ctrl-C while pg_upgrade --link runs: pg_upgrade finishes (it runs in its own process
/// group), pgleap stops before the new cluster's first start, so the point of no return is
/// never crossed and the old cluster comes back on its own.
#[test]
fn sigint_during_link_pg_upgrade_rolls_back_before_the_point_of_no_return() {
    let (fx, rows) = fixture();
    let child = spawn_pgleap(&upgrade_args(&fx, "link"), &[]);
    let pid = child.id();
    wait_for("pg_upgrade to start", || {
        child_named(pid, "pg_upgrade", "--check").is_some()
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let run = wait_run(child);
    assert_eq!(run.code(), 130, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("interrupted by a signal before start-new"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("rolled back automatically"),
        "{}",
        run.stderr
    );
    let j = journal(&fx, NEW).unwrap();
    assert_eq!(j["state"], "rolled-back");
    assert_eq!(j["point_of_no_return"], false);
    assert_old_back(&fx, &rows);
}

/// Ctrl-C during `check` of a stopped cluster kills pg_upgrade --check at once and stops the
/// server it had started; nothing is left behind.
#[test]
fn sigint_during_check_leaves_nothing_running_or_behind() {
    let fx = Fixture::new(OLD).build();
    let parent = fx.datadir.parent().unwrap().to_path_buf();
    let child = spawn_pgleap(&fx.args("check", NEW, &[]), &[]);
    let pid = child.id();
    wait_for("pg_upgrade --check to start", || {
        child_named(pid, "pg_upgrade", "--no-such-arg").is_some()
    });
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let run = wait_run(child);
    assert_eq!(run.code(), 130, "{}", run.stderr);
    wait_for("the old server to be stopped", || {
        !fx.datadir.join("postmaster.pid").exists()
    });
    let left: Vec<String> = std::fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".pgleap-check-"))
        .collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
    assert!(
        !any_process("postgres", &parent.display().to_string()),
        "a server still runs below {}",
        parent.display()
    );
}

/// After finalize the old directory is gone; status still finds the upgrade from its path.
#[test]
fn status_after_finalize_needs_only_the_old_path() {
    let (fx, _rows) = fixture();
    common::pgleap(upgrade_args(&fx, "copy")).success();
    common::pgleap(target_args(&fx, "finalize", &["--yes"])).success();
    let run = common::pgleap(target_args(&fx, "status", &["--json"]));
    run.success();
    assert_eq!(run.json()["state"], "finalized");
    assert!(
        run.stderr
            .contains("next:      nothing: the upgrade is complete"),
        "{}",
        run.stderr
    );
}

/// pgleap killed inside its own ANALYZE, after it wrote statistics but before the journal
/// recorded the step: with the new server fenced (`--leave-stopped`), every transaction on it
/// is pgleap's, and rollback needs no `--discard-new-writes`.
#[test]
fn killed_within_analyze_of_a_fenced_new_cluster_rolls_back() {
    let (fx, rows) = fixture();
    let mut args = upgrade_args(&fx, "copy");
    args.push("--leave-stopped".into());
    let crashed = pgleap_env(&args, &[("PGLEAP_FAULT", "within:analyze")]);
    assert_eq!(crashed.status.signal(), Some(9), "{}", crashed.stderr);
    let j = journal(&fx, NEW).unwrap();
    assert_eq!(j["running"], "analyze", "{j}");
    // The orphaned new server still runs fenced, and ANALYZE wrote transactions on it.
    let pid = std::fs::read_to_string(fx.new_datadir(NEW).join("postmaster.pid")).unwrap();
    let socket = pid.lines().nth(4).unwrap().trim().to_string();
    assert!(socket.starts_with("/tmp/pgleap-"), "{pid}");
    assert_eq!(pid.lines().nth(5).map(str::trim), Some(""), "{pid}");
    let now = common::psql(
        NEW,
        Path::new(&socket),
        fx.port,
        "postgres",
        "postgres",
        "SELECT pg_catalog.txid_current() - 1",
    );
    let base = j["new_next_xid"].as_u64().unwrap();
    assert!(
        now.trim().parse::<u64>().unwrap() > base,
        "ANALYZE wrote no transaction ({now} after {base}): the test proves nothing"
    );

    let rolled = common::pgleap(target_args(&fx, "rollback", &[]));
    rolled.success();
    assert_old_back(&fx, &rows);
}

/// The same crash with the new server live (clients back at start-new): the transactions
/// since pgleap last counted may be clients', so rollback still refuses and changes nothing.
#[test]
fn killed_within_analyze_of_a_live_new_cluster_refuses_to_roll_back() {
    let (fx, _rows) = fixture();
    let crashed = pgleap_env(
        &upgrade_args(&fx, "copy"),
        &[("PGLEAP_FAULT", "within:analyze")],
    );
    assert_eq!(crashed.status.signal(), Some(9), "{}", crashed.stderr);
    let before = common::snapshot(&fx.datadir);
    let run = common::pgleap(target_args(&fx, "rollback", &["--yes"]));
    run.refused(&format!(
        "the new cluster at {} has run ",
        fx.new_datadir(NEW).display()
    ))
    .refused("counting those of pgleap's own interrupted analyze step); rolling back would lose");
    common::assert_unchanged(
        &before,
        &common::snapshot(&fx.datadir),
        "a refused rollback",
    );
    let v = fx.sql("postgres", "SHOW server_version_num");
    assert!(
        v.starts_with(&NEW.to_string()),
        "the new server still serves: {v}"
    );
}
