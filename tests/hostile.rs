//! A hostile cluster owner. pgleap runs as root inside directories that the cluster's owner
//! can write (the data directories, their parent, the work directory, tablespaces); anyone
//! who is the owner, or reaches a superuser's `COPY ... TO PROGRAM`, can plant files, links
//! and a forged journal there. Each test plants one attack as the owner, runs pgleap as
//! root, and asserts that nothing outside the owner's reach changed (a root-owned canary
//! stays as it was, no file is created as root where the owner pointed) and that the message
//! names what was planted.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Fixture, Run, as_owner, is_root, ok};

const OLD: u32 = 16;
const NEW: u32 = 17;

/// Skips a test that only means something as root (the suite runs as root in CI).
macro_rules! root_only {
    () => {
        if !is_root() {
            eprintln!("skipped: the hostile-owner tests need root");
            return;
        }
    };
}

/// A root-owned directory the owner cannot write, with one file in it: whatever pgleap does,
/// it must look exactly the same afterwards.
struct Canary {
    dir: tempfile::TempDir,
    before: BTreeMap<PathBuf, (u64, u32, u128)>,
    owners: BTreeMap<PathBuf, u32>,
}

impl Canary {
    fn new() -> Canary {
        let dir = tempfile::Builder::new()
            .prefix("pgleap-canary-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(dir.path().join("keep"), "root's own file\n").unwrap();
        std::fs::set_permissions(
            dir.path().join("keep"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let before = common::snapshot(dir.path());
        let owners = owners(dir.path());
        Canary {
            dir,
            before,
            owners,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("keep")
    }

    #[track_caller]
    fn assert_untouched(&self) {
        let after = common::snapshot(self.dir.path());
        assert_eq!(
            self.before,
            after,
            "the root-owned {} changed",
            self.dir.path().display()
        );
        assert_eq!(self.owners, owners(self.dir.path()), "owners changed");
        assert_eq!(
            std::fs::read_to_string(self.file()).unwrap(),
            "root's own file\n"
        );
    }
}

fn owners(dir: &Path) -> BTreeMap<PathBuf, u32> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| {
            (
                e.path().to_path_buf(),
                e.path().symlink_metadata().unwrap().uid(),
            )
        })
        .collect()
}

/// Every path below `dir` owned by root: an owner-controlled tree must hold none.
fn root_owned_below(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.depth() > 0)
        .filter(|e| e.path().symlink_metadata().is_ok_and(|m| m.uid() == 0))
        .map(|e| e.path().to_path_buf())
        .collect()
}

/// Runs a shell command as the cluster owner: how every attack is planted.
fn plant(script: &str) {
    ok(
        &as_owner(Path::new("/bin/sh"), &["-c", script]),
        &format!("planting as the owner: {script}"),
    );
}

fn work_dir(fx: &Fixture) -> PathBuf {
    let new = fx.new_datadir(NEW);
    let name = new.file_name().unwrap().to_string_lossy().into_owned();
    new.with_file_name(format!(".pgleap-{name}-{OLD}-to-{NEW}"))
}

fn journal(fx: &Fixture) -> serde_json::Value {
    let text = std::fs::read_to_string(work_dir(fx).join("journal.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The owner rewrites the journal (it is the owner's file).
fn forge_journal(fx: &Fixture, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut j = journal(fx);
    edit(&mut j);
    let path = work_dir(fx).join("journal.json");
    let forged = fx.root.path().join("forged.json");
    std::fs::write(&forged, serde_json::to_string_pretty(&j).unwrap()).unwrap();
    common::chown(&forged);
    plant(&format!(
        "cat '{}' > '{}' && rm '{}'",
        forged.display(),
        path.display(),
        forged.display()
    ));
}

fn pgleap_env(args: &[String], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgleap"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Run::from(cmd.output().unwrap())
}

fn spawn_pgleap(args: &[String], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgleap"));
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

fn wait_for(what: &str, f: impl FnMut() -> bool) {
    common::wait_for(what, Duration::from_secs(120), f);
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

/// An upgrade killed right after initdb: a journal in `new-initialized` for the owner to
/// tamper with, which a plain `pgleap upgrade` resumes.
fn crashed_after_initdb(fx: &Fixture) {
    let run = pgleap_env(
        &upgrade_args(fx, "copy"),
        &[("PGLEAP_FAULT", "after:initdb")],
    );
    assert_eq!(run.status.signal(), Some(9), "{}", run.stderr);
    assert_eq!(journal(fx)["state"], "new-initialized");
}

fn assert_old_server_back(fx: &Fixture) {
    let v = fx.sql("postgres", "SHOW server_version_num");
    assert!(v.starts_with(&OLD.to_string()), "old server answers as {v}");
}

/// A forged journal's hooks are never run: a resume refuses, naming the recorded hook
/// beside what this invocation gave (none).
#[test]
fn resume_refuses_forged_hooks() {
    root_only!();
    let fx = Fixture::new(OLD).build();
    let canary = Canary::new();
    crashed_after_initdb(&fx);
    let hook = format!("id -u > {}/pwned", canary.path().display());
    forge_journal(&fx, |j| {
        let host = &mut j["plan"]["host"];
        host["stop_command"] = hook.clone().into();
        host["start_command"] = hook.clone().into();
        let m = serde_json::json!({"kind": "hook", "command": hook});
        for side in ["old", "new"] {
            host[side]["start"] = m.clone();
            host[side]["stop"] = m.clone();
        }
    });
    let run = common::pgleap(upgrade_args(&fx, "copy"));
    run.refused(&format!("--stop-command {hook:?}"));
    assert!(run.stderr.contains("none given"), "{}", run.stderr);
    canary.assert_untouched();
    // Rollback does not obey them either.
    let run = common::pgleap(target_args(&fx, "rollback", &["--yes"]));
    run.refused(&format!("--stop-command {hook:?}"));
    // Given the recorded stop hook, the start hook still differs and is named.
    let mut args = target_args(&fx, "rollback", &["--yes"]);
    args.extend(["--stop-command".to_string(), hook.clone()]);
    let run = common::pgleap(&args);
    run.refused(&format!("--start-command {hook:?}"));
    canary.assert_untouched();
}

/// A journal naming root as the owner is not believed: the owner is whoever owns the old
/// data directory, and nothing below the fixture becomes root's.
#[test]
fn resume_refuses_a_forged_owner() {
    root_only!();
    let fx = Fixture::new(OLD).build();
    crashed_after_initdb(&fx);
    forge_journal(&fx, |j| {
        j["plan"]["owner"] =
            serde_json::json!({"uid": 0, "gid": 0, "name": "root", "home": "/root"});
    });
    let run = common::pgleap(upgrade_args(&fx, "copy"));
    run.refused("the journal names uid 0 (root) as the owner");
    assert!(
        run.stderr
            .contains(&format!("belongs to uid {}", common::owner().uid)),
        "{}",
        run.stderr
    );
    assert_eq!(root_owned_below(fx.root.path()), Vec::<PathBuf>::new());
}

/// A journal pointing the new data directory at a root-owned directory: resume (which undoes
/// the interrupted start before redoing it) removes nothing that lacks pgleap's proof.
#[test]
fn resume_and_rollback_leave_a_forged_new_datadir_alone() {
    root_only!();
    let fx = Fixture::new(OLD).build();
    let canary = Canary::new();
    crashed_after_initdb(&fx);
    forge_journal(&fx, |j| {
        j["plan"]["new"]["datadir"] = canary.path().display().to_string().into();
    });
    let run = common::pgleap(upgrade_args(&fx, "copy"));
    run.refused(&format!(
        "{} is not the cluster this upgrade created",
        canary.path().display()
    ));
    assert!(!run.stderr.contains("removed"), "{}", run.stderr);
    canary.assert_untouched();
    let run = common::pgleap(target_args(&fx, "rollback", &["--yes"]));
    run.refused(&format!(
        "{} is not the cluster this upgrade created",
        canary.path().display()
    ));
    canary.assert_untouched();
}

/// finalize takes the paths it removes from the host (the old cluster's own tablespace
/// links and layout), not from the journal: forged extra paths refuse, naming them.
#[test]
fn finalize_refuses_forged_paths() {
    root_only!();
    let fx = Fixture::new(OLD).build();
    let canary = Canary::new();
    std::fs::create_dir(canary.path().join(format!("PG_{OLD}_202307071"))).unwrap();
    let canary = Canary {
        before: common::snapshot(canary.path()),
        owners: owners(canary.path()),
        ..canary
    };
    common::pgleap(upgrade_args(&fx, "copy")).success();
    forge_journal(&fx, |j| {
        j["plan"]["tablespaces"] = serde_json::json!([canary.path()]);
    });
    let run = common::pgleap(target_args(&fx, "finalize", &["--yes"]));
    run.refused(&format!("{}", canary.path().display()));
    assert!(
        fx.datadir.join("PG_VERSION").exists(),
        "old cluster removed"
    );
    canary.assert_untouched();
}

/// The work directory planted as a symlink to a root-owned directory: refused, and the
/// directory is neither chowned nor chmodded nor written into.
#[test]
fn symlinked_work_directory_is_refused() {
    root_only!();
    let fx = Fixture::new(OLD).build();
    let canary = Canary::new();
    let wd = work_dir(&fx);
    plant(&format!(
        "ln -s '{}' '{}'",
        canary.path().display(),
        wd.display()
    ));
    let run = common::pgleap(upgrade_args(&fx, "copy"));
    assert_ne!(run.code(), 0, "{}", run.stderr);
    assert!(
        run.stderr.contains(&wd.display().to_string()),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("symbolic link"), "{}", run.stderr);
    canary.assert_untouched();
    assert!(!fx.new_datadir(NEW).exists());
}

/// The journal's temp file and the lock planted as symlinks to a root-only file: neither
/// is truncated, written or chowned through the link.
#[test]
fn symlinked_journal_temp_file_and_lock_are_not_followed() {
    root_only!();
    let fx = Fixture::new(OLD).running().build();
    let canary = Canary::new();
    crashed_after_initdb(&fx);
    let wd = work_dir(&fx);
    let file = canary.file();
    plant(&format!(
        "cd '{}' && ln -s '{}' .journal.json.tmp && rm -f lock && ln -s '{}' lock",
        wd.display(),
        file.display(),
        file.display()
    ));
    let run = common::pgleap(upgrade_args(&fx, "copy"));
    canary.assert_untouched();
    // Resumed or refused, the links stayed links to an untouched file.
    if run.code() == 0 {
        assert_eq!(
            fx.sql("postgres", "SHOW server_version_num")[..2].to_string(),
            NEW.to_string()
        );
    } else {
        assert!(run.stderr.contains("lock"), "{}", run.stderr);
    }
    assert_eq!(root_owned_below(fx.root.path()), Vec::<PathBuf>::new());
}

/// `server.key` symlinked to a root-only file: the owner never gets a readable copy of it; the
/// link is carried as a link.
#[test]
fn symlinked_server_key_is_not_copied_for_the_owner() {
    root_only!();
    let fx = Fixture::new(OLD).build();
    let canary = Canary::new();
    let secret = std::fs::read_to_string(canary.file()).unwrap();
    plant(&format!(
        "ln -s '{}' '{}/server.key'",
        canary.file().display(),
        fx.datadir.display()
    ));
    let run = common::pgleap(upgrade_args(&fx, "copy"));
    canary.assert_untouched();
    for e in walkdir::WalkDir::new(fx.root.path())
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
    {
        let text = std::fs::read(e.path()).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&text).contains(secret.trim()),
            "{} holds the root-only file's contents",
            e.path().display()
        );
    }
    // A link is carried as a link (it grants the owner nothing the owner could not make
    // itself), never as a copy: every server.key below the root is still a symbolic link.
    assert_eq!(run.code(), 0, "{}", run.stderr);
    let keys: Vec<_> = walkdir::WalkDir::new(fx.root.path())
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name() == "server.key")
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for k in &keys {
        assert!(k.path_is_symlink(), "{} is not a link", k.path().display());
        assert_eq!(std::fs::read_link(k.path()).unwrap(), canary.file());
    }
    assert_eq!(root_owned_below(fx.root.path()), Vec::<PathBuf>::new());
}

/// A `PG_<new>_*` directory already in a tablespace belongs to someone else: refused
/// before anything happens, and its file survives.
#[test]
fn existing_new_tablespace_directory_is_refused() {
    root_only!();
    let fx = Fixture::new(OLD).tablespace().build();
    let ts = fx.tablespace.clone().unwrap();
    let theirs = ts.join(format!("PG_{NEW}_202406281"));
    plant(&format!(
        "mkdir '{}' && echo other > '{}/keep'",
        theirs.display(),
        theirs.display()
    ));
    for cmd in ["check", "upgrade"] {
        let before = common::snapshot(fx.root.path());
        let run = common::pgleap(fx.args(cmd, NEW, &["--mode", "copy"]));
        run.refused(&format!("{} already exists", theirs.display()));
        assert!(
            run.stderr.contains("Nothing was changed."),
            "{}",
            run.stderr
        );
        assert_eq!(
            before,
            common::snapshot(fx.root.path()),
            "{cmd} changed files"
        );
    }
    assert_eq!(
        std::fs::read_to_string(theirs.join("keep")).unwrap(),
        "other\n"
    );
}

/// finalize never removes an old data directory while a server runs on it, nor one that
/// was started since the upgrade.
#[test]
fn finalize_refuses_while_the_old_cluster_runs_or_ran() {
    root_only!();
    let fx = Fixture::new(OLD).build();
    common::pgleap(upgrade_args(&fx, "copy")).success();
    // The old cluster, restarted on another port (copy mode allows it).
    let port = common::port().to_string();
    let log = fx.root.path().join("old-again.log");
    ok(
        &as_owner(
            &fx.bindir().join("pg_ctl"),
            &[
                "start",
                "-w",
                "-D",
                &fx.datadir.display().to_string(),
                "-l",
                &log.display().to_string(),
                "-o",
                &format!("-p {port}"),
            ],
        ),
        "starting the old cluster again",
    );
    let run = common::pgleap(target_args(&fx, "finalize", &["--yes"]));
    run.refused(&format!("a server is running on {}", fx.datadir.display()));
    assert!(fx.datadir.join("PG_VERSION").exists());
    fx.stop();
    let run = common::pgleap(target_args(&fx, "finalize", &["--yes"]));
    run.refused(&format!(
        "{} was started after the upgrade",
        fx.datadir.display()
    ));
    assert!(fx.datadir.join("PG_VERSION").exists());
}

/// Two upgrades of one cluster with different targets: the second is refused by the lock
/// on the old cluster itself and creates nothing.
#[test]
fn two_upgrades_of_one_cluster_are_refused() {
    root_only!();
    let fx = Fixture::new(OLD).running().build();
    let gate = fx.root.path().join("go");
    let spec = format!("after:initdb:pause={}", gate.display());
    let first = spawn_pgleap(
        &upgrade_args(&fx, "copy"),
        &[("PGLEAP_FAULT", spec.as_str())],
    );
    wait_for("the first run to initdb", || {
        std::fs::read_to_string(work_dir(&fx).join("journal.json"))
            .is_ok_and(|t| t.contains("\"state\": \"new-initialized\""))
    });
    let other = fx.root.path().join("elsewhere");
    let mut args = upgrade_args(&fx, "copy");
    args.extend(["--new-datadir".into(), other.display().to_string()]);
    let second = common::pgleap(&args);
    second.refused(&format!(
        "another pgleap (pid {}) is working on an upgrade of {}",
        first.id(),
        fx.datadir.display()
    ));
    assert!(
        !other.exists(),
        "the second run created {}",
        other.display()
    );
    std::fs::write(&gate, "").unwrap();
    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `check` while an upgrade holds the old cluster inside its window (old server stopped):
/// refused, and the old cluster is not started behind the upgrade's back.
#[test]
fn check_refuses_during_an_upgrade() {
    root_only!();
    let fx = Fixture::new(OLD).running().build();
    let gate = fx.root.path().join("go");
    let spec = format!("before:pg_upgrade:pause={}", gate.display());
    let first = spawn_pgleap(
        &upgrade_args(&fx, "copy"),
        &[("PGLEAP_FAULT", spec.as_str())],
    );
    wait_for("the old server to stop", || {
        std::fs::read_to_string(work_dir(&fx).join("journal.json"))
            .is_ok_and(|t| t.contains("\"state\": \"old-stopped\""))
    });
    let run = common::pgleap(fx.args("check", NEW, &[]));
    run.refused(&format!(
        "an upgrade of {} is in progress (pgleap pid {})",
        fx.datadir.display(),
        first.id()
    ));
    assert!(
        !fx.datadir.join("postmaster.pid").exists(),
        "check started the old cluster during the upgrade"
    );
    std::fs::write(&gate, "").unwrap();
    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Rollback brings the old server back first; a new cluster that cannot be removed (a
/// mount point inside it) becomes a note, not a down old server.
#[test]
fn rollback_restarts_the_old_server_even_when_discarding_fails() {
    root_only!();
    let fx = Fixture::new(OLD).running().build();
    common::pgleap(upgrade_args(&fx, "copy")).success();
    let mnt = fx.new_datadir(NEW).join("busy");
    let mount = common::Tmpfs::mount(&mnt, "1m", "0755");
    let run = common::pgleap(target_args(&fx, "rollback", &["--yes"]));
    drop(mount);
    assert_old_server_back(&fx);
    assert!(
        run.stderr.contains("could not remove")
            && run
                .stderr
                .contains(&fx.new_datadir(NEW).display().to_string()),
        "{}",
        run.stderr
    );
    let status = common::pgleap(target_args(&fx, "status", &["--json"]));
    assert_eq!(status.json()["state"], "rolled-back", "{}", status.stdout);
}

/// A PostgreSQL installation the owner can write would let the owner choose what root runs:
/// refused, naming it.
#[test]
fn owner_writable_bindir_is_refused() {
    root_only!();
    let fx = Fixture::new(OLD).build();
    let bin = fx.root.path().join("bin");
    plant(&format!("mkdir '{}'", bin.display()));
    for e in std::fs::read_dir(common::bindir(NEW)).unwrap() {
        let e = e.unwrap();
        plant(&format!(
            "ln -s '{}' '{}'",
            e.path().display(),
            bin.join(e.file_name()).display()
        ));
    }
    let args = vec![
        "check".to_string(),
        "--old-datadir".into(),
        fx.datadir.display().to_string(),
        "--old-bindir".into(),
        fx.bindir().display().to_string(),
        "--new-bindir".into(),
        bin.display().to_string(),
    ];
    let before = common::snapshot(fx.root.path());
    let run = common::pgleap(&args);
    run.refused(&format!("{} is writable by", bin.display()));
    assert_eq!(before, common::snapshot(fx.root.path()));
}

/// The owner re-exec (`__db`) works when pgleap lives where only root can read: a
/// root-owned copy the owner can run but not replace.
#[test]
fn runs_from_a_root_only_directory() {
    root_only!();
    let fx = Fixture::new(OLD).running().build();
    let private = tempfile::Builder::new()
        .prefix("pgleap-private-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(
        private.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let exe = private.path().join("pgleap");
    std::fs::copy(env!("CARGO_BIN_EXE_pgleap"), &exe).unwrap();
    let out = Command::new(&exe)
        .args(fx.args("check", NEW, &[]))
        .output()
        .unwrap();
    let run = Run::from(out);
    run.success();
    assert_eq!(root_owned_below(fx.root.path()), Vec::<PathBuf>::new());
}

/// Link mode: a new cluster moved aside at rollback has data files hard-linked into the
/// restored old cluster; its control file is disabled first, and the report says why.
#[test]
fn link_mode_cluster_moved_aside_cannot_start() {
    root_only!();
    let fx = Fixture::new(OLD).running().build();
    let run = pgleap_env(
        &upgrade_args(&fx, "link"),
        &[("PGLEAP_FAULT", "after:pg_upgrade")],
    );
    assert_eq!(run.status.signal(), Some(9), "{}", run.stderr);
    let run = common::pgleap(target_args(&fx, "rollback", &[]));
    run.success();
    assert!(
        run.stderr.contains("renamed to pg_control.disabled"),
        "{}",
        run.stderr
    );
    assert_old_server_back(&fx);
    let aside: Vec<PathBuf> = std::fs::read_dir(fx.root.path().join("data"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".rolled-back-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(!aside[0].join("global/pg_control").exists());
    assert!(aside[0].join("global/pg_control.disabled").exists());
}

fn pgleap_within_a_minute(args: &[String]) -> Run {
    common::pgleap_within(args, Duration::from_secs(60))
}

/// A FIFO or a link planted as `postmaster.pid` (where root reads the server's pid and
/// state): refused by name, without hanging on the FIFO or reading what the link names.
#[test]
fn planted_fifo_or_link_as_postmaster_pid_is_refused() {
    root_only!();
    let fx = Fixture::new(OLD).build();
    let canary = Canary::new();
    let pid_file = fx.datadir.join("postmaster.pid");
    plant(&format!("mkfifo '{}'", pid_file.display()));
    let before = common::snapshot(fx.root.path());
    for cmd in ["check", "upgrade"] {
        let run = pgleap_within_a_minute(&fx.args(cmd, NEW, &[]));
        run.refused(&format!(
            "refused: {} is not what PostgreSQL writes there: it is a FIFO, not a regular file",
            pid_file.display()
        ));
        assert!(
            run.stderr.contains("remove") && run.stderr.contains("as the cluster owner"),
            "{}",
            run.stderr
        );
    }
    common::assert_unchanged(&before, &common::snapshot(fx.root.path()), "a refused run");
    // A link to a root-only file (here the canary) is not followed either.
    plant(&format!(
        "rm '{}' && ln -s '{}' '{}'",
        pid_file.display(),
        canary.file().display(),
        pid_file.display()
    ));
    let before = common::snapshot(fx.root.path());
    pgleap_within_a_minute(&fx.args("check", NEW, &[])).refused(&format!(
        "refused: {} is not what PostgreSQL writes there: it is a symbolic link, not a regular file",
        pid_file.display()
    ));
    common::assert_unchanged(&before, &common::snapshot(fx.root.path()), "a refused run");
    canary.assert_untouched();
    assert_eq!(root_owned_below(fx.root.path()), Vec::<PathBuf>::new());
}

/// A FIFO planted as the new server's socket lock file, in a socket directory the owner can
/// write: the new server would hang creating its socket inside the window. `check` refuses it
/// before anything changes, without hanging itself.
#[test]
fn planted_fifo_as_socket_lock_file_is_refused() {
    root_only!();
    let fx = Fixture::new(OLD).build();
    let lock = fx.socket.join(format!(".s.PGSQL.{}.lock", fx.port));
    plant(&format!("mkfifo '{}'", lock.display()));
    let before = common::snapshot(fx.root.path());
    pgleap_within_a_minute(&fx.args("check", NEW, &[])).refused(&format!(
        "refused: {} is not the socket lock file PostgreSQL writes: it is a FIFO, not a regular file",
        lock.display()
    ));
    common::assert_unchanged(
        &before,
        &common::snapshot(fx.root.path()),
        "a refused check",
    );
    assert_eq!(root_owned_below(fx.root.path()), Vec::<PathBuf>::new());
}

/// A FIFO planted as `PG_VERSION`: not a data directory, said at once.
#[test]
fn planted_fifo_as_pg_version_is_refused() {
    root_only!();
    let fx = Fixture::new(OLD).build();
    let version = fx.datadir.join("PG_VERSION");
    plant(&format!(
        "rm '{}' && mkfifo '{}'",
        version.display(),
        version.display()
    ));
    let before = common::snapshot(fx.root.path());
    pgleap_within_a_minute(&fx.args("check", NEW, &[])).refused(&format!(
        "refused: {} is not a PostgreSQL data directory: its PG_VERSION is not what initdb writes (it is a FIFO, not a regular file)",
        fx.datadir.display()
    ));
    common::assert_unchanged(
        &before,
        &common::snapshot(fx.root.path()),
        "a refused check",
    );
}

/// FIFOs planted as the work directory's lock and as the new cluster's `global/pg_control`,
/// which root opens to see who holds the upgrade and to prove the new cluster's identity:
/// `check`, `status` and `rollback` end (refusing or going back) instead of hanging in
/// `open`, and nothing outside the owner's reach changes.
#[test]
fn planted_fifos_as_lock_and_control_file_do_not_hang_root() {
    root_only!();
    let fx = Fixture::new(OLD).running().build();
    let canary = Canary::new();
    crashed_after_initdb(&fx);
    let lock = work_dir(&fx).join("lock");
    let control = fx.new_datadir(NEW).join("global/pg_control");
    plant(&format!(
        "rm -f '{}' && mkfifo '{}' && rm '{}' && mkfifo '{}'",
        lock.display(),
        lock.display(),
        control.display(),
        control.display()
    ));
    let minute = Duration::from_secs(60);
    common::pgleap_within(&fx.args("check", NEW, &[]), minute).refused(&format!(
        "{} exists and is not empty",
        fx.new_datadir(NEW).display()
    ));
    let status = common::pgleap_within(&target_args(&fx, "status", &[]), minute);
    assert!(
        status.stdout.contains("new-initialized") || status.stderr.contains("new-initialized"),
        "{}\n{}",
        status.stdout,
        status.stderr
    );
    let rollback = common::pgleap_within(&target_args(&fx, "rollback", &[]), minute);
    assert!(
        rollback.stderr.contains(&format!(
            "{} is not a plain file of postgres with a single name; pgleap does not follow it",
            lock.display()
        )),
        "{}",
        rollback.stderr
    );
    // With the lock gone, rollback reaches the identity proof of the new cluster.
    plant(&format!("rm '{}'", lock.display()));
    let rollback = common::pgleap_within(&target_args(&fx, "rollback", &[]), minute);
    eprintln!(
        "ROLLBACK {} {}{}",
        rollback.code(),
        rollback.stdout,
        rollback.stderr
    );
    assert_old_server_back(&fx);
    canary.assert_untouched();
    assert_eq!(root_owned_below(fx.root.path()), Vec::<PathBuf>::new());
}
