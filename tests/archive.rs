//! WAL archiving across the upgrade: the old cluster's archive is never written by the
//! throwaway WAL of pg_upgrade's restore, the plan says what archiving needs afterwards, and
//! the report says whether the new cluster archives.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Fixture;

fn append_conf(fx: &Fixture, text: &str) {
    let path = fx.datadir.join("postgresql.conf");
    let mut conf = std::fs::read_to_string(&path).unwrap();
    conf.push_str(text);
    std::fs::write(&path, conf).unwrap();
}

/// A directory the cluster's owner can write.
fn owned_dir(fx: &Fixture, name: &str) -> PathBuf {
    let dir = fx.root.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    let o = common::owner();
    nix::unistd::chown(&dir, Some(o.uid.into()), Some(o.gid.into())).unwrap();
    dir
}

/// Every file in `dir`, with its contents.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn wait_until(what: &str, done: impl FnMut() -> bool) {
    common::wait_for(what, Duration::from_secs(60), done);
}

/// 1 MB WAL segments and a schema big enough that pg_upgrade's restore fills several: those
/// segments are named like the old cluster's first ones.
fn archiving_cluster(command: impl Fn(&Path) -> String) -> (Fixture, PathBuf) {
    archiving_cluster_with(command, &[])
}

fn archiving_cluster_with(
    command: impl Fn(&Path) -> String,
    initdb_args: &[&str],
) -> (Fixture, PathBuf) {
    let mut args = vec!["--wal-segsize=1"];
    args.extend_from_slice(initdb_args);
    let fx = Fixture::new(16).initdb_args(&args).running().build();
    let archive = owned_dir(&fx, "archive");
    append_conf(
        &fx,
        &format!(
            "archive_mode = on\narchive_command = '{}'\n",
            command(&archive)
        ),
    );
    fx.stop();
    fx.start();
    fx.sql(
        "postgres",
        "DO $$ BEGIN FOR i IN 1..300 LOOP \
           EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, note text, at timestamptz DEFAULT now())', i); \
           EXECUTE format('INSERT INTO t%s (id, note) SELECT g, md5(g::text) FROM generate_series(1, 20) g', i); \
         END LOOP; END $$",
    );
    let last = fx.sql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    let last = last.trim().to_string();
    wait_until("the old cluster archived its WAL", || {
        fx.sql("postgres", "SELECT last_archived_wal FROM pg_stat_archiver")
            .trim()
            == last
    });
    (fx, archive)
}

#[test]
fn restore_wal_never_reaches_the_old_clusters_archive() {
    let (fx, archive) = archiving_cluster(|a| format!("cp %p {}/%f", a.display()));
    let before = files(&archive);
    assert!(before.len() >= 3, "{:?}", before.keys());
    let check = fx.pgleap(fx.args("check", 17, &[]));
    check.success();
    assert!(
        check.stderr.contains("WAL archiving is on (archive_command): the new cluster has a new system identifier and archives its WAL to the same place from its first start; backups of the old cluster cannot restore it"),
        "{}",
        check.stderr
    );
    assert!(
        !check.stderr.contains(&archive.display().to_string()),
        "the archive command was printed: {}",
        check.stderr
    );

    let run = fx.pgleap(fx.args("upgrade", 17, &["--mode", "link"]));
    run.success();
    assert!(
        run.stderr
            .contains("WAL archiving works on the new cluster: "),
        "{}",
        run.stderr
    );
    let after = files(&archive);
    let overwritten: Vec<&String> = before
        .iter()
        .filter(|(name, bytes)| after.get(*name) != Some(*bytes))
        .map(|(name, _)| name)
        .collect();
    assert!(
        overwritten.is_empty(),
        "the upgrade rewrote the old cluster's archived WAL {overwritten:?}"
    );
}

/// An archiver that fails on the old cluster is named by `check`; one that fails on the new
/// cluster (here: a command that accepts only the old major's WAL, as a backup tool refuses a
/// new system identifier) is a warning of the upgrade's report, which still succeeds.
#[test]
fn a_failing_archiver_is_named_before_and_after() {
    let (fx, archive) = archiving_cluster(|a| format!("cp %p {}/%f", a.display()));
    let set = |command: &str| {
        append_conf(&fx, &format!("archive_command = '{command}'\n"));
        fx.sql("postgres", "SELECT pg_reload_conf()");
    };
    set("false");
    let failing = fx.sql(
        "postgres",
        "CREATE TABLE more AS SELECT 1 AS x; SELECT pg_walfile_name(pg_switch_wal())",
    );
    let failing = failing.trim().to_string();
    wait_until("the old archiver fails", || {
        fx.sql(
            "postgres",
            "SELECT coalesce(last_failed_wal, '') FROM pg_stat_archiver",
        )
        .trim()
            == failing
    });
    let check = fx.pgleap(fx.args("check", 17, &[]));
    check.success();
    assert!(
        check.stderr.contains(&format!(
            "the old cluster's WAL archiving fails now (its last attempt, for {failing}, failed after the last success)"
        )),
        "{}",
        check.stderr
    );

    set(&format!(
        "test \"$(cat PG_VERSION)\" = 16 && cp %p {}/%f",
        archive.display()
    ));
    wait_until("the old archiver catches up", || {
        fx.sql(
            "postgres",
            "SELECT last_archived_wal >= last_failed_wal FROM pg_stat_archiver",
        )
        .trim()
            == "t"
    });
    let run = fx.pgleap(fx.args("upgrade", 17, &["--mode", "link"]));
    run.success();
    assert!(
        run.stderr
            .contains("the new cluster cannot archive its WAL: archiving "),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "failed (archive_command); WAL piles up in {} until it works",
            fx.new_datadir(17).join("pg_wal").display()
        )),
        "{}",
        run.stderr
    );
    assert_eq!(
        fx.sql("postgres", "SHOW server_version_num").trim()[..2],
        *"17",
        "the upgrade still succeeded"
    );
}

/// `check` starts a scratch cluster of the new installation to ask its collation versions,
/// with the carried configuration. Its first WAL segments are named like the old cluster's
/// first ones: with archiving on, a completed segment would be copied over the old cluster's
/// archived WAL. Held at that start, the scratch server says archiving is off, and a segment
/// it completes never reaches the archive.
#[test]
fn the_collation_probe_never_archives() {
    // A glibc locale records a collation version, which the probe asks the new installation.
    let (fx, archive) = archiving_cluster_with(
        |a| format!("cp %p {}/%f", a.display()),
        &["--locale=en_US.UTF-8"],
    );
    let before = files(&archive);
    let gate = fx.root.path().join("go");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pgleap"));
    cmd.args(fx.args("check", 17, &[]))
        .env(
            "PGLEAP_FAULT",
            format!("collation-probe-up:pause={}", gate.display()),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let mut probe = None;
    wait_until("the collation probe's server", || {
        probe = walkdir::WalkDir::new(fx.root.path())
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_name() == "postmaster.pid")
            .map(|e| e.path().parent().unwrap().to_path_buf())
            // Not the old server, nor pg_upgrade's own servers (binary upgrade mode, `-b`), nor
            // the start that proves the carried files load (it uses them: no private hba_file).
            .find(|dir| {
                *dir != fx.datadir
                    && std::fs::read_to_string(dir.join("postmaster.opts"))
                        .is_ok_and(|o| !o.contains("\"-b\"") && o.contains("hba_file"))
            })
            .and_then(|dir| std::fs::read_to_string(dir.join("postmaster.pid")).ok())
            .filter(|t| t.lines().count() >= 8 && t.lines().nth(7).unwrap().trim() == "ready");
        probe.is_some()
    });
    let pid_file = probe.unwrap();
    let lines: Vec<&str> = pid_file.lines().collect();
    let (port, socket) = (
        lines[3].trim().parse::<u16>().unwrap(),
        Path::new(lines[4].trim()),
    );
    let sql = |q: &str| common::psql(17, socket, port, &fx.superuser, "postgres", q);
    let archive_mode = sql("SHOW archive_mode");
    sql("CREATE TABLE filler AS SELECT g FROM generate_series(1, 20000) g");
    sql("SELECT pg_switch_wal()");
    sql("CHECKPOINT");
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(&gate, "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = files(&archive);
    let written: Vec<&String> = after
        .iter()
        .filter(|(name, bytes)| before.get(*name) != Some(*bytes))
        .map(|(name, _)| name)
        .collect();
    assert!(
        written.is_empty(),
        "the scratch cluster wrote {written:?} into the old cluster's archive"
    );
    assert_eq!(archive_mode.trim(), "off");
}
