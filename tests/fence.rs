//! The fence before a 17+ old cluster with logical slots stops, as a careful DBA sets up
//! `pg_hba.conf`: rules only in included files, consumers admitted through a group, and the
//! files pgleap may not or cannot fence. Each on real clusters of this machine, 17 → 18.

mod common;

use std::os::unix::fs::MetadataExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Fixture, as_owner, bindir, chown, psql};

#[track_caller]
fn wait_until(what: &str, done: impl FnMut() -> bool) {
    common::wait_for(what, Duration::from_secs(90), done);
}

/// A running 17 cluster with wal_level logical, a table `feed`, a logical slot `decoder`,
/// a role `app` that writes `feed` and a role `feeder` that may consume the slot.
fn logical_17() -> Fixture {
    let fx = Fixture::new(17).running().build();
    fx.sql("postgres", "ALTER SYSTEM SET wal_level = 'logical'");
    fx.stop();
    fx.start();
    fx.sql(
        "postgres",
        "CREATE TABLE feed (id int PRIMARY KEY); CREATE ROLE app LOGIN; GRANT INSERT, SELECT ON feed TO app; \
         CREATE ROLE feeder LOGIN REPLICATION",
    );
    fx.sql(
        "postgres",
        "SELECT pg_create_logical_replication_slot('decoder', 'test_decoding')",
    );
    fx
}

/// Writes a file the cluster owner owns (mode 0600, as initdb's).
fn owned(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    chown(path.parent().unwrap());
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    chown(path);
}

/// Replaces the old cluster's `pg_hba.conf` and has the server load it.
fn set_hba(fx: &Fixture, text: &str) {
    owned(&fx.datadir.join("pg_hba.conf"), text);
    assert_eq!(fx.sql("postgres", "SELECT pg_reload_conf()").trim(), "t");
    assert_eq!(
        fx.sql(
            "postgres",
            "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL"
        )
        .trim(),
        "0"
    );
}

/// One connection of `user` to database postgres: its error text, empty when it succeeded.
fn connect_as(fx: &Fixture, major: u32, user: &str, sql: &str) -> String {
    let socket = fx.socket.display().to_string();
    let port = fx.port.to_string();
    let out = as_owner(
        &bindir(major).join("psql"),
        &[
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            &socket,
            "-p",
            &port,
            "-U",
            user,
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

/// `pg_recvlogical` as `feeder` consuming slot `decoder` into `out`, confirming every second;
/// `again`: reconnecting after a lost connection (every second) instead of exiting.
fn recvlogical(fx: &Fixture, out: &Path, again: bool) -> std::process::Child {
    use std::os::unix::process::CommandExt as _;
    let o = common::owner();
    let mut cmd = std::process::Command::new(bindir(17).join("pg_recvlogical"));
    cmd.args(["-h", &fx.socket.display().to_string()])
        .args(["-p", &fx.port.to_string(), "-U", "feeder", "-d", "postgres"])
        .args(["-S", "decoder", "--start", "-F", "1", "-s", "1", "-f"])
        .arg(out)
        .args(if again { None } else { Some("--no-loop") })
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if common::is_root() {
        cmd.uid(o.uid).gid(o.gid);
    }
    cmd.spawn().unwrap()
}

/// The walsender serving slot `decoder`, once one does.
fn consumer_pid(fx: &Fixture) -> Option<String> {
    let pid = fx.sql(
        "postgres",
        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'decoder' AND active",
    );
    Some(pid.trim().to_string()).filter(|p| !p.is_empty())
}

/// A client of role `app` inserting one row per connection until stopped; `stop` returns
/// the errors its connections met.
struct Writer {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl Writer {
    fn start(fx: &Fixture) -> Writer {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = std::sync::Arc::clone(&done);
        let (socket, port) = (fx.socket.clone(), fx.port);
        let thread = std::thread::spawn(move || {
            let mut errors = Vec::new();
            let mut n = 1;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let sql = format!("INSERT INTO feed VALUES ({n})");
                let args = [
                    "-X",
                    "-q",
                    "-h",
                    &socket.display().to_string(),
                    "-p",
                    &port.to_string(),
                    "-U",
                    "app",
                    "-d",
                    "postgres",
                    "-c",
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

/// The ids of `feed` rows inserted, as test_decoding prints them.
fn decoded_ids(text: &str) -> Vec<i64> {
    text.lines()
        .filter(|l| l.contains("table public.feed: INSERT"))
        .filter_map(|l| l.split("id[integer]:").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Each file's path, bytes, owner and mode.
fn files(paths: &[PathBuf]) -> Vec<(PathBuf, Vec<u8>, u32, u32)> {
    paths
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).unwrap();
            (p.clone(), std::fs::read(p).unwrap(), m.uid(), m.mode())
        })
        .collect()
}

fn upgrade(fx: &Fixture) -> Vec<String> {
    fx.args("upgrade", 18, &[])
}

#[test]
fn fence_follows_the_rules_of_included_files() {
    let fx = logical_17();
    // Every rule in included files: pgleap's own access, the consumer's (an @file list two
    // includes deep, relative to the file naming it) and the client's.
    let d = &fx.datadir;
    owned(
        &d.join("hba.d/10-local.conf"),
        "local all postgres trust\nlocal replication all trust\ninclude ../feeders.conf\n",
    );
    owned(&d.join("feeders.conf"), "local all @feeders.list trust\n");
    owned(&d.join("feeders.list"), "feeder\n");
    owned(&d.join("hba.d/20-apps.conf"), "local all app trust\n");
    set_hba(
        &fx,
        "# rules live in hba.d\ninclude_dir hba.d\ninclude_if_exists absent.conf\n",
    );
    let hba_files: Vec<PathBuf> = [
        "pg_hba.conf",
        "hba.d/10-local.conf",
        "feeders.conf",
        "feeders.list",
        "hba.d/20-apps.conf",
    ]
    .iter()
    .map(|f| d.join(f))
    .collect();
    let before = files(&hba_files);
    let out = fx.root.path().join("decoded");
    let consumer = recvlogical(&fx, &out, false);
    wait_until("the consumer streams", || consumer_pid(&fx).is_some());
    let writer = Writer::start(&fx);
    wait_until("the writer has written", || {
        fx.sql("postgres", "SELECT count(*) > 20 FROM feed").trim() == "t"
    });
    let run = fx.pgleap(upgrade(&fx));
    let errors = writer.stop();
    run.success();
    assert!(!run.stderr.contains("hba-fence-skipped"), "{}", run.stderr);
    for want in [
        "fenced the old server: ",
        "slot 'decoder' (logical, test_decoding, database postgres): kept by pg_upgrade",
    ] {
        assert!(run.stderr.contains(want), "no {want:?} in:\n{}", run.stderr);
    }
    assert!(
        errors.contains(
            "pg_hba.conf rejects connection for host \"[local]\", user \"app\", database \"postgres\""
        ),
        "the writer was kept out by the fence: {errors}"
    );
    assert_eq!(
        files(&hba_files),
        before,
        "the old files are back as they were"
    );
    let new = fx.new_datadir(18);
    for f in [
        "hba.d/10-local.conf",
        "feeders.conf",
        "feeders.list",
        "hba.d/20-apps.conf",
    ] {
        assert_eq!(
            std::fs::read(new.join(f)).unwrap(),
            std::fs::read(d.join(f)).unwrap(),
            "the new cluster has {f}"
        );
    }
    consumer.wait_with_output().unwrap();
    let mut seen = decoded_ids(&std::fs::read_to_string(&out).unwrap_or_default());
    assert!(!seen.is_empty(), "the consumer decoded before the stop");
    seen.extend(decoded_ids(&fx.sql(
        "postgres",
        "SELECT data FROM pg_logical_slot_get_changes('decoder', NULL, NULL)",
    )));
    seen.sort_unstable();
    let rows: Vec<i64> = fx
        .sql("postgres", "SELECT id FROM feed ORDER BY id")
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(seen, rows, "the consumer saw every row written, each once");
    assert_eq!(
        connect_as(&fx, 18, "app", "SELECT 1"),
        "",
        "app connects to 18"
    );
}

#[test]
fn a_consumer_admitted_through_its_group_reconnects_while_fenced() {
    let fx = logical_17();
    fx.sql(
        "postgres",
        "CREATE ROLE feeders NOLOGIN; CREATE ROLE team NOLOGIN; GRANT feeders TO team; GRANT team TO feeder",
    );
    let text = "local all postgres trust\nlocal replication all trust\nlocal all +feeders trust\nlocal all /^ap+$ trust\n";
    set_hba(&fx, text);
    let hba = fx.datadir.join("pg_hba.conf");
    let out = fx.root.path().join("decoded");
    let mut consumer = recvlogical(&fx, &out, true);
    wait_until("the consumer streams", || consumer_pid(&fx).is_some());
    assert_eq!(
        connect_as(&fx, 17, "app", "INSERT INTO feed VALUES (1)"),
        ""
    );
    let paused = common::Paused::start(&fx, &upgrade(&fx), "fenced");
    let fenced = std::fs::read_to_string(&hba).unwrap();
    assert!(
        fenced.contains("\nlocal all \"feeder\" trust\n") && !fenced.contains("/^ap+$"),
        "the group's line admits the consumer by name, the regex's line is gone:\n{fenced}"
    );
    let refused = connect_as(&fx, 17, "app", "SELECT 1");
    assert!(
        refused.contains("pg_hba.conf rejects connection for host \"[local]\", user \"app\""),
        "{refused}"
    );
    // The consumer loses its connection and reconnects through the fence.
    let first = consumer_pid(&fx).unwrap();
    fx.sql("postgres", &format!("SELECT pg_terminate_backend({first})"));
    wait_until("the consumer reconnects", || {
        consumer_pid(&fx).is_some_and(|p| p != first)
    });
    assert_eq!(connect_as(&fx, 17, "feeder", "SELECT 1"), "");
    let run = paused.resume();
    let _ = consumer.kill();
    let _ = consumer.wait();
    run.success();
    assert!(
        run.stderr.contains(
            "slot 'decoder' (logical, test_decoding, database postgres): kept by pg_upgrade"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&hba).unwrap(),
        text,
        "pg_hba.conf is back"
    );
}

#[test]
fn a_pg_hba_pgleap_may_not_fence_is_left_alone_with_a_warning() {
    let fx = logical_17();
    let hba = fx.datadir.join("pg_hba.conf");
    std::os::unix::fs::chown(&hba, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&hba, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = files(std::slice::from_ref(&hba));
    let run = fx.pgleap(upgrade(&fx));
    run.success();
    let owner = common::owner().name;
    assert!(
        run.stderr.contains(&format!(
            "could not fence {}: it is not a text file owned by {owner}; the old server admitted clients until it stopped while the logical replication consumers caught up (sessions were still terminated at each poll)",
            hba.display()
        )),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("fenced the old server"),
        "{}",
        run.stderr
    );
    assert_eq!(files(&[hba]), before, "pg_hba.conf untouched, still root's");
}

#[test]
fn a_fenced_file_the_server_rejects_is_put_back_with_a_warning() {
    let fx = logical_17();
    let hba = fx.datadir.join("pg_hba.conf");
    let before = files(std::slice::from_ref(&hba));
    let paused = common::Paused::start(&fx, &upgrade(&fx), "fence-written");
    // Something else edits the file meanwhile, leaving a line the server cannot parse.
    let fenced = std::fs::read_to_string(&hba).unwrap();
    let broken = format!("{fenced}local all app\n");
    std::fs::write(&hba, &broken).unwrap();
    let run = paused.resume();
    run.success();
    let line = broken.lines().count();
    assert!(
        run.stderr.contains(&format!(
            "could not fence {0}: the server rejected the fenced file ({0}:{line}: end-of-line before authentication method), so the original was put back; the old server admitted clients",
            hba.display()
        )),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("fenced the old server"),
        "{}",
        run.stderr
    );
    assert_eq!(
        files(&[hba]),
        before,
        "pg_hba.conf is the original, byte for byte"
    );
}

/// Errors in `pg_hba.conf` on disk (edited without a reload: the server still runs with the
/// rules it loaded before). Present when the upgrade starts, the start of the new cluster with
/// its carried files refuses them in the check step; made after that step (pgleap held at
/// `after:check`), the fence refuses them before the stop.
#[test]
fn errors_in_pg_hba_on_disk_are_refused_before_the_stop() {
    let fx = logical_17();
    let hba = fx.datadir.join("pg_hba.conf");
    let original = std::fs::read_to_string(&hba).unwrap();
    let text = original.clone() + "host all all\n";
    let line = text.lines().count();
    std::fs::write(&hba, &text).unwrap();
    fx.pgleap(upgrade(&fx)).refused(&format!(
        "refused: PostgreSQL 18 does not start with the configuration carried from the old cluster (end-of-line before IP address specification; line {line} of configuration file \"{}\"",
        hba.display()
    ));
    assert!(!fx.new_datadir(18).exists(), "the new cluster is gone");
    std::fs::write(&hba, &original).unwrap();

    let paused = common::Paused::start(&fx, &upgrade(&fx), "after:check");
    std::fs::write(&hba, &text).unwrap();
    let before = files(std::slice::from_ref(&hba));
    let run = paused.resume();
    run.refused(&format!(
        "the old server finds errors in {0} as it is on disk now ({0}:{line}: end-of-line before IP address specification): it still runs with the rules it loaded before, which pgleap cannot fence, and neither it nor the new cluster, which gets this file, would start with it",
        hba.display()
    ));
    assert!(
        run.stderr.contains("Correct the file (SELECT file_name, line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL lists each error), reload the server, then run pgleap upgrade again"),
        "{}",
        run.stderr
    );
    assert_eq!(files(&[hba]), before, "pg_hba.conf untouched");
    assert_eq!(
        psql(
            17,
            &fx.socket,
            fx.port,
            "app",
            "postgres",
            "SELECT count(*) FROM feed"
        )
        .trim(),
        "0",
        "the old server still serves"
    );
    assert!(!fx.new_datadir(18).exists(), "the new cluster is gone");
}

/// A slot `--slots drop` dropped before the stop stays dropped after a rollback (recreated,
/// it would start at the current position and its consumer would miss changes without an
/// error); the rollback prints the command, which works.
#[test]
fn rollback_after_slots_drop_gives_the_slot_back_only_as_a_command() {
    let fx = logical_17();
    fx.sql("postgres", "INSERT INTO feed SELECT generate_series(1, 10)");
    let killed = std::process::Command::new(env!("CARGO_BIN_EXE_pgleap"))
        .args(fx.args("upgrade", 18, &["--slots", "drop"]))
        .env("PGLEAP_FAULT", "after:pg_upgrade")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&killed.stderr);
    for want in [
        "dropped logical replication slot 'decoder' (--slots drop)",
        "fault point after:pg_upgrade: killing pgleap",
    ] {
        assert!(stderr.contains(want), "no {want:?} in:\n{stderr}");
    }
    let back = fx.pgleap([
        "rollback",
        "--old-datadir",
        &fx.datadir.display().to_string(),
    ]);
    back.success();
    let header = "  logical replication slot 'decoder' was dropped before the stop (--slots drop) and the rollback does not recreate it: a slot created now starts at the old cluster's current position, so its consumer, which had confirmed up to ";
    let mut lines = back.stderr.lines().skip_while(|l| !l.starts_with(header));
    assert!(lines.next().is_some_and(|l| l.ends_with(
        ", would go on without an error and miss every change in between. Recreate it only to resynchronize that consumer from a fresh copy of the data:"
    )), "{}", back.stderr);
    let command: Vec<&str> = lines.take_while(|l| l.starts_with("    ")).collect();
    assert_eq!(command.len(), 1, "{}", back.stderr);
    let slots = || {
        fx.sql(
            "postgres",
            "SELECT string_agg(slot_name || ':' || plugin, ',') FROM pg_replication_slots",
        )
    };
    assert_eq!(slots().trim(), "", "the rollback recreated nothing");
    common::ok(
        &as_owner(Path::new("/bin/bash"), &["-ec", command[0].trim()]),
        "the printed command",
    );
    assert_eq!(
        slots().trim(),
        "decoder:test_decoding",
        "the printed command recreates it"
    );
}
