//! Replication-aware upgrades on real clusters of this machine, each on its own socket
//! directory and port: a hot standby pointed at by mistake, slots of 16 → 17 and 17 → 18, a
//! subscriber, and a primary with a streaming standby rebuilt from the printed procedure.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Fixture, as_owner, assert_unchanged, bindir, chown, ok, port, psql, snapshot};

/// Sets server settings with ALTER SYSTEM and restarts the fixture's server.
fn configure(fx: &Fixture, settings: &[(&str, &str)]) {
    for (k, v) in settings {
        fx.sql("postgres", &format!("ALTER SYSTEM SET {k} = '{v}'"));
    }
    fx.stop();
    fx.start();
}

/// The data directory's files once every database has been connected to: a running server
/// rewrites its relation cache files (`pg_internal.init`) on the first connection after
/// they were invalidated, whoever connects, so a comparison starts after that.
fn settled_snapshot(fx: &Fixture, port: u16) -> common::Snapshot {
    for db in ["template1", "postgres"] {
        psql(fx.major, &fx.socket, port, &fx.superuser, db, "SELECT 1");
    }
    snapshot(&fx.datadir)
}

#[track_caller]
fn wait_until(what: &str, done: impl FnMut() -> bool) {
    common::wait_for(what, Duration::from_secs(90), done);
}

/// A streaming standby of `fx` made with pg_basebackup, running on its own port.
struct Standby {
    dir: PathBuf,
    port: u16,
}

fn standby_of(fx: &Fixture, slot: Option<&str>) -> Standby {
    let parent = fx.root.path().join("standby");
    std::fs::create_dir_all(&parent).unwrap();
    chown(&parent);
    let dir = parent.join(fx.major.to_string());
    let mut args = vec![
        "-h".to_string(),
        fx.socket.display().to_string(),
        "-p".into(),
        fx.port.to_string(),
        "-U".into(),
        fx.superuser.clone(),
        "-D".into(),
        dir.display().to_string(),
        "-X".into(),
        "stream".into(),
        "-R".into(),
        "--checkpoint=fast".into(),
    ];
    if let Some(s) = slot {
        args.extend(["-C".into(), "-S".into(), s.to_string()]);
    }
    // A standby on the primary's host has its own WAL directory and tablespace locations.
    if std::fs::symlink_metadata(fx.datadir.join("pg_wal")).is_ok_and(|m| m.is_symlink()) {
        let wal = fx.root.path().join("standby-wal");
        std::fs::create_dir(&wal).unwrap();
        chown(&wal);
        args.push(format!(
            "--waldir={}",
            wal.join(fx.major.to_string()).display()
        ));
    }
    if let Some(t) = &fx.tablespace {
        let own = fx.root.path().join("standby-tblspc");
        std::fs::create_dir(&own).unwrap();
        chown(&own);
        args.push(format!(
            "--tablespace-mapping={}={}",
            t.display(),
            own.display()
        ));
    }
    ok(
        &as_owner(&fx.bindir().join("pg_basebackup"), &args),
        "pg_basebackup",
    );
    // The standby's own settings beside primary_conninfo (the primary's postgresql.conf came
    // with the base backup): its rebuild must keep its port, and must not bring back a
    // setting the new major does not have (old_snapshot_threshold: 16 has it, 17 not).
    let port = port();
    let conf = dir.join("postgresql.auto.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    let gone = if fx.major <= 16 {
        "Old_Snapshot_Threshold = -1\n"
    } else {
        ""
    };
    std::fs::write(&conf, format!("{text}port = {port}\n{gone}")).unwrap();
    common::start_server(fx.major, &dir, &fx.root.path().join("standby.log"));
    wait_until("the standby streams", || {
        fx.sql(
            "postgres",
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
        )
        .trim()
            == "1"
    });
    Standby { dir, port }
}

/// The indented command lines that follow the report line starting with `header`, up to
/// the explanation that closes them (`    Why`).
fn printed_commands(stderr: &str, header: &str) -> Vec<String> {
    let mut lines = stderr.lines().skip_while(|l| !l.starts_with(header));
    assert!(lines.next().is_some(), "no {header:?} in:\n{stderr}");
    lines
        .take_while(|l| l.starts_with("    ") && !l.starts_with("    Why"))
        .map(|l| l.trim().to_string())
        .collect()
}

/// Runs commands as the owner through bash, stopping at the first failure.
fn run_as_owner(preamble: &str, commands: &[String]) -> String {
    let script = format!("set -e\n{preamble}\n{}", commands.join("\n"));
    ok(
        &as_owner(Path::new("/bin/bash"), &["-c", &script]),
        &format!("the printed commands:\n{script}"),
    )
}

fn upgrade_args(fx: &Fixture, new_major: u32, extra: &[&str]) -> Vec<String> {
    fx.args("upgrade", new_major, extra)
}

/// Rows of a table, ordered, as one text: equal texts mean the same rows, each once.
fn rows(major: u32, socket: &Path, port: u16, table: &str) -> String {
    psql(
        major,
        socket,
        port,
        "postgres",
        "postgres",
        &format!(
            "SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '') FROM {table} x"
        ),
    )
}

#[test]
fn hot_standby_is_refused_before_anything_is_touched() {
    let fx = Fixture::new(16).running().build();
    let sb = standby_of(&fx, None);
    let before = snapshot(&sb.dir);
    let message = format!(
        "{} is a standby (standby.signal is present); it follows the primary at {} port {}",
        sb.dir.display(),
        fx.socket.display(),
        fx.port
    );
    for command in ["check", "upgrade"] {
        let run = fx.pgleap([
            command,
            "--old-datadir",
            &sb.dir.display().to_string(),
            "--old-bindir",
            &bindir(16).display().to_string(),
            "--new-bindir",
            &bindir(17).display().to_string(),
        ]);
        run.refused(&message)
            .refused("A standby cannot be upgraded on its own")
            .refused("Upgrade its primary instead");
        assert!(!run.stderr.contains("password="), "{}", run.stderr);
    }
    assert_unchanged(&before, &snapshot(&sb.dir), "a refused standby upgrade");
    assert!(!fx.root.path().join("standby/17").exists());
    let in_recovery = psql(
        16,
        &fx.socket,
        sb.port,
        "postgres",
        "postgres",
        "SELECT pg_is_in_recovery()",
    );
    assert_eq!(
        in_recovery.trim(),
        "t",
        "the standby still runs as a standby"
    );
}

#[test]
fn slots_of_16_are_refused_then_dropped_by_name() {
    let fx = Fixture::new(16).running().build();
    configure(&fx, &[("wal_level", "logical")]);
    fx.sql(
        "postgres",
        "SELECT pg_create_logical_replication_slot('decoder', 'test_decoding'); \
         SELECT pg_create_physical_replication_slot('standby1', true)",
    );
    let before = settled_snapshot(&fx, fx.port);
    let run = fx.pgleap(upgrade_args(&fx, 17, &[]));
    run.refused(
        "the upgrade would lose 2 replication slots (pg_upgrade carries no replication slot from PostgreSQL 16 (logical slots only from 17)): 'decoder' (logical, test_decoding, database postgres), 'standby1' (physical)",
    )
    .refused("Pass --slots drop to upgrade without them");
    assert_unchanged(&before, &snapshot(&fx.datadir), "a refused upgrade");
    assert!(!fx.new_datadir(17).exists());

    let run = fx.pgleap(upgrade_args(&fx, 17, &["--slots", "drop"]));
    run.success();
    assert!(
        run.stderr.contains("slot          'decoder' (logical, test_decoding, database postgres): lost: pg_upgrade carries no slot from 16"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("slot 'standby1' (physical): dropped"),
        "{}",
        run.stderr
    );
    let recreate = printed_commands(
        &run.stderr,
        "  slot 'decoder' (logical, test_decoding, database postgres): dropped",
    );
    assert_eq!(recreate.len(), 1, "{recreate:?}");
    run_as_owner("", &recreate[..1]);
    let slots = fx.sql(
        "postgres",
        "SELECT slot_name || ':' || plugin FROM pg_replication_slots ORDER BY 1",
    );
    assert_eq!(
        slots.trim(),
        "decoder:test_decoding",
        "the printed command recreated it on the new cluster"
    );
    let status = fx.pgleap(["status", "--old-datadir", &fx.datadir.display().to_string()]);
    status.success();
    assert!(
        status.stderr.contains("Replication:\n  slot 'decoder'"),
        "{}",
        status.stderr
    );
}

#[test]
fn lagging_slot_of_17_is_refused_before_the_stop() {
    let fx = Fixture::new(17).running().build();
    configure(&fx, &[("wal_level", "logical")]);
    fx.sql(
        "postgres",
        "SELECT pg_create_logical_replication_slot('lagging', 'test_decoding')",
    );
    fx.sql(
        "postgres",
        "INSERT INTO t SELECT g, 'late' FROM generate_series(2001, 2010) g",
    );
    let pid_before = fx.sql(
        "postgres",
        "SELECT pg_backend_pid() > 0; SELECT pg_postmaster_start_time()",
    );
    let run = fx.pgleap(upgrade_args(&fx, 18, &[]));
    run.refused("'lagging' (logical, test_decoding, database postgres) has no consumer connected and changes it has not confirmed")
        .refused("Let each consumer catch up");
    assert!(!fx.new_datadir(18).exists());
    assert_eq!(
        fx.sql(
            "postgres",
            "SELECT pg_backend_pid() > 0; SELECT pg_postmaster_start_time()"
        ),
        pid_before,
        "the old server was never stopped"
    );
    // The slot itself was not advanced: its consumer still gets every change.
    let pending = fx.sql(
        "postgres",
        "SELECT count(*) FROM pg_logical_slot_get_changes('lagging', NULL, NULL) WHERE data LIKE 'table public.t: INSERT%'",
    );
    assert_eq!(pending.trim(), "10");
}

#[test]
fn caught_up_slot_of_17_survives_and_decoding_continues() {
    let fx = Fixture::new(17).running().build();
    configure(&fx, &[("wal_level", "logical")]);
    fx.sql("postgres", "CREATE TABLE feed (id int PRIMARY KEY)");
    fx.sql(
        "postgres",
        "SELECT pg_create_logical_replication_slot('decoder', 'test_decoding')",
    );
    fx.sql("postgres", "INSERT INTO feed SELECT generate_series(1, 10)");
    let changes = |major: u32| {
        psql(
            major,
            &fx.socket,
            fx.port,
            "postgres",
            "postgres",
            "SELECT string_agg(substring(data from 'id\\[integer\\]:(\\d+)'), ',' ORDER BY lsn) FROM pg_logical_slot_get_changes('decoder', NULL, NULL) WHERE data LIKE 'table public.feed: INSERT%'",
        )
        .trim()
        .to_string()
    };
    assert_eq!(changes(17), "1,2,3,4,5,6,7,8,9,10");
    let run = fx.pgleap(upgrade_args(&fx, 18, &[]));
    run.success();
    assert!(
        run.stderr.contains(
            "slot 'decoder' (logical, test_decoding, database postgres): kept by pg_upgrade"
        ),
        "{}",
        run.stderr
    );
    fx.sql(
        "postgres",
        "INSERT INTO feed SELECT generate_series(11, 15)",
    );
    assert_eq!(
        changes(18),
        "11,12,13,14,15",
        "each row once, from where it was"
    );
}

/// A publisher and a subscriber of its table `t`, in sync.
fn publisher_and_subscriber(major: u32) -> (Fixture, Fixture) {
    let publisher = Fixture::new(major).running().build();
    configure(&publisher, &[("wal_level", "logical")]);
    publisher.sql("postgres", "CREATE PUBLICATION pub FOR TABLE t");
    let subscriber = Fixture::new(major).running().build();
    subscriber.sql("postgres", "TRUNCATE t");
    subscriber.sql(
        "postgres",
        &format!(
            "CREATE SUBSCRIPTION sub CONNECTION 'host={} port={} dbname=postgres user=postgres' PUBLICATION pub",
            publisher.socket.display(),
            publisher.port
        ),
    );
    (publisher, subscriber)
}

fn wait_in_sync(publisher: &Fixture, subscriber: &Fixture, sub_major: u32) {
    let want = rows(publisher.major, &publisher.socket, publisher.port, "t");
    wait_until("the subscriber has the publisher's rows", || {
        rows(sub_major, &subscriber.socket, subscriber.port, "t") == want
    });
}

#[test]
fn subscriber_of_16_resumes_with_exactly_the_publishers_rows() {
    let (publisher, subscriber) = publisher_and_subscriber(16);
    wait_in_sync(&publisher, &subscriber, 16);
    publisher.sql(
        "postgres",
        "INSERT INTO t SELECT g, 'before' FROM generate_series(1001, 1100) g",
    );
    wait_in_sync(&publisher, &subscriber, 16);

    // Its running apply worker writes WAL of its own (feedback, running transactions):
    // the comparison leaves pg_wal out.
    let without_wal = |s: common::Snapshot| -> common::Snapshot {
        s.into_iter()
            .filter(|(p, _)| !p.starts_with("pg_wal"))
            .collect()
    };
    let before = without_wal(settled_snapshot(&subscriber, subscriber.port));
    let run = subscriber.pgleap(upgrade_args(&subscriber, 17, &[]));
    run.refused(&format!(
        "this cluster subscribes to 'sub' (database postgres, from {} port {}); pg_upgrade from PostgreSQL 16 to 17 leaves each subscription disabled and without its table states",
        publisher.socket.display(),
        publisher.port
    ))
    .refused("Pass --subscriptions disable");
    assert_unchanged(
        &before,
        &without_wal(snapshot(&subscriber.datadir)),
        "a refused upgrade",
    );

    // Written while the subscriber goes down: applied before, or kept by the slot.
    publisher.sql(
        "postgres",
        "INSERT INTO t SELECT g, 'during' FROM generate_series(1101, 1200) g",
    );
    let run = subscriber.pgleap(upgrade_args(
        &subscriber,
        17,
        &["--subscriptions", "disable"],
    ));
    run.success();
    publisher.sql(
        "postgres",
        "INSERT INTO t SELECT g, 'after' FROM generate_series(1201, 1300) g",
    );
    let resume = printed_commands(&run.stderr, "  subscription postgres.sub from");
    assert!(
        resume
            .iter()
            .any(|c| c.contains("pg_replication_origin_advance")),
        "the origin's progress was read from the old cluster: {resume:?}"
    );
    run_as_owner("", &resume);
    wait_in_sync(&publisher, &subscriber, 17);
    publisher.sql(
        "postgres",
        "INSERT INTO t SELECT g, 'later' FROM generate_series(1301, 1310) g",
    );
    wait_in_sync(&publisher, &subscriber, 17);
    let count = psql(
        17,
        &subscriber.socket,
        subscriber.port,
        "postgres",
        "postgres",
        "SELECT count(*), count(DISTINCT id) FROM t",
    );
    assert_eq!(count.trim(), "1310|1310", "no row lost, none twice");
}

/// The lines indented by 4 spaces (commands and the `#` comments naming where they run)
/// right after the first line of `out` that starts with `header`.
fn printed_block(out: &str, header: &str) -> Vec<String> {
    let mut lines = out.lines().skip_while(|l| !l.starts_with(header));
    assert!(lines.next().is_some(), "no {header:?} in:\n{out}");
    let block: Vec<String> = lines
        .take_while(|l| l.starts_with("    "))
        .map(|l| l[4..].to_string())
        .collect();
    assert!(!block.is_empty(), "nothing under {header:?} in:\n{out}");
    block
}

/// Runs printed lines verbatim as the owner, as one `bash -e` script: no preamble.
fn run_verbatim(lines: &[String]) -> String {
    let script = lines.join("\n");
    ok(
        &as_owner(Path::new("/bin/bash"), &["-e", "-c", &script]),
        &format!("the printed commands:\n{script}"),
    )
}

/// The journal of the fixture's upgrade to `new`.
fn journal(fx: &Fixture, new: u32) -> serde_json::Value {
    let dir = fx.new_datadir(new);
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let path = dir
        .with_file_name(format!(".pgleap-{name}-{}-to-{new}", fx.major))
        .join("journal.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn control_field(major: u32, datadir: &Path, field: &str) -> String {
    let out = ok(
        &as_owner(
            &bindir(major).join("pg_controldata"),
            &[datadir.display().to_string().as_str()],
        ),
        "pg_controldata",
    );
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {out}"))
        .trim()
        .to_string()
}

fn target(fx: &Fixture, command: &str, new_major: u32) -> Vec<String> {
    vec![
        command.to_string(),
        "--old-datadir".into(),
        fx.datadir.display().to_string(),
        "--new-datadir".into(),
        fx.new_datadir(new_major).display().to_string(),
    ]
}

/// The upgrade to 17 paused after pg_upgrade, before the new primary's first start: it says
/// so, no server ran on the new cluster (none runs, and pg_upgrade's own shutdown checkpoint
/// is still its latest), and the procedure checks the standby against the old primary's
/// shutdown checkpoint as journaled.
fn assert_paused_before_start(fx: &Fixture, stderr: &str) {
    let new = fx.new_datadir(17);
    assert!(
        stderr.contains(&format!("Paused before the new primary's first start, so that the standbys can be rebuilt with rsync: pg_upgrade has finished in --link mode and no server has run on {}. The downtime window is still open: clients are still down.", new.display())),
        "{}",
        stderr
    );
    assert_eq!(
        stderr.trim_end().lines().last().unwrap(),
        format!(
            "Next: pgleap upgrade --old-datadir {0} --new-datadir {1} starts the new primary and closes the window; or pgleap rollback --old-datadir {0} --new-datadir {1} brings the old primary back.",
            fx.datadir.display(),
            new.display()
        )
    );
    // The new primary never started: no server on it, and pg_upgrade's own shutdown
    // checkpoint is still its latest.
    assert!(!new.join("postmaster.pid").exists());
    let j = journal(fx, 17);
    assert_eq!(j["state"], "upgraded");
    assert_eq!(j["paused_for_standbys"], true);
    assert_eq!(
        control_field(17, &new, "Database cluster state"),
        "shut down"
    );
    assert_eq!(
        control_field(17, &new, "Latest checkpoint location"),
        j["new_checkpoint"].as_str().unwrap()
    );
    let old_checkpoint = j["old_checkpoint"].as_str().unwrap().to_string();
    assert!(
        stderr.contains(&format!(
            "its latest checkpoint must be the primary's shutdown checkpoint, {old_checkpoint}"
        )),
        "{}",
        stderr
    );
}

/// The inodes of the regular files below `dir`.
fn inodes(dir: &Path) -> std::collections::BTreeSet<u64> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| std::os::unix::fs::MetadataExt::ino(&e.metadata().unwrap()))
        .collect()
}

/// The one subdirectory of a tablespace location made by `major` (`PG_16_202307071`).
fn version_dir(location: &Path, major: u32) -> PathBuf {
    let prefix = format!("PG_{major}_");
    let found: Vec<PathBuf> = std::fs::read_dir(location)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?} in {}", location.display());
    found[0].clone()
}

/// After the printed rsync procedure: the new standby reused its own files (its new
/// relation files are hard links to its old ones, in its data directory and in its own copy
/// of the tablespace), its links point at its own copies, not at the primary's, and the
/// setting 17 does not have is commented out.
fn assert_rebuilt_in_its_own_places(fx: &Fixture, sb: &Standby) {
    let new_standby = fx.root.path().join("standby/17");
    assert!(new_standby.join("standby.signal").exists());
    let old_files = inodes(&sb.dir.join("base"));
    assert!(
        !inodes(&new_standby.join("base")).is_disjoint(&old_files),
        "no file of the new standby is a hard link to one of the old standby"
    );
    let own_space = fx.root.path().join("standby-tblspc");
    let linked = inodes(&version_dir(&own_space, 17));
    assert!(
        !linked.is_empty() && linked.is_subset(&inodes(&version_dir(&own_space, 16))),
        "the new standby's tablespace files are not hard links to its old ones"
    );
    // Its links point at its own copies, not at the primary's.
    let oid = std::fs::read_dir(new_standby.join("pg_tblspc"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect::<Vec<_>>();
    assert_eq!(oid.len(), 1, "{oid:?}");
    assert_eq!(std::fs::read_link(&oid[0]).unwrap(), own_space);
    let own_wal = fx.root.path().join("standby-wal/17");
    assert_eq!(
        std::fs::read_link(new_standby.join("pg_wal")).unwrap(),
        own_wal
    );
    assert!(std::fs::read_dir(&own_wal).unwrap().next().is_some());
    let conf = std::fs::read_to_string(new_standby.join("postgresql.auto.conf")).unwrap();
    assert!(
        conf.contains(
            "\n# pgleap: PostgreSQL 17 does not have this setting: Old_Snapshot_Threshold = -1\n"
        ),
        "{conf}"
    );
}

/// A running 16 primary with its WAL apart (in the returned directory) and a table
/// `spaced` in its tablespace.
fn primary_with_wal_apart_and_a_tablespace() -> (tempfile::TempDir, Fixture) {
    let wal_root = tempfile::Builder::new()
        .prefix("pgleap-wal-")
        .tempdir_in("/tmp")
        .unwrap();
    chown(wal_root.path());
    let fx = Fixture::new(16)
        .running()
        .tablespace()
        .initdb_args(&[&format!(
            "--waldir={}",
            wal_root.path().join("16").display()
        )])
        .build();
    fx.sql(
        "postgres",
        "CREATE TABLE spaced TABLESPACE ext AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000) g",
    );
    (wal_root, fx)
}

/// The downtime of a paused upgrade is reported with and without the pause, which lasted at
/// least as long as the rsync procedure run meanwhile (`rsync_took` seconds).
fn assert_downtime_without_the_pause(fx: &Fixture, resumed: &str, rsync_took: f64) {
    assert!(
        resumed.contains("of which paused for the standbys' rsync: "),
        "{resumed}"
    );
    let mut args = target(fx, "status", 17);
    args.push("--json".into());
    let status = fx.pgleap(args);
    status.success();
    let doc = status.json();
    let number = |k: &str| doc[k].as_f64().unwrap_or_else(|| panic!("no {k} in {doc}"));
    let (total, pause, without) = (
        number("downtime_seconds"),
        number("pause_seconds"),
        number("downtime_without_pause_seconds"),
    );
    assert!(pause >= rsync_took, "pause {pause} < rsync {rsync_took}");
    assert!((total - pause - without).abs() < 0.01, "{doc}");
    assert!(without > 0.0 && without < total, "{doc}");
    let j = journal(fx, 17);
    assert!(
        j["pause"]["ended_ms"].as_u64().unwrap() > j["pause"]["started_ms"].as_u64().unwrap(),
        "{j}"
    );
}

/// A primary with its WAL apart and a tablespace, and a standby on the same host with its
/// own WAL directory and tablespace location (pg_basebackup --waldir and
/// --tablespace-mapping): the printed rsync procedure, run verbatim, rebuilds the standby
/// from its own files, in its own places.
#[test]
fn primary_with_a_standby_is_rebuilt_from_the_printed_procedure() {
    let (_wal_root, fx) = primary_with_wal_apart_and_a_tablespace();
    let sb = standby_of(&fx, Some("standby1"));
    let before = settled_snapshot(&fx, fx.port);
    let run = fx.pgleap(upgrade_args(&fx, 17, &[]));
    run.refused("1 standby streams from the old cluster and cannot follow the new major: 'walreceiver' (over a Unix socket, user postgres, slot standby1)")
        .refused("Pass --standbys rebuild-later");
    assert_unchanged(&before, &snapshot(&fx.datadir), "a refused upgrade");

    fx.sql(
        "postgres",
        "INSERT INTO t SELECT g, 'before' FROM generate_series(1001, 1050) g; INSERT INTO spaced SELECT g, 'before' FROM generate_series(1001, 1050) g",
    );
    let mapping = format!("walreceiver={}", sb.dir.display());
    let run = fx.pgleap(upgrade_args(
        &fx,
        17,
        &[
            "--mode",
            "link",
            "--standbys",
            "rebuild-later",
            "--standby",
            &mapping,
            "--slots",
            "recreate-physical",
        ],
    ));
    run.success();
    assert_paused_before_start(&fx, &run.stderr);

    let procedure = printed_block(&run.stderr, "  standby 'walreceiver'");
    assert!(
        procedure.iter().any(|l| l
            .starts_with("rsync --archive --delete --hard-links --size-only --no-inc-recursive")),
        "{procedure:?}"
    );
    assert!(
        procedure.iter().any(|l| l
            .contains("PostgreSQL 17 does not have (db_user_namespace, old_snapshot_threshold)")),
        "{procedure:?}"
    );
    let rsync_took = std::time::Instant::now();
    run_verbatim(&procedure);
    assert_rebuilt_in_its_own_places(&fx, &sb);
    let rsync_took = rsync_took.elapsed().as_secs_f64();

    let resume = fx.pgleap(target(&fx, "upgrade", 17));
    resume.success();
    assert!(
        resume
            .stderr
            .contains("recreated physical replication slot 'standby1'"),
        "{}",
        resume.stderr
    );
    assert_downtime_without_the_pause(&fx, &resume.stderr, rsync_took);
    let start = printed_block(&resume.stderr, "  standby 'walreceiver'");
    assert_eq!(start.len(), 2, "{start:?}");
    run_verbatim(&start);
    let on_standby = |sql: &str| psql(17, &fx.socket, sb.port, "postgres", "postgres", sql);
    assert_eq!(on_standby("SELECT pg_is_in_recovery()").trim(), "t");
    fx.sql(
        "postgres",
        "INSERT INTO t SELECT g, 'after' FROM generate_series(1051, 1060) g; INSERT INTO spaced SELECT g, 'after' FROM generate_series(1051, 1060) g",
    );
    for table in ["t", "spaced"] {
        let want = rows(17, &fx.socket, fx.port, table);
        assert!(want.starts_with("1060:"), "{want}");
        wait_until("the rebuilt standby has the primary's rows", || {
            rows(17, &fx.socket, sb.port, table) == want
        });
    }
    let streaming = fx.sql(
        "postgres",
        "SELECT count(*) FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE r.state = 'streaming' AND s.slot_name = 'standby1'",
    );
    assert_eq!(
        streaming.trim(),
        "1",
        "the standby streams from the new primary through its slot"
    );
}

/// A private sshd on a free port of 127.0.0.1, run as the cluster owner (who is the only
/// user it can log in), with its host key, the client's key and both configurations in the
/// fixture's directory: nothing of the machine's own ssh setup is read or changed. The
/// client configuration maps the alias `standby-host` to it; `RSYNC_RSH` (below) makes rsync
/// use it.
struct Sshd {
    child: std::process::Child,
    config: PathBuf,
}

impl Sshd {
    const SSHD: &str = "/usr/sbin/sshd";

    fn start(fx: &Fixture) -> Sshd {
        assert!(
            Path::new(Self::SSHD).exists(),
            "{} is missing: run scripts/test, which installs openssh-server",
            Self::SSHD
        );
        let dir = fx.root.path().join("ssh");
        std::fs::create_dir(&dir).unwrap();
        chown(&dir);
        let keygen = Path::new("/usr/bin/ssh-keygen");
        for key in ["host_key", "client_key"] {
            let file = dir.join(key).display().to_string();
            let args = ["-q", "-t", "ed25519", "-N", "", "-f", file.as_str()];
            ok(&as_owner(keygen, &args), "ssh-keygen");
        }
        let public = |key: &str| std::fs::read_to_string(dir.join(format!("{key}.pub"))).unwrap();
        let port = port();
        let write = |name: &str, text: String| {
            std::fs::write(dir.join(name), text).unwrap();
            chown(&dir.join(name));
        };
        write("authorized_keys", public("client_key"));
        write(
            "known_hosts",
            format!("[127.0.0.1]:{port} {}", public("host_key")),
        );
        write(
            "sshd_config",
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n",
                d = dir.display()
            ),
        );
        write(
            "config",
            format!(
                "Host standby-host\n  HostName 127.0.0.1\n  Port {port}\n  User {}\n  IdentityFile {d}/client_key\n  IdentitiesOnly yes\n  UserKnownHostsFile {d}/known_hosts\n  StrictHostKeyChecking yes\n  BatchMode yes\n",
                common::owner().name,
                d = dir.display()
            ),
        );
        let args = [
            "-D".to_string(),
            "-e".into(),
            "-f".into(),
            dir.join("sshd_config").display().to_string(),
        ];
        let child = owner_command(Path::new(Self::SSHD), &args)
            .stderr(std::fs::File::create(fx.root.path().join("sshd.log")).unwrap())
            .spawn()
            .unwrap();
        let mut sshd = Sshd {
            child,
            config: dir.join("config"),
        };
        let log = fx.root.path().join("sshd.log");
        let config = sshd.config.display().to_string();
        wait_until("the private sshd accepts the owner's key", || {
            if let Ok(Some(status)) = sshd.child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("sshd exited ({status}):\n{text}");
            }
            as_owner(
                Path::new("/usr/bin/ssh"),
                &["-F", config.as_str(), "standby-host", "true"],
            )
            .status
            .success()
        });
        sshd
    }

    /// What rsync runs to reach `standby-host`.
    fn rsync_rsh(&self) -> String {
        format!("ssh -F {}", self.config.display())
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A standby given as on another host, `standby-host`, reached over ssh (a private sshd of
/// this machine): the printed procedure, run verbatim with only `RSYNC_RSH` naming the ssh
/// configuration, rsyncs over ssh and rebuilds it; with `--slots drop`, the command that
/// creates its slot comes right before its start.
#[test]
fn remote_standby_is_rebuilt_over_ssh_from_the_printed_procedure() {
    let fx = Fixture::new(16).running().build();
    let sb = standby_of(&fx, Some("standby1"));
    let sshd = Sshd::start(&fx);
    let mapping = format!("walreceiver=standby-host:{}", sb.dir.display());
    let run = fx.pgleap(upgrade_args(
        &fx,
        17,
        &[
            "--mode",
            "link",
            "--standbys",
            "rebuild-later",
            "--standby",
            &mapping,
            "--slots",
            "drop",
        ],
    ));
    run.success();
    let procedure = printed_block(&run.stderr, "  standby 'walreceiver'");
    let over_ssh = format!(
        "rsync --archive --delete --hard-links --size-only --no-inc-recursive --relative {0}/./16 {0}/./17 standby-host:{1}/",
        fx.datadir.parent().unwrap().display(),
        sb.dir.parent().unwrap().display()
    );
    assert!(procedure.contains(&over_ssh), "{procedure:?}");
    let script = procedure.join("\n");
    let out = owner_command(
        Path::new("/bin/bash"),
        &["-e".into(), "-c".into(), script.clone()],
    )
    .env("RSYNC_RSH", sshd.rsync_rsh())
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "the printed commands:\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_standby = fx.root.path().join("standby/17");
    assert!(
        !inodes(&new_standby.join("base")).is_disjoint(&inodes(&sb.dir.join("base"))),
        "no file of the new standby is a hard link to one of the old standby"
    );

    let resume = fx.pgleap(target(&fx, "upgrade", 17));
    resume.success();
    let start = printed_block(&resume.stderr, "  standby 'walreceiver'");
    assert!(
        start[1]
            .contains("-c 'SELECT pg_create_physical_replication_slot('\\''standby1'\\'', true)'"),
        "{start:?}"
    );
    run_verbatim(&start);
    fx.sql(
        "postgres",
        "INSERT INTO t SELECT g, 'after' FROM generate_series(1001, 1010) g",
    );
    let want = rows(17, &fx.socket, fx.port, "t");
    wait_until("the rebuilt standby has the primary's rows", || {
        rows(17, &fx.socket, sb.port, "t") == want
    });
    let streaming = fx.sql(
        "postgres",
        "SELECT count(*) FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE r.state = 'streaming' AND s.slot_name = 'standby1'",
    );
    assert_eq!(
        streaming.trim(),
        "1",
        "the standby streams through its slot"
    );
}

#[test]
fn standby_places_are_refused_then_a_paused_upgrade_rolls_back() {
    let fx = Fixture::new(16).running().build();
    let sb = standby_of(&fx, None);
    let before = settled_snapshot(&fx, fx.port);
    let link = ["--mode", "link", "--standbys", "rebuild-later"];
    let with = |extra: &[&str]| {
        let mut a = link.to_vec();
        a.extend(extra);
        fx.pgleap(upgrade_args(&fx, 17, &a))
    };
    with(&[])
        .refused(&format!(
            "the standby 'walreceiver' runs on this host (over a Unix socket), so its data directory is not the primary's {}, and pgleap cannot tell which it is",
            fx.datadir.display()
        ))
        .refused("Pass --standby walreceiver=DIR with the standby's data directory");
    with(&["--standby", "other=/srv/standby/16"])
        .refused("--standby other=/srv/standby/16 names no standby streaming from the old cluster (connected: 'walreceiver')");
    with(&["--standby", "walreceiver=/srv/standby/main"])
        .refused(&format!(
            "the standby 'walreceiver' keeps its data in /srv/standby/main, which does not end in 16 as the primary's {} does",
            fx.datadir.display()
        ))
        .refused("Rename the standby's data directory so that it ends in 16");
    assert_unchanged(&before, &snapshot(&fx.datadir), "refused upgrades");
    assert!(!fx.new_datadir(17).exists());

    let rows_before = rows(16, &fx.socket, fx.port, "t");
    let mapping = format!("walreceiver={}", sb.dir.display());
    let paused = with(&["--standby", &mapping, "--json"]);
    paused.success();
    let doc: serde_json::Value = serde_json::from_str(&paused.stdout).unwrap();
    assert_eq!(doc["paused"], true, "{}", paused.stdout);
    assert_eq!(doc["state"], "upgraded");
    assert_eq!(
        doc["next"],
        format!(
            "pgleap upgrade --old-datadir {} --new-datadir {}",
            fx.datadir.display(),
            fx.new_datadir(17).display()
        )
    );
    let status = fx.pgleap(target(&fx, "status", 17));
    status.success();
    assert!(
        status.stderr.contains("state:     upgraded (paused before the new primary's first start, for the standbys' rsync; the downtime window is open: clients are down)"),
        "{}",
        status.stderr
    );
    assert!(
        status
            .stderr
            .contains("The downtime window is still open: clients are still down."),
        "{}",
        status.stderr
    );
    let procedure = printed_block(&status.stderr, "  standby 'walreceiver'");
    assert!(
        procedure.iter().any(|l| l.starts_with("rsync ")),
        "status prints the rsync: {procedure:?}"
    );
    assert!(
        status
            .stderr
            .contains("  downtime:  not yet (paused for the standbys' rsync for "),
        "{}",
        status.stderr
    );

    let rollback = fx.pgleap(target(&fx, "rollback", 17));
    rollback.success();
    assert!(
        rollback.stderr.contains("a standby rsynced from the upgraded primary meanwhile no longer matches the old one; rebuild it from a base backup of the old primary"),
        "{}",
        rollback.stderr
    );
    assert!(
        fx.sql("postgres", "SHOW server_version_num")
            .starts_with("16")
    );
    assert_eq!(rows(16, &fx.socket, fx.port, "t"), rows_before);
    assert!(!fx.new_datadir(17).exists());
    // The pause never ended, and no window closed: no pause counting on.
    let after = fx.pgleap(target(&fx, "status", 17));
    after.success();
    assert!(
        after.stderr.contains("\n  downtime:  not yet\n"),
        "{}",
        after.stderr
    );
}

#[test]
fn standby_rebuilt_from_a_base_backup_without_a_pause_creates_its_dropped_slot() {
    let (_wal_root, fx) = primary_with_wal_apart_and_a_tablespace();
    let sb = standby_of(&fx, Some("standby1"));
    let mapping = format!("walreceiver={}", sb.dir.display());
    let run = fx.pgleap(upgrade_args(
        &fx,
        17,
        &[
            "--mode",
            "link",
            "--standbys",
            "basebackup",
            "--standby",
            &mapping,
            "--slots",
            "drop",
        ],
    ));
    run.success();
    // One way to create the dropped slot again: the base backup's -C, which the slot's own
    // line points at instead of giving a second command that would make -C fail.
    assert!(
        run.stderr.contains("  slot 'standby1' (physical): dropped; the rebuild of standby 'walreceiver' (over a Unix socket, user postgres, slot standby1) below creates it again (pg_basebackup -C, or the command before its start after an rsync)"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("pg_create_physical_replication_slot"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("Paused"), "{}", run.stderr);
    assert_eq!(journal(&fx, 17)["state"], "done");
    fx.sql(
        "postgres",
        "INSERT INTO t SELECT g, 'after' FROM generate_series(1001, 1050) g",
    );
    let procedure = printed_block(&run.stderr, "  standby 'walreceiver'");
    assert!(
        procedure
            .iter()
            .any(|l| l.contains("/pg_basebackup ") && l.contains(" -C -S standby1 ")),
        "{procedure:?}"
    );
    run_verbatim(&procedure);
    // Its own WAL directory and tablespace location, new ones beside the old ones (a base
    // backup writes only into empty directories).
    let new_standby = fx.root.path().join("standby/17");
    assert_eq!(
        std::fs::read_link(new_standby.join("pg_wal")).unwrap(),
        fx.root.path().join("standby-wal/17")
    );
    let links: Vec<PathBuf> = std::fs::read_dir(new_standby.join("pg_tblspc"))
        .unwrap()
        .map(|e| std::fs::read_link(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(links, [fx.root.path().join("standby-tblspc-17")]);
    fx.sql(
        "postgres",
        "INSERT INTO t SELECT g, 'later' FROM generate_series(1051, 1060) g; INSERT INTO spaced SELECT g, 'later' FROM generate_series(1001, 1010) g",
    );
    for table in ["t", "spaced"] {
        let want = rows(17, &fx.socket, fx.port, table);
        wait_until("the rebuilt standby has the primary's rows", || {
            rows(17, &fx.socket, sb.port, table) == want
        });
    }
    assert_eq!(
        psql(
            17,
            &fx.socket,
            sb.port,
            "postgres",
            "postgres",
            "SELECT pg_is_in_recovery()"
        )
        .trim(),
        "t"
    );
    let streaming = fx.sql(
        "postgres",
        "SELECT count(*) FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE r.state = 'streaming' AND s.slot_name = 'standby1'",
    );
    assert_eq!(
        streaming.trim(),
        "1",
        "the standby streams through the slot its base backup created"
    );
}

#[test]
fn slot_that_falls_behind_after_the_preflight_is_refused_before_the_stop() {
    use std::io::{BufRead as _, BufReader};
    let fx = Fixture::new(17).running().build();
    configure(&fx, &[("wal_level", "logical")]);
    fx.sql(
        "postgres",
        "SELECT pg_create_logical_replication_slot('decoder', 'test_decoding')",
    );
    let start_time = fx.sql("postgres", "SELECT pg_postmaster_start_time()");
    let go = fx.root.path().join("go");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pgleap"))
        .args(upgrade_args(&fx, 18, &[]))
        .env(
            "PGLEAP_FAULT",
            format!("after:check:pause={}", go.display()),
        )
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    // The preflight passed (the slot had nothing to consume); pgleap waits before the window.
    while !seen.contains("fault point after:check") {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "pgleap ended early:\n{seen}"
        );
        seen.push_str(&line);
    }
    fx.sql(
        "postgres",
        "INSERT INTO t SELECT g, 'late' FROM generate_series(2001, 2010) g",
    );
    std::fs::write(&go, "").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "refused:\n{seen}{rest}");
    assert!(
        rest.contains("'decoder' (logical, test_decoding, database postgres) has no consumer connected and changes it has not confirmed"),
        "{rest}"
    );
    assert!(rest.contains("The old cluster was not changed"), "{rest}");
    assert!(!fx.new_datadir(18).exists());
    assert_eq!(
        fx.sql("postgres", "SELECT pg_postmaster_start_time()"),
        start_time,
        "the old server was never stopped"
    );
}

// A rehearsal starts servers on a copy of the subscriber: an apply worker there would connect
// to the publisher's slot and consume changes that then never reach the real subscriber.
#[test]
fn rehearsing_a_subscriber_leaves_the_publishers_changes_to_it() {
    let (publisher, subscriber) = publisher_and_subscriber(16);
    wait_in_sync(&publisher, &subscriber, 16);
    subscriber.stop();
    // Kept by the publisher's slot for the real subscriber, which is down.
    publisher.sql(
        "postgres",
        "INSERT INTO t SELECT g, 'while down' FROM generate_series(2001, 2100) g",
    );
    let confirmed = || {
        publisher.sql(
            "postgres",
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'sub'",
        )
    };
    let before = confirmed();
    let run = subscriber.pgleap(subscriber.args("rehearse", 17, &["--subscriptions", "disable"]));
    run.success();
    assert_eq!(
        confirmed(),
        before,
        "no copy consumed the publisher's slot:\n{}",
        run.stderr
    );
    subscriber.start();
    wait_in_sync(&publisher, &subscriber, 16);
}

/// A command run as the cluster owner (like `common::as_owner`), to be spawned.
fn owner_command(program: &Path, args: &[String]) -> std::process::Command {
    use std::os::unix::process::CommandExt as _;
    let o = common::owner();
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LANG", "C")
        .current_dir("/")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if common::is_root() {
        cmd.uid(o.uid).gid(o.gid);
    }
    cmd
}

/// The ids of `feed` rows inserted, as test_decoding prints them, in order.
fn decoded_ids(text: &str) -> Vec<i64> {
    text.lines()
        .filter(|l| l.contains("table public.feed: INSERT"))
        .filter_map(|l| l.split("id[integer]:").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .collect()
}

/// A 17 cluster with wal_level logical, a table `feed`, and a role `app` that writes it.
fn logical_17() -> Fixture {
    let fx = Fixture::new(17).running().build();
    configure(&fx, &[("wal_level", "logical")]);
    fx.sql(
        "postgres",
        "CREATE TABLE feed (id int PRIMARY KEY); CREATE ROLE app LOGIN; GRANT INSERT, SELECT ON feed TO app",
    );
    fx
}

/// One connection of role `app`: its error text, empty when it succeeded.
fn as_app(fx: &Fixture, major: u32, sql: &str) -> String {
    let out = as_owner(
        &bindir(major).join("psql"),
        &[
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            &fx.socket.display().to_string(),
            "-p",
            &fx.port.to_string(),
            "-U",
            "app",
            "-d",
            "postgres",
            "-c",
            sql,
        ],
    );
    if out.status.success() {
        String::new()
    } else {
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// `pg_recvlogical` consuming slot `decoder` into `out`, confirming every second, exiting
/// when the server stops.
fn recvlogical(fx: &Fixture, out: &Path) -> std::process::Child {
    let mut args: Vec<String> = [
        "-h",
        &fx.socket.display().to_string(),
        "-p",
        &fx.port.to_string(),
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-S",
        "decoder",
        "--start",
        "--no-loop",
        "-F",
        "1",
        "-s",
        "1",
        "-f",
    ]
    .map(String::from)
    .to_vec();
    args.push(out.display().to_string());
    owner_command(&bindir(17).join("pg_recvlogical"), &args)
        .spawn()
        .unwrap()
}

/// A client of role `app` inserting one row into `feed` per connection until stopped;
/// `stop` returns the errors its connections met.
struct Writer {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl Writer {
    fn start(fx: &Fixture) -> Writer {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = std::sync::Arc::clone(&done);
        let (socket, port) = (fx.socket.display().to_string(), fx.port.to_string());
        let thread = std::thread::spawn(move || {
            let mut errors = Vec::new();
            let mut n = 1;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let sql = format!("INSERT INTO feed VALUES ({n})");
                let args = [
                    "-X", "-q", "-h", &socket, "-p", &port, "-U", "app", "-d", "postgres", "-c",
                    &sql,
                ];
                let out = as_owner(&bindir(17).join("psql"), &args);
                if !out.status.success() {
                    errors.push(String::from_utf8_lossy(&out.stderr).into_owned());
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            errors
        });
        Writer { done, thread }
    }

    fn stop(self) -> String {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap().join("")
    }
}

#[test]
fn clients_are_fenced_off_while_the_consumer_confirms_every_change() {
    let fx = logical_17();
    fx.sql(
        "postgres",
        "SELECT pg_create_logical_replication_slot('decoder', 'test_decoding')",
    );
    let hba = fx.datadir.join("pg_hba.conf");
    let original = std::fs::read(&hba).unwrap();
    let out = fx.root.path().join("decoded");
    let consumer = recvlogical(&fx, &out);
    wait_until("the consumer streams", || {
        fx.sql(
            "postgres",
            "SELECT count(*) FROM pg_replication_slots WHERE active",
        )
        .trim()
            == "1"
    });
    // A session left open, and a client inserting one row per connection until the end.
    let idle_args: Vec<String> = [
        "-X",
        "-h",
        &fx.socket.display().to_string(),
        "-p",
        &fx.port.to_string(),
        "-U",
        "app",
        "-d",
        "postgres",
        "-c",
        "SELECT pg_sleep(600)",
    ]
    .map(String::from)
    .to_vec();
    let idle = owner_command(&bindir(17).join("psql"), &idle_args)
        .spawn()
        .unwrap();
    let writer = Writer::start(&fx);
    wait_until("the writer has written", || {
        fx.sql("postgres", "SELECT count(*) > 20 FROM feed").trim() == "t"
    });
    let run = fx.pgleap(upgrade_args(&fx, 18, &[]));
    let errors = writer.stop();
    run.success();
    for want in [
        "fenced the old server: ",
        "terminated client session ",
        " app@postgres (psql)",
        "Replication:\n  before the stop: fenced ",
        "slot 'decoder' (logical, test_decoding, database postgres): kept by pg_upgrade",
    ] {
        assert!(run.stderr.contains(want), "no {want:?} in:\n{}", run.stderr);
    }
    let idle_end = idle.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&idle_end.stderr)
            .contains("terminating connection due to administrator command"),
        "{idle_end:?}"
    );
    assert!(
        errors.contains("pg_hba.conf rejects connection for host \"[local]\", user \"app\", database \"postgres\""),
        "the writer was kept out by the fence: {errors}"
    );
    assert_eq!(
        std::fs::read(&hba).unwrap(),
        original,
        "the old cluster's pg_hba.conf is back, byte for byte"
    );
    assert_eq!(
        std::fs::read(fx.new_datadir(18).join("pg_hba.conf")).unwrap(),
        original,
        "the new cluster has the original"
    );
    let ended = consumer.wait_with_output().unwrap();
    let mut seen = decoded_ids(&std::fs::read_to_string(&out).unwrap_or_default());
    assert!(!seen.is_empty(), "{ended:?}");
    // What the consumer had not received before the stop is still in the kept slot.
    let rest = psql(
        18,
        &fx.socket,
        fx.port,
        "postgres",
        "postgres",
        "SELECT data FROM pg_logical_slot_get_changes('decoder', NULL, NULL)",
    );
    seen.extend(decoded_ids(&rest));
    seen.sort_unstable();
    let rows: Vec<i64> = psql(
        18,
        &fx.socket,
        fx.port,
        "postgres",
        "postgres",
        "SELECT id FROM feed ORDER BY id",
    )
    .lines()
    .map(|l| l.trim().parse().unwrap())
    .collect();
    assert_eq!(seen, rows, "the consumer saw every row written, each once");
    assert!(
        as_app(&fx, 18, "SELECT 1").is_empty(),
        "clients connect to the new cluster"
    );
}

#[test]
fn a_run_killed_while_fenced_leaves_pg_hba_to_rollback_and_resume() {
    use std::os::unix::fs::PermissionsExt as _;
    let fx = logical_17();
    fx.sql(
        "postgres",
        "SELECT pg_create_logical_replication_slot('decoder', 'test_decoding')",
    );
    let hba = fx.datadir.join("pg_hba.conf");
    std::fs::set_permissions(&hba, std::fs::Permissions::from_mode(0o640)).unwrap();
    let original = std::fs::read_to_string(&hba).unwrap();
    let mode = || std::fs::metadata(&hba).unwrap().permissions().mode() & 0o7777;
    let killed = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgleap"))
            .args(upgrade_args(&fx, 18, &[]))
            .env("PGLEAP_FAULT", "fenced")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            stderr.contains("fault point fenced: killing pgleap"),
            "{stderr}"
        );
        assert!(
            std::fs::read_to_string(&hba)
                .unwrap()
                .starts_with("# pgleap: fenced"),
            "{stderr}"
        );
        let refused = as_app(&fx, 17, "SELECT 1");
        assert!(
            refused.contains("pg_hba.conf rejects connection for host \"[local]\", user \"app\""),
            "{refused}"
        );
    };
    killed();
    let back = fx.pgleap([
        "rollback",
        "--old-datadir",
        &fx.datadir.display().to_string(),
    ]);
    back.success();
    assert!(back.stderr.contains("put the original"), "{}", back.stderr);
    assert_eq!(
        std::fs::read_to_string(&hba).unwrap(),
        original,
        "rollback put it back"
    );
    assert_eq!(mode(), 0o640);
    assert_eq!(
        as_app(&fx, 17, "INSERT INTO feed VALUES (1)"),
        "",
        "the old server admits clients again"
    );

    let consume = || {
        decoded_ids(&fx.sql(
            "postgres",
            "SELECT data FROM pg_logical_slot_get_changes('decoder', NULL, NULL)",
        ))
    };
    assert_eq!(consume(), [1]);

    killed();
    let resumed = fx.pgleap(upgrade_args(&fx, 18, &[]));
    resumed.success();
    assert!(
        resumed.stderr.contains("put the original"),
        "{}",
        resumed.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&hba).unwrap(),
        original,
        "the resumed upgrade put it back:\n{}",
        resumed.stderr
    );
    assert_eq!(mode(), 0o640);
    fx.sql("postgres", "INSERT INTO feed VALUES (2)");
    assert_eq!(consume(), [2], "decoding continues on 18, each row once");
}

#[test]
fn slots_drop_drops_the_lagging_slot_of_17_and_keeps_the_caught_up_one() {
    let fx = logical_17();
    fx.sql(
        "postgres",
        "SELECT pg_create_logical_replication_slot('keeper', 'test_decoding'); \
         SELECT pg_create_logical_replication_slot('laggard', 'test_decoding')",
    );
    fx.sql("postgres", "INSERT INTO feed SELECT generate_series(1, 10)");
    let consumed = fx.sql(
        "postgres",
        "SELECT data FROM pg_logical_slot_get_changes('keeper', NULL, NULL)",
    );
    assert_eq!(decoded_ids(&consumed).len(), 10);
    let run = fx.pgleap(upgrade_args(&fx, 18, &["--slots", "drop"]));
    run.success();
    for want in [
        "'laggard' (logical, test_decoding, database postgres): has not caught up: dropped on the old cluster right before the stop (--slots drop)",
        "dropped logical replication slot 'laggard' (--slots drop): 'laggard' (logical, test_decoding, database postgres) has no consumer connected and changes it has not confirmed",
        "slot 'keeper' (logical, test_decoding, database postgres): kept by pg_upgrade",
    ] {
        assert!(run.stderr.contains(want), "no {want:?} in:\n{}", run.stderr);
    }
    let header = "  slot 'laggard' (logical, test_decoding, database postgres): dropped on the old cluster right before the stop (--slots drop: ";
    let recreate = printed_commands(&run.stderr, header);
    assert_eq!(recreate.len(), 1, "{recreate:?}");
    assert!(
        run.stderr
            .contains("resynchronize the consumer from a fresh copy of the data"),
        "the consumer's next step: {}",
        run.stderr
    );
    assert_eq!(
        fx.sql(
            "postgres",
            "SELECT string_agg(slot_name, ',') FROM pg_replication_slots"
        )
        .trim(),
        "keeper"
    );
    fx.sql(
        "postgres",
        "INSERT INTO feed SELECT generate_series(11, 15)",
    );
    let changes = fx.sql(
        "postgres",
        "SELECT data FROM pg_logical_slot_get_changes('keeper', NULL, NULL)",
    );
    assert_eq!(
        decoded_ids(&changes),
        [11, 12, 13, 14, 15],
        "decoding continues, each row once"
    );
    run_as_owner("", &recreate);
    assert_eq!(
        fx.sql(
            "postgres",
            "SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots"
        )
        .trim(),
        "keeper,laggard",
        "the printed command recreated it"
    );
    let status = fx.pgleap(["status", "--old-datadir", &fx.datadir.display().to_string()]);
    status.success();
    assert!(status.stderr.contains(header), "{}", status.stderr);
}

#[test]
fn subscriber_of_16_is_resumed_by_pgleap_with_the_opt_in() {
    let (publisher, subscriber) = publisher_and_subscriber(16);
    publisher.sql(
        "postgres",
        "INSERT INTO t SELECT g, 'before' FROM generate_series(1001, 1100) g",
    );
    wait_in_sync(&publisher, &subscriber, 16);
    // Written while the subscriber goes down: applied before, or kept by the slot.
    publisher.sql(
        "postgres",
        "INSERT INTO t SELECT g, 'during' FROM generate_series(1101, 1200) g",
    );
    let run = subscriber.pgleap(upgrade_args(
        &subscriber,
        17,
        &["--subscriptions", "resume"],
    ));
    run.success();
    for want in [
        "pgleap resumes it after the start when its recorded state allows it",
        "subscription postgres.sub: resumed by pgleap (--subscriptions resume): its origin set to ",
        "  subscription postgres.sub from ",
    ] {
        assert!(run.stderr.contains(want), "no {want:?} in:\n{}", run.stderr);
    }
    assert!(
        !run.stderr.contains("Resume it, in this order"),
        "nothing is left to run by hand:\n{}",
        run.stderr
    );
    publisher.sql(
        "postgres",
        "INSERT INTO t SELECT g, 'after' FROM generate_series(1201, 1300) g",
    );
    wait_in_sync(&publisher, &subscriber, 17);
    let count = psql(
        17,
        &subscriber.socket,
        subscriber.port,
        "postgres",
        "postgres",
        "SELECT count(*), count(DISTINCT id) FROM t",
    );
    assert_eq!(count.trim(), "1300|1300", "no row lost, none twice");
    let state = psql(
        17,
        &subscriber.socket,
        subscriber.port,
        "postgres",
        "postgres",
        "SELECT subenabled, subslotname FROM pg_subscription",
    );
    assert_eq!(state.trim(), "t|sub", "enabled, on its own slot");
    let status = subscriber.pgleap([
        "status",
        "--old-datadir",
        &subscriber.datadir.display().to_string(),
    ]);
    status.success();
    assert!(
        status
            .stderr
            .contains("resumed by pgleap (--subscriptions resume)"),
        "{}",
        status.stderr
    );
}

#[test]
fn a_subscription_still_synchronizing_is_not_resumed_and_the_report_says_why() {
    let (publisher, subscriber) = publisher_and_subscriber(16);
    wait_in_sync(&publisher, &subscriber, 16);
    // A table whose initial copy keeps failing (a row the subscriber already has): it never
    // reaches the ready state.
    for fx in [&publisher, &subscriber] {
        fx.sql(
            "postgres",
            "CREATE TABLE extra (id int PRIMARY KEY); INSERT INTO extra VALUES (1)",
        );
    }
    publisher.sql("postgres", "ALTER PUBLICATION pub ADD TABLE extra");
    subscriber.sql("postgres", "ALTER SUBSCRIPTION sub REFRESH PUBLICATION");
    let states = subscriber.sql(
        "postgres",
        "SELECT count(*) FILTER (WHERE srsubstate = 'r') || ' of ' || count(*) FROM pg_subscription_rel",
    );
    assert_eq!(states.trim(), "1 of 2");
    let run = subscriber.pgleap(upgrade_args(
        &subscriber,
        17,
        &["--subscriptions", "resume"],
    ));
    run.success();
    for want in [
        "subscription postgres.sub: not resumed: 1 of its 2 tables were still being synchronized (not in state ready)",
        "(1 of 2 tables were ready). pgleap did not resume it: 1 of its 2 tables were still being synchronized",
    ] {
        assert!(run.stderr.contains(want), "no {want:?} in:\n{}", run.stderr);
    }
    assert_eq!(
        printed_commands(&run.stderr, "  subscription postgres.sub from").len(),
        7,
        "the statements are printed instead"
    );
    let state = psql(
        17,
        &subscriber.socket,
        subscriber.port,
        "postgres",
        "postgres",
        "SELECT subenabled FROM pg_subscription",
    );
    assert_eq!(state.trim(), "f", "left disabled");
}

#[test]
fn subscriber_of_17_reports_its_state_on_the_new_cluster() {
    let (publisher, subscriber) = publisher_and_subscriber(17);
    wait_in_sync(&publisher, &subscriber, 17);
    let run = subscriber.pgleap(upgrade_args(
        &subscriber,
        18,
        &["--subscriptions", "resume"],
    ));
    run.success();
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("  subscription postgres.sub from "))
        .unwrap_or_else(|| panic!("no subscription line in:\n{}", run.stderr));
    assert!(
        line.contains(
            "kept by pg_upgrade with its table states and origin; it resumes by itself; "
        ) && line.ends_with(", 1 of 1 tables ready"),
        "{line}"
    );
    publisher.sql(
        "postgres",
        "INSERT INTO t SELECT g, 'after' FROM generate_series(1001, 1100) g",
    );
    wait_in_sync(&publisher, &subscriber, 18);
}

/// `check` of a stopped subscriber reads its catalog from a fenced start: held there for a
/// few seconds, that server starts no apply worker, so the publisher's slot keeps what the
/// real subscriber has not received, and the subscriber's table is as it was.
#[test]
fn check_of_a_stopped_subscriber_consumes_nothing() {
    let (publisher, subscriber) = publisher_and_subscriber(16);
    wait_in_sync(&publisher, &subscriber, 16);
    subscriber.stop();
    publisher.sql(
        "postgres",
        "INSERT INTO t SELECT g, 'while down' FROM generate_series(3001, 3100) g",
    );
    let confirmed = || {
        publisher.sql(
            "postgres",
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'sub'",
        )
    };
    let before = confirmed();
    let gate = subscriber.root.path().join("go");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pgleap"));
    cmd.args(subscriber.args("check", 17, &["--subscriptions", "disable"]))
        .env(
            "PGLEAP_FAULT",
            format!("fenced-old-up:pause={}", gate.display()),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    wait_until("the fenced start of the subscriber", || {
        subscriber.datadir.join("postmaster.pid").exists()
    });
    // Long enough for an apply worker to start, connect and confirm (well under a second
    // when one is allowed).
    std::thread::sleep(Duration::from_secs(4));
    let during = confirmed();
    std::fs::write(&gate, "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        during, before,
        "the fenced subscriber consumed from the publisher"
    );
    assert_eq!(confirmed(), before);
    subscriber.start();
    wait_in_sync(&publisher, &subscriber, 16);
}

/// pg_upgrade keeps a 17+ subscription's enabled state: one disabled after the preflight
/// (by hand here) arrives disabled, and `--subscriptions resume` must not enable it.
#[test]
fn subscription_of_17_disabled_before_the_stop_stays_disabled() {
    let (publisher, subscriber) = publisher_and_subscriber(17);
    wait_in_sync(&publisher, &subscriber, 17);
    let args = upgrade_args(&subscriber, 18, &["--subscriptions", "resume"]);
    let paused = common::Paused::start(&subscriber, &args, "before:stop-old");
    subscriber.sql("postgres", "ALTER SUBSCRIPTION sub DISABLE");
    let run = paused.resume();
    run.success();
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("  subscription postgres.sub from "))
        .unwrap_or_else(|| panic!("no subscription line in:\n{}", run.stderr));
    assert!(
        line.ends_with(": kept by pg_upgrade with its table states and origin; on the new cluster: disabled, 1 of 1 tables ready. It was enabled when pgleap read it before the window, and pg_upgrade keeps a subscription's enabled state, so it was disabled before the old server stopped (by hand, or by disable_on_error after an apply error); pgleap leaves it disabled. Once its cause is dealt with: ALTER SUBSCRIPTION \"sub\" ENABLE"),
        "{line}"
    );
    let enabled = psql(
        18,
        &subscriber.socket,
        subscriber.port,
        "postgres",
        "postgres",
        "SELECT subenabled FROM pg_subscription",
    );
    assert_eq!(enabled.trim(), "f", "left disabled");
}

/// The resume sequence of a 16 subscriber runs, but the publisher's slot was dropped while
/// the subscriber was down: its worker never streams, so pgleap disables it again and the
/// report says what ran and what is left.
#[test]
fn a_subscription_whose_publisher_slot_is_gone_is_disabled_again() {
    let (publisher, subscriber) = publisher_and_subscriber(16);
    wait_in_sync(&publisher, &subscriber, 16);
    publisher.sql(
        "postgres",
        "INSERT INTO t SELECT g, 'before' FROM generate_series(1001, 1100) g",
    );
    wait_in_sync(&publisher, &subscriber, 16);
    let args = upgrade_args(&subscriber, 17, &["--subscriptions", "resume"]);
    let paused = common::Paused::start(&subscriber, &args, "after:stop-old");
    wait_until("the publisher's slot is released", || {
        publisher
            .sql(
                "postgres",
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'sub' AND NOT active",
            )
            .trim()
            == "1"
    });
    publisher.sql("postgres", "SELECT pg_drop_replication_slot('sub')");
    let run = paused.resume();
    run.success();
    for want in [
        "subscription postgres.sub: not resumed: the 7 statements below ran, but its apply worker did not stream from the publisher within 20s (the new server's log says why: for a slot gone from the publisher, replication slot \"sub\" does not exist); pgleap disabled it again; once the cause is fixed, run only ALTER SUBSCRIPTION \"sub\" ENABLE. If the publisher's slot 'sub' is gone, the changes it kept since the old cluster stopped are gone with it: those rows must be brought over another way",
        "Resume it, in this order:",
    ] {
        assert!(run.stderr.contains(want), "no {want:?} in:\n{}", run.stderr);
    }
    let state = psql(
        17,
        &subscriber.socket,
        subscriber.port,
        "postgres",
        "postgres",
        "SELECT subenabled, subslotname FROM pg_subscription",
    );
    assert_eq!(state.trim(), "f|sub", "disabled again, on its own slot");
}

/// The resume sequence of a 16 subscriber fails partway (the publisher down, so REFRESH
/// PUBLICATION cannot reach it) after it enabled the subscription: pgleap disables it again,
/// the report says which statements ran, and running the printed statements from the first
/// once the publisher is back brings exactly the publisher's rows.
#[test]
fn a_resume_that_fails_partway_is_disabled_again_and_the_statements_finish_it() {
    let (publisher, subscriber) = publisher_and_subscriber(16);
    publisher.sql(
        "postgres",
        "INSERT INTO t SELECT g, 'before' FROM generate_series(1001, 1100) g",
    );
    wait_in_sync(&publisher, &subscriber, 16);
    wait_until("the subscriber's table is ready", || {
        subscriber
            .sql(
                "postgres",
                "SELECT bool_and(srsubstate = 'r') FROM pg_subscription_rel",
            )
            .trim()
            == "t"
    });
    let args = upgrade_args(&subscriber, 17, &["--subscriptions", "resume"]);
    let paused = common::Paused::start(&subscriber, &args, "after:stop-old");
    // Kept by the publisher's slot while the subscriber is down.
    publisher.sql(
        "postgres",
        "INSERT INTO t SELECT g, 'during' FROM generate_series(1101, 1200) g",
    );
    publisher.stop();
    let run = paused.resume();
    run.success();
    for want in [
        "subscription postgres.sub: not resumed: statement 4 of 7 failed (ALTER SUBSCRIPTION \"sub\" REFRESH PUBLICATION WITH (copy_data = false)): ",
        "; statements 1 to 3 ran; pgleap disabled it again; each can be run again: run all of them, from number 1, once the cause is fixed",
    ] {
        assert!(run.stderr.contains(want), "no {want:?} in:\n{}", run.stderr);
    }
    let state = || {
        psql(
            17,
            &subscriber.socket,
            subscriber.port,
            "postgres",
            "postgres",
            "SELECT subenabled FROM pg_subscription",
        )
        .trim()
        .to_string()
    };
    assert_eq!(state(), "f", "nothing left enabled");
    publisher.start();
    let resume = printed_commands(&run.stderr, "  subscription postgres.sub from");
    assert_eq!(resume.len(), 7, "{resume:?}");
    run_as_owner("", &resume);
    assert_eq!(state(), "t");
    publisher.sql(
        "postgres",
        "INSERT INTO t SELECT g, 'after' FROM generate_series(1201, 1300) g",
    );
    wait_in_sync(&publisher, &subscriber, 17);
    let count = psql(
        17,
        &subscriber.socket,
        subscriber.port,
        "postgres",
        "postgres",
        "SELECT count(*), count(DISTINCT id) FROM t",
    );
    assert_eq!(count.trim(), "1300|1300", "no row lost, none twice");
}
