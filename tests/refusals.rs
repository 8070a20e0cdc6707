//! Preflight refusals: one test per refusal of the issue. Each runs the real binary against a
//! real cluster and holds pgleap to its promise: exit 3, a message naming the problem and the
//! fix, and nothing on disk changed (no file below the fixture root gains, loses or changes
//! size, mode or mtime, and the new data directory is never created).

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Fixture, Run, bindir};

/// Both subcommands: `check` and `upgrade` share the preflight and must refuse alike.
const BOTH: [&str; 2] = ["check", "upgrade"];

use common::{Snapshot, assert_unchanged};

/// Runs pgleap with `args`, asserts a refusal quoting `message`, that nothing below `root`
/// changed and that `new_datadir` was not created.
#[track_caller]
fn assert_refused(root: &Path, args: &[String], message: &str, new_datadir: &Path) -> Run {
    let before = common::snapshot(root);
    let run = common::pgleap(args);
    run.refused(message);
    assert!(
        run.stderr.contains("Nothing was changed."),
        "a refusal says nothing was changed:\n{}",
        run.stderr
    );
    assert_unchanged(&before, &common::snapshot(root), &args[0]);
    assert!(
        !new_datadir.exists(),
        "{} refused but created {}",
        args[0],
        new_datadir.display()
    );
    run
}

/// `fx.args` plus an explicit `--new-datadir`.
fn args_to(
    fx: &Fixture,
    cmd: &str,
    new_major: u32,
    new_datadir: &Path,
    extra: &[&str],
) -> Vec<String> {
    let mut a = fx.args(cmd, new_major, extra);
    a.push("--new-datadir".into());
    a.push(new_datadir.display().to_string());
    a
}

fn skip_unless_root(test: &str) -> bool {
    if common::is_root() {
        return false;
    }
    eprintln!("skipping {test}: needs root");
    true
}

// 1. The old data directory: missing, not a data directory, unreadable.

#[test]
fn refuses_missing_old_datadir() {
    let root = tempfile::tempdir().unwrap();
    let old = root.path().join("data/16");
    let new = root.path().join("data/17");
    for cmd in BOTH {
        let args = vec![
            cmd.to_string(),
            "--old-datadir".into(),
            old.display().to_string(),
            "--new-bindir".into(),
            bindir(17).display().to_string(),
        ];
        assert_refused(
            root.path(),
            &args,
            &format!(
                "refused: {} does not exist. Pass --old-datadir with the directory that holds PG_VERSION",
                old.display()
            ),
            &new,
        );
    }
}

#[test]
fn refuses_directory_without_pg_version() {
    let root = tempfile::tempdir().unwrap();
    let old = root.path().join("data/16");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("postgresql.conf"), "port = 5432\n").unwrap();
    let new = root.path().join("data/17");
    for cmd in BOTH {
        let args = vec![
            cmd.to_string(),
            "--old-datadir".into(),
            old.display().to_string(),
            "--new-bindir".into(),
            bindir(17).display().to_string(),
        ];
        assert_refused(
            root.path(),
            &args,
            &format!(
                "refused: {} is not a PostgreSQL data directory (no PG_VERSION). Pass --old-datadir",
                old.display()
            ),
            &new,
        );
    }
}

/// An unprivileged user other than the cluster owner.
fn nobody() -> nix::unistd::User {
    nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody exists")
}

/// The pgleap binary where any user may run it (the target directory may be private).
struct SharedBinary {
    dir: tempfile::TempDir,
}

impl SharedBinary {
    fn new() -> SharedBinary {
        let dir = tempfile::Builder::new()
            .prefix("pgleap-bin-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let to = dir.path().join("pgleap");
        let from = Path::new(env!("CARGO_BIN_EXE_pgleap"));
        if std::fs::hard_link(from, &to).is_err() {
            std::fs::copy(from, &to).unwrap();
        }
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
        SharedBinary { dir }
    }

    /// Runs pgleap as `user`, like `common::pgleap` does as the current user.
    fn run_as(&self, user: &nix::unistd::User, args: &[String]) -> Run {
        let out = Command::new(self.dir.path().join("pgleap"))
            .args(args)
            .env_remove("PGLEAP_OLD_DATADIR")
            .env_remove("PGLEAP_NEW_DATADIR")
            .current_dir("/")
            .uid(user.uid.as_raw())
            .gid(user.gid.as_raw())
            .output()
            .unwrap();
        Run::from(out)
    }
}

/// Runs pgleap as `nobody` and asserts the refusal changed nothing.
#[track_caller]
fn assert_refused_as_nobody(fx: &Fixture, message: &str) {
    let bin = SharedBinary::new();
    let new = fx.new_datadir(17);
    for cmd in BOTH {
        let before = common::snapshot(fx.root.path());
        let run = bin.run_as(&nobody(), &fx.args(cmd, 17, &[]));
        run.refused(message);
        assert_unchanged(&before, &common::snapshot(fx.root.path()), cmd);
        assert!(!new.exists());
    }
}

/// The data directory's parent is 0700 and belongs to the owner: another user cannot even see
/// the data directory, let alone who owns it.
#[test]
fn refuses_unreadable_old_datadir() {
    if skip_unless_root("refuses_unreadable_old_datadir") {
        return;
    }
    let fx = Fixture::new(16).build();
    std::fs::set_permissions(
        fx.datadir.parent().unwrap(),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    assert_refused_as_nobody(
        &fx,
        &format!(
            "refused: cannot read {}: Permission denied (os error 13). Run pgleap as root or as the data directory's owner.",
            fx.datadir.display()
        ),
    );
}

// 2. The new major must be newer.

#[test]
fn refuses_same_major() {
    let fx = Fixture::new(17).build();
    for cmd in BOTH {
        assert_refused(
            fx.root.path(),
            &args_to(&fx, cmd, 17, &fx.root.path().join("data/17-new"), &[]),
            &format!(
                "refused: {} is PostgreSQL 17 and {} is PostgreSQL 17, the same major: pg_upgrade only moves to a newer major. Pass --new-bindir or --new-version with a major newer than 17",
                fx.datadir.display(),
                bindir(17).display()
            ),
            &fx.root.path().join("data/17-new"),
        );
    }
}

#[test]
fn refuses_downgrade() {
    let fx = Fixture::new(17).build();
    for cmd in BOTH {
        assert_refused(
            fx.root.path(),
            &fx.args(cmd, 16, &[]),
            &format!(
                "refused: {} is PostgreSQL 17 and {} is PostgreSQL 16, an older major: pg_upgrade only moves to a newer major. Pass --new-bindir or --new-version with a major newer than 17",
                fx.datadir.display(),
                bindir(16).display()
            ),
            &fx.new_datadir(16),
        );
    }
}

// 3. Bindirs: complete, and of the data directory's major.

/// A bindir holding symlinks to the programs of `major`'s bindir, except `left_out`.
fn partial_bindir(major: u32, left_out: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(bindir(major)).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if !left_out.iter().any(|l| name == *l) {
            std::os::unix::fs::symlink(entry.path(), dir.path().join(&name)).unwrap();
        }
    }
    dir
}

/// `args` with the value of `flag` replaced.
fn with_flag(mut args: Vec<String>, flag: &str, value: &Path) -> Vec<String> {
    let i = args.iter().position(|a| a == flag).unwrap();
    args[i + 1] = value.display().to_string();
    args
}

#[test]
fn refuses_incomplete_bindirs() {
    let fx = Fixture::new(16).build();
    let new = partial_bindir(17, &["initdb", "pg_upgrade"]);
    let old = partial_bindir(16, &["postgres"]);
    for cmd in BOTH {
        assert_refused(
            fx.root.path(),
            &with_flag(fx.args(cmd, 17, &[]), "--new-bindir", new.path()),
            &format!(
                "refused: {} lacks initdb, pg_upgrade. Install the full server package for that major (on Debian postgresql-N, on RHEL postgresqlN-server), or pass --new-bindir.",
                new.path().display()
            ),
            &fx.new_datadir(17),
        );
        assert_refused(
            fx.root.path(),
            &with_flag(fx.args(cmd, 17, &[]), "--old-bindir", old.path()),
            &format!(
                "refused: {} lacks postgres. Install the full server package for that major (on Debian postgresql-N, on RHEL postgresqlN-server), or pass --old-bindir.",
                old.path().display()
            ),
            &fx.new_datadir(17),
        );
    }
}

#[test]
fn refuses_old_bindir_of_another_major() {
    let fx = Fixture::new(16).build();
    for cmd in BOTH {
        assert_refused(
            fx.root.path(),
            &with_flag(fx.args(cmd, 17, &[]), "--old-bindir", &bindir(15)),
            &format!(
                "refused: {} is PostgreSQL 15, but {} holds a PostgreSQL 16 cluster. Pass --old-bindir with the bin directory of PostgreSQL 16",
                bindir(15).display(),
                fx.datadir.display()
            ),
            &fx.new_datadir(17),
        );
    }
}

#[test]
fn refuses_new_version_that_disagrees_with_new_bindir() {
    let fx = Fixture::new(16).build();
    for cmd in BOTH {
        assert_refused(
            fx.root.path(),
            &fx.args(cmd, 17, &["--new-version", "18"]),
            &format!(
                "refused: --new-bindir {} holds PostgreSQL 17, but --new-version (or PGLEAP_NEW_VERSION) asks for 18. Drop one of them, or make them name the same major",
                bindir(17).display()
            ),
            &fx.new_datadir(17),
        );
    }
    // When they agree, --new-version is only a check.
    fx.pgleap(fx.args("check", 17, &["--new-version", "17"]))
        .success();
}

// 4. The target must be absent or empty.

#[test]
fn refuses_target_that_is_not_empty() {
    let fx = Fixture::new(16).build();
    let new = fx.new_datadir(17);
    std::fs::create_dir(&new).unwrap();
    std::fs::write(new.join("leftover"), "from an earlier attempt\n").unwrap();
    for cmd in BOTH {
        let before = common::snapshot(fx.root.path());
        let run = fx.pgleap(fx.args(cmd, 17, &[]));
        run.refused(&format!(
            "refused: {} exists and is not empty (1 entry). Remove it or pass --new-datadir",
            new.display()
        ));
        assert_unchanged(&before, &common::snapshot(fx.root.path()), cmd);
        assert_eq!(
            std::fs::read_dir(&new).unwrap().count(),
            1,
            "the target keeps exactly what it had"
        );
    }
}

// 5 and 6. Filesystems: free space for the mode, one filesystem for link, clone and swap.

/// Parses `needs 134.2 MiB, 8.0 MiB free` out of the refusal.
fn needs_and_free(stderr: &str) -> (String, String) {
    let rest = &stderr[stderr.find(": needs ").expect("needs ...") + ": needs ".len()..];
    let (needs, rest) = rest.split_once(", ").unwrap();
    let free = rest.split_once(" free").unwrap().0;
    (needs.to_string(), free.to_string())
}

#[test]
fn refuses_copy_without_free_space() {
    if skip_unless_root("refuses_copy_without_free_space") {
        return;
    }
    let fx = Fixture::new(16).build();
    // Declared after the fixture: dropped (unmounted) before the fixture removes its root.
    let Some(small) = common::Tmpfs::try_mount(&fx.root.path().join("small"), "8m", "0755")
        .map_err(|e| eprintln!("{e}"))
        .ok()
    else {
        eprintln!("skipping refuses_copy_without_free_space: cannot mount tmpfs");
        return;
    };
    let new = small.path.join("17");
    for cmd in BOTH {
        let run = assert_refused(
            fx.root.path(),
            &args_to(&fx, cmd, 17, &new, &["--mode", "copy"]),
            &format!(
                "refused: not enough free space for --mode copy on the filesystem of {}: needs ",
                new.display()
            ),
            &new,
        );
        let (needs, free) = needs_and_free(&run.stderr);
        assert_eq!(free, "8.0 MiB", "{}", run.stderr);
        assert!(
            needs.ends_with(" MiB") && needs.trim_end_matches(" MiB").parse::<f64>().unwrap() > 8.0,
            "needs {needs}: {}",
            run.stderr
        );
        // link and clone cannot help across filesystems: the fix must not suggest them.
        assert!(
            run.stderr.contains(
                "8.0 MiB free. Free space there, or pass --new-datadir on a filesystem with room"
            ),
            "{}",
            run.stderr
        );
    }
}

/// True when the postmaster of `datadir` is the same live process as before.
fn still_running(fx: &Fixture, pid: i32) {
    let text = std::fs::read_to_string(fx.datadir.join("postmaster.pid")).unwrap();
    assert_eq!(text.lines().next().unwrap().trim(), pid.to_string());
    assert_eq!(fx.sql("postgres", "SELECT 1").trim(), "1");
}

fn postmaster_pid(fx: &Fixture) -> i32 {
    std::fs::read_to_string(fx.datadir.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A refusal comes before the old server is stopped: it keeps serving.
#[test]
fn refuses_link_across_filesystems_while_old_runs() {
    if skip_unless_root("refuses_link_across_filesystems_while_old_runs") {
        return;
    }
    let fx = Fixture::new(16).running().build();
    let pid = postmaster_pid(&fx);
    let Some(other) = common::Tmpfs::try_mount(&fx.root.path().join("other"), "1g", "0755")
        .map_err(|e| eprintln!("{e}"))
        .ok()
    else {
        eprintln!("skipping refuses_link_across_filesystems_while_old_runs: cannot mount tmpfs");
        return;
    };
    let new = other.path.join("17");
    for cmd in BOTH {
        assert_refused(
            fx.root.path(),
            &args_to(&fx, cmd, 17, &new, &["--mode", "link"]),
            &format!(
                "refused: --mode link needs one filesystem, but {} and {} are on different filesystems. Use --mode copy, or pass --new-datadir on the old data directory's filesystem",
                fx.datadir.display(),
                new.display()
            ),
            &new,
        );
        still_running(&fx, pid);
    }
}

// Modes the target's pg_upgrade does not have.

#[test]
fn refuses_swap_before_18() {
    let fx = Fixture::new(16).build();
    for cmd in BOTH {
        assert_refused(
            fx.root.path(),
            &fx.args(cmd, 17, &["--mode", "swap"]),
            "refused: --mode swap needs PostgreSQL 18 or newer as the target, not 17. Choose --mode link, copy or clone",
            &fx.new_datadir(17),
        );
    }
}

#[test]
fn refuses_copy_file_range_before_17() {
    let fx = Fixture::new(15).build();
    for cmd in BOTH {
        assert_refused(
            fx.root.path(),
            &fx.args(cmd, 16, &["--mode", "copy-file-range"]),
            "refused: --mode copy-file-range needs PostgreSQL 17 or newer as the target, not 16. Choose --mode link, copy or clone",
            &fx.new_datadir(16),
        );
    }
}

/// `/srv/pgdata` names no major: there is no safe sibling to guess.
#[test]
fn refuses_to_guess_new_datadir() {
    let fx = Fixture::new(16).layout("pgdata").build();
    for cmd in BOTH {
        let run = assert_refused(
            fx.root.path(),
            &fx.args(cmd, 17, &[]),
            &format!(
                "refused: cannot choose the new data directory: no component of {} names the old major 16. Pass --new-datadir",
                fx.datadir.display()
            ),
            &fx.root.path().join("17"),
        );
        assert!(!run.stderr.contains("Plan:"), "{}", run.stderr);
    }
}

// 7. Ownership.

#[test]
fn refuses_datadir_owned_by_root() {
    if skip_unless_root("refuses_datadir_owned_by_root") {
        return;
    }
    let fx = Fixture::new(16).build();
    let out = Command::new("chown")
        .args(["-R", "0:0"])
        .arg(&fx.datadir)
        .output()
        .unwrap();
    common::ok(&out, "chown -R root");
    for cmd in BOTH {
        assert_refused(
            fx.root.path(),
            &fx.args(cmd, 17, &[]),
            &format!(
                "refused: {d} is owned by root; PostgreSQL refuses to run as root. chown -R the directory to the user that runs the server (for example chown -R postgres: {d})",
                d = fx.datadir.display()
            ),
            &fx.new_datadir(17),
        );
    }
}

/// Another unprivileged user can see the data directory (its parents are 0755) but not read
/// it: pgleap names the owner to run as.
#[test]
fn refuses_wrong_user() {
    if skip_unless_root("refuses_wrong_user") {
        return;
    }
    let fx = Fixture::new(16).build();
    for dir in [fx.root.path(), fx.datadir.parent().unwrap()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let owner = common::owner();
    let me = nobody();
    assert_refused_as_nobody(
        &fx,
        &format!(
            "refused: {} belongs to uid {} ({}), but pgleap runs as uid {} (nobody). Run pgleap as root (it runs PostgreSQL as {}) or as {}",
            fx.datadir.display(),
            owner.uid,
            owner.name,
            me.uid,
            owner.name,
            owner.name
        ),
    );
}

// 8. A crashed old cluster: check warns and refuses nothing.

/// Pids whose parent is `postmaster` (its children).
fn children_of(postmaster: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(child) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if parent == Some(postmaster) {
            out.push(child);
        }
    }
    out
}

/// Gone, or a zombie nobody has reaped yet.
fn gone(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X")
    })
}

#[test]
fn check_warns_about_crashed_cluster() {
    let fx = Fixture::new(16).running().build();
    let pid = postmaster_pid(&fx);
    let children = children_of(pid);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(gone(pid) && children.iter().all(|c| gone(*c))) {
        assert!(Instant::now() < deadline, "postmaster {pid} did not die");
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = common::snapshot(fx.root.path());
    let run = fx.pgleap(fx.args("check", 17, &[]));
    run.success();
    assert!(
        run.stderr
            .contains("warning: the old cluster was not shut down cleanly (state: in production)"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("pgleap upgrade runs crash recovery"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("check incomplete: the static checks passed")
            && !run.stderr.contains("check passed"),
        "a check that skipped pg_upgrade --check must not claim it passed:\n{}",
        run.stderr
    );
    assert_unchanged(&before, &common::snapshot(fx.root.path()), "check");
    assert!(!fx.new_datadir(17).exists());
}

// 9. Extensions the new installation lacks.

/// A copy of PostgreSQL 17 without hstore, readable by the cluster owner.
fn install_without_hstore() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("pgleap-pg17-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let prefix = bindir(17).parent().unwrap().to_path_buf();
    let out = Command::new("cp")
        .arg("-a")
        .arg(&prefix)
        .arg(dir.path().join("17"))
        .output()
        .unwrap();
    common::ok(&out, "cp -a");
    let copy = dir.path().join("17");
    for e in std::fs::read_dir(copy.join("share/extension")).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().starts_with("hstore") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    std::fs::remove_file(copy.join("lib/hstore.so")).unwrap();
    dir
}

/// What of a snapshot a refusal answers for while the old server runs and pgleap reads its
/// catalog. Reading it is a client's work, and the server does its own bookkeeping for every
/// client; observed, and left out here:
/// - `pg_internal.init` (relcache init files) are written by backends that find none: the
///   catalog read is the first connection to template1 since the fixture was built.
/// - mtimes inside the data directory: the reading backends prune dead catalog tuples left by
///   the fixture's CREATE EXTENSION (Heap2 PRUNE records in `pg_wal`), and the server writes
///   the dirtied pages back whenever its checkpointer or background writer decides.
/// - the server's log file: it notes the catalog reader's connections ("could not receive
///   data from client: Connection reset by peer": `pgleap __db` exits without closing them).
///
/// Everything else stays exact: no file below the fixture root may appear, vanish, or change
/// size or mode, and nothing outside the data directory may change at all.
fn live_view(fx: &Fixture, snapshot: Snapshot) -> Snapshot {
    let datadir = fx.datadir.strip_prefix(fx.root.path()).unwrap();
    let log = PathBuf::from(format!("server-{}.log", fx.major));
    snapshot
        .into_iter()
        .filter(|(path, _)| {
            *path != log && path.file_name().is_none_or(|n| n != "pg_internal.init")
        })
        .map(|(path, (size, mode, mtime))| {
            let mtime = if path.starts_with(datadir) { 0 } else { mtime };
            (path, (size, mode, mtime))
        })
        .collect()
}

/// The old server must be read for this one: it runs, and keeps running.
#[test]
fn refuses_extension_missing_in_new_install() {
    let fx = Fixture::new(16).rich().running().build();
    let pid = postmaster_pid(&fx);
    let install = install_without_hstore();
    let new_bindir = install.path().join("17/bin");
    for cmd in BOTH {
        let args = with_flag(fx.args(cmd, 17, &[]), "--new-bindir", &new_bindir);
        let before = live_view(&fx, common::snapshot(fx.root.path()));
        let run = fx.pgleap(&args);
        run.refused(&format!(
            "extension hstore 1.8 (database app) is not installed for PostgreSQL 17: {} is missing. Install the package that ships hstore.control for PostgreSQL 17 (its name varies by distribution and project), or DROP EXTENSION hstore in database app",
            install.path().join("17/share/extension/hstore.control").display()
        ));
        run.refused(&format!(
            "library $libdir/hstore (used by functions in database app) is missing for PostgreSQL 17: {} does not exist",
            install.path().join("17/lib/hstore.so").display()
        ));
        assert!(
            !run.stderr.contains("pg_trgm"),
            "only what is missing is listed:\n{}",
            run.stderr
        );
        assert_unchanged(
            &before,
            &live_view(&fx, common::snapshot(fx.root.path())),
            cmd,
        );
        assert!(!fx.new_datadir(17).exists());
        still_running(&fx, pid);
    }
}

// 10. pg_upgrade --check fails: its finding is quoted and its report kept.

/// Removes a directory when dropped.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where the refusal says pg_upgrade's report files are.
fn report_dir(stderr: &str) -> PathBuf {
    let from = stderr
        .find("Its report files are in ")
        .expect("report location")
        + "Its report files are in ".len();
    let rest = &stderr[from..];
    PathBuf::from(rest[..rest.find(".\n").unwrap_or(rest.len())].trim_end_matches('.'))
}

#[test]
fn refuses_when_pg_upgrade_check_fails() {
    // A database that allows no connections: pgleap's own preflight does not look for it,
    // pg_upgrade --check does.
    let fx = Fixture::new(16).running().build();
    fx.sql("postgres", "CREATE DATABASE closed");
    fx.sql("postgres", "ALTER DATABASE closed ALLOW_CONNECTIONS false");
    fx.stop();
    let new = fx.new_datadir(17);
    for cmd in BOTH {
        let run = fx.pgleap(fx.args(cmd, 17, &[]));
        let report = report_dir(&run.stderr);
        // check keeps its logs in the system's temp dir, outside the fixture.
        let _logs = (cmd == "check").then(|| RemoveDir(report.parent().unwrap().to_path_buf()));
        run.refused("refused: pg_upgrade --check failed:\n");
        run.refused("Checking database connection settings");
        run.refused("    All non-template0 databases must allow connections");
        run.refused("Fix what it reports (in the old cluster, or what an earlier attempt left in the new locations), then run pgleap again.");
        if cmd == "upgrade" {
            // upgrade had prepared the new cluster before pg_upgrade --check refused.
            run.refused("The old cluster was not changed; the new directory pgleap had prepared was removed");
        }
        assert!(!new.exists(), "{cmd} left {}", new.display());
        assert!(
            report.is_dir(),
            "{cmd}: pg_upgrade's report {} was not kept:\n{}",
            report.display(),
            run.stderr
        );
    }
}

/// A cluster that pg_upgrade --link has disabled (pg_control renamed) is refused with the
/// reason, not with pg_controldata's raw error.
#[test]
fn refuses_old_cluster_disabled_by_link_mode() {
    let fx = Fixture::new(16).build();
    fx.pgleap(fx.args("upgrade", 17, &["--mode", "link"]))
        .success();
    let elsewhere = fx.root.path().join("again");
    let mut args = fx.args("check", 17, &[]);
    args.extend(["--new-datadir".to_string(), elsewhere.display().to_string()]);
    assert_refused(
        fx.root.path(),
        &args,
        "was disabled by pg_upgrade --link (global/pg_control was renamed to pg_control.old): it has been upgraded already",
        &elsewhere,
    );
}
