//! The container entrypoint, docker/pgleap-entrypoint.sh, run as a program: real clusters
//! from the fixture, PostgreSQL from the cache, the real pgleap, and a stub in place of the
//! official docker-entrypoint.sh that records what it was handed (PGDATA, uid, arguments).
//! Mounts and other uids need root: those tests say so and skip otherwise.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{Contents, Fixture, bindir, is_root, owner, snapshot, start_server, stop_server};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docker/pgleap-entrypoint.sh");

/// A uid with no passwd entry, as Kubernetes and OpenShift hand out.
const ARBITRARY_UID: u32 = 12345;

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn skip_unless_root(test: &str, why: &str) -> bool {
    if !is_root() {
        eprintln!("{test}: skipped, needs root ({why})");
    }
    !is_root()
}

/// What the stub handover saw.
#[derive(Debug)]
struct Handover {
    pgdata: PathBuf,
    uid: u32,
    ld_preload: String,
    args: Vec<String>,
}

/// How one run of the entrypoint ended.
struct Outcome {
    status: ExitStatus,
    stderr: String,
    handover: Option<Handover>,
}

impl Outcome {
    #[track_caller]
    fn handed_over(&self) -> &Handover {
        assert!(
            self.status.success(),
            "entrypoint failed ({}):\n{}",
            self.status,
            self.stderr
        );
        self.handover
            .as_ref()
            .unwrap_or_else(|| panic!("no handover:\n{}", self.stderr))
    }

    /// Exit `code`, `message` on stderr, and no handover.
    #[track_caller]
    fn failed(&self, code: i32, message: &str) -> &Self {
        assert_eq!(
            self.status.code(),
            Some(code),
            "expected exit {code} ({}):\n{}",
            self.status,
            self.stderr
        );
        assert!(
            self.stderr.contains(message),
            "stderr lacks {message:?}:\n{}",
            self.stderr
        );
        self.no_handover()
    }

    /// Killed by SIGKILL at a fault point (the entrypoint's own, or pgleap's: then the
    /// entrypoint exits 137), without handing over.
    #[track_caller]
    fn killed(&self) -> &Self {
        assert!(
            self.status.signal() == Some(9) || self.status.code() == Some(137),
            "expected a kill at the fault point ({}):\n{}",
            self.status,
            self.stderr
        );
        self.no_handover()
    }

    #[track_caller]
    fn no_handover(&self) -> &Self {
        assert!(
            self.handover.is_none(),
            "handed over after a failure: {:?}\n{}",
            self.handover,
            self.stderr
        );
        self
    }
}

/// One run of the entrypoint, for an image of PostgreSQL `new`.
struct Entrypoint {
    cmd: Command,
    stub: tempfile::TempDir,
}

impl Entrypoint {
    fn new(pgdata: &Path, new: u32) -> Entrypoint {
        let stub = tempfile::Builder::new()
            .prefix("pgleap-stub-")
            .tempdir()
            .unwrap();
        // Runs as other uids write the record too.
        std::fs::set_permissions(stub.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let script = stub.path().join("docker-entrypoint.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n{{ echo \"PGDATA=$PGDATA\"; echo \"uid=$(id -u)\"; echo \"LD_PRELOAD=${{LD_PRELOAD:-}}\"; for a; do echo \"arg=$a\"; done; }} >'{}'\n",
                stub.path().join("record").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cmd = Command::new(SCRIPT);
        // A container's entrypoint starts with SIGINT and SIGTERM at their defaults. A test
        // binary started as a background job of a non-interactive shell inherits SIGINT
        // ignored, and a shell cannot trap a signal ignored at its start: restore it.
        // SAFETY: signal(2) is async-signal-safe, and nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::signal::signal(
                    nix::sys::signal::Signal::SIGINT,
                    nix::sys::signal::SigHandler::SigDfl,
                )
                .map(|_| ())
                .map_err(std::io::Error::from)
            });
        }
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LANG", "C")
            .env("PGDATA", pgdata)
            .env("PG_MAJOR", new.to_string())
            .env("PGLEAP_NEW_BINDIR", bindir(new))
            .env("PGLEAP_BIN", env!("CARGO_BIN_EXE_pgleap"))
            .env("PGLEAP_HANDOVER", &script)
            .env("PGLEAP_POSTGRES_USER", owner().name)
            .env("PGLEAP_VOLUME", "/nonexistent/pgleap-test-volume")
            .env("PGLEAP_JOBS", "1")
            .current_dir("/")
            .stdin(Stdio::null());
        Entrypoint { cmd, stub }
    }

    /// The old major's binaries (the image's /usr/lib/postgresql/OLD/bin).
    fn old(self, major: u32) -> Self {
        self.env("PGLEAP_OLD_BINDIR", &bindir(major).display().to_string())
    }

    fn env(mut self, key: &str, value: &str) -> Self {
        self.cmd.env(key, value);
        self
    }

    fn args(mut self, args: &[&str]) -> Self {
        self.cmd.args(args);
        self
    }

    /// Runs it as a non-root uid, as `docker run --user` does.
    fn user(mut self, uid: u32, gid: u32) -> Self {
        self.cmd.uid(uid).gid(gid);
        self
    }

    fn run(mut self) -> Outcome {
        let out = self.cmd.output().unwrap();
        self.outcome(out.status, &out.stderr)
    }

    fn spawn(mut self) -> (Child, Entrypoint) {
        let child = self
            .cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        (child, self)
    }

    fn outcome(&self, status: ExitStatus, stderr: &[u8]) -> Outcome {
        let handover = std::fs::read_to_string(self.stub.path().join("record"))
            .ok()
            .map(|text| {
                let mut h = Handover {
                    pgdata: PathBuf::new(),
                    uid: u32::MAX,
                    ld_preload: String::new(),
                    args: Vec::new(),
                };
                for line in text.lines() {
                    match line.split_once('=') {
                        Some(("PGDATA", v)) => h.pgdata = PathBuf::from(v),
                        Some(("uid", v)) => h.uid = v.parse().unwrap(),
                        Some(("LD_PRELOAD", v)) => h.ld_preload = v.to_string(),
                        Some(("arg", v)) => h.args.push(v.to_string()),
                        _ => panic!("unexpected line in the handover record: {line}"),
                    }
                }
                h
            });
        Outcome {
            status,
            stderr: String::from_utf8_lossy(stderr).into_owned(),
            handover,
        }
    }
}

/// A stopped fixture of `major` at `layout` below its root, and what it holds as the
/// `new` major's client dumps it.
fn fixture(major: u32, new: u32, layout: &str) -> (Fixture, Contents) {
    settle(Fixture::new(major).layout(layout).running().build(), new)
}

fn settle(fx: Fixture, new: u32) -> (Fixture, Contents) {
    let before = fx.contents(fx.major, new, fx.port);
    fx.stop();
    (fx, before)
}

/// Starts the cluster in `datadir` with its carried configuration (the fixture's port and
/// socket) and asserts it holds what the old one held.
#[track_caller]
fn assert_holds(fx: &Fixture, major: u32, datadir: &Path, before: &Contents) {
    let log = fx.root.path().join(format!("server-{major}-after.log"));
    start_server(major, datadir, &log);
    let after = fx.contents(major, major, fx.port);
    stop_server(major, datadir);
    before.assert_same(&after);
}

/// pgleap's journal of the upgrade of `old` into `new_datadir`.
fn journal(new_datadir: &Path, old: u32, new: u32) -> serde_json::Value {
    let path = new_datadir.parent().unwrap().join(format!(
        ".pgleap-{}-{old}-to-{new}/journal.json",
        new_datadir.file_name().unwrap().to_string_lossy()
    ));
    serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// Asserts two snapshots are equal, naming only the entries that differ.
#[track_caller]
fn assert_unchanged(
    before: &BTreeMap<PathBuf, (u64, u32, u128)>,
    after: &BTreeMap<PathBuf, (u64, u32, u128)>,
    what: &str,
) {
    let changed: Vec<&PathBuf> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(
        changed.is_empty(),
        "{what}: the entrypoint changed {changed:?}"
    );
}

fn marker(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(".pgleap-relocated")).unwrap_or_default()
}

fn pg_version(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("PG_VERSION"))
        .ok()
        .map(|v| v.trim().to_string())
}

/// A tmpfs mounted over a fixture's data directory, holding the cluster at its root: a
/// volume mounted at PGDATA, as the images before 18 have it. Dropping it stops the servers
/// below it and unmounts it.
struct Tmpfs;

impl Tmpfs {
    fn over_datadir(fx: &Fixture) -> common::Tmpfs {
        let dir = fx.datadir.clone();
        let aside = dir.with_extension("orig");
        std::fs::rename(&dir, &aside).unwrap();
        let mounted = common::Tmpfs::mount(&dir, "256m", "0700");
        let d = dir.display().to_string();
        run("cp", &["-a", &format!("{}/.", aside.display()), &d]);
        std::fs::remove_dir_all(&aside).unwrap();
        mounted
    }
}

fn chown_tree(dir: &Path, uid: u32, gid: u32) {
    run(
        "chown",
        &["-R", &format!("{uid}:{gid}"), &dir.display().to_string()],
    );
}

#[test]
fn entrypoint_is_shellcheck_clean() {
    let out = match Command::new("shellcheck").arg(SCRIPT).output() {
        Ok(out) => out,
        Err(e) => {
            assert!(
                !is_root(),
                "shellcheck is missing ({e}); scripts/test installs it"
            );
            eprintln!("entrypoint_is_shellcheck_clean: skipped, no shellcheck ({e})");
            return;
        }
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn current_major_hands_over_at_once() {
    let fx = Fixture::new(17).layout("pgdata").build();
    let before = snapshot(fx.root.path());
    // pgleap is never needed: a run that called it would fail.
    let ep = || Entrypoint::new(&fx.datadir, 17).env("PGLEAP_BIN", "/nonexistent/pgleap");

    let out = ep().args(&["-c", "shared_buffers=32MB"]).run();
    let h = out.handed_over();
    assert_eq!(h.pgdata, fx.datadir);
    assert_eq!(h.args, ["postgres", "-c", "shared_buffers=32MB"]);
    assert_eq!(h.uid, nix::unistd::geteuid().as_raw());

    // One shot: nothing to do is a success.
    let out = ep().args(&["--leave-stopped"]).run();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    out.no_handover();
    assert!(out.stderr.contains("done"), "{}", out.stderr);

    // Other commands are handed over untouched, even without PGDATA.
    let out = ep()
        .env("PGDATA", "")
        .args(&["psql", "-h", "db", "-c", "SELECT 1"])
        .run();
    assert_eq!(
        out.handed_over().args,
        ["psql", "-h", "db", "-c", "SELECT 1"]
    );

    assert_unchanged(&before, &snapshot(fx.root.path()), "the current major");
}

// FIELD-FAILURES #3 and #2: the images before 18 mount the volume at PGDATA, which cannot be
// renamed, and link mode needs old and new on one filesystem.
#[test]
fn mount_point_pgdata_is_upgraded_inside_its_volume() {
    if skip_unless_root("mount_point_pgdata_is_upgraded_inside_its_volume", "mount") {
        return;
    }
    let (fx, before) = settle(
        Fixture::new(15).layout("pgdata").rich().running().build(),
        18,
    );
    let vol = Tmpfs::over_datadir(&fx);
    let ep = || {
        Entrypoint::new(&vol.path, 18)
            .old(15)
            .env("PGLEAP_MODE", "link")
    };
    let old = vol.path.join("15/docker");
    let new = vol.path.join("18/docker");

    // pgleap dies right after pg_upgrade: nothing may start, a rerun resumes.
    ep().env("PGLEAP_FAULT", "after:pg_upgrade").run().killed();
    assert_eq!(
        pg_version(&vol.path),
        None,
        "the volume root looks like a cluster"
    );
    assert_eq!(journal(&new, 15, 18)["state"], "upgraded");

    let out = ep().args(&["-c", "max_connections=20"]).run();
    let h = out.handed_over();
    assert_eq!(h.pgdata, new, "{}", out.stderr);
    assert_eq!(h.args, ["postgres", "-c", "max_connections=20"]);
    assert!(
        marker(&vol.path).contains("state=moved"),
        "{}",
        marker(&vol.path)
    );
    assert_eq!(pg_version(&old).as_deref(), Some("15"));
    let j = journal(&new, 15, 18);
    assert_eq!(j["state"], "done");
    assert_eq!(j["plan"]["mode"], "link");
    // Link mode worked: the new cluster's relation files are the old ones, on the volume.
    let linked = walkdir::WalkDir::new(new.join("base"))
        .into_iter()
        .filter_map(Result::ok)
        .any(|e| e.metadata().is_ok_and(|m| m.is_file() && m.nlink() > 1));
    assert!(linked, "no hard-linked relation file in {}", new.display());
    assert_eq!(
        std::fs::metadata(&new).unwrap().dev(),
        std::fs::metadata(&vol.path).unwrap().dev()
    );
    assert_holds(&fx, 18, &new, &before);

    // Every later start re-points PGDATA at once.
    let out = ep().run();
    assert_eq!(out.handed_over().pgdata, new);
    assert!(out.stderr.contains("nothing to do"), "{}", out.stderr);

    // A job's run says where the data now is, and that the volume is in the 18 layout.
    let out = ep().args(&["--leave-stopped"]).run();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    for part in [
        format!("Start PostgreSQL 18 with PGDATA={}", new.display()),
        "mount this volume at /var/lib/postgresql and leave PGDATA unset".into(),
    ] {
        assert!(out.stderr.contains(&part), "{part:?}:\n{}", out.stderr);
    }
    drop(vol);
}

#[test]
fn crash_while_moving_the_cluster_converges() {
    if skip_unless_root("crash_while_moving_the_cluster_converges", "mount") {
        return;
    }
    let (fx, before) = fixture(16, 17, "pgdata");
    let vol = Tmpfs::over_datadir(&fx);
    let ep = || Entrypoint::new(&fx.datadir, 17).old(16);

    ep().env("PGLEAP_FAULT", "entrypoint:relocate:3")
        .run()
        .killed();
    assert_eq!(pg_version(&fx.datadir), None, "PG_VERSION must move first");
    assert!(marker(&fx.datadir).contains("state=moving"));
    assert_eq!(
        pg_version(&fx.datadir.join("16/docker")).as_deref(),
        Some("16")
    );

    ep().env("PGLEAP_FAULT", "entrypoint:relocate:synced")
        .run()
        .killed();
    assert!(marker(&fx.datadir).contains("state=moving"));

    let out = ep().run();
    let new = fx.datadir.join("17/docker");
    assert_eq!(out.handed_over().pgdata, new);
    assert_holds(&fx, 17, &new, &before);
    drop(vol);
}

// FIELD-FAILURES #3: the 18 image's PGDATA is /var/lib/postgresql/18/docker with the volume
// at /var/lib/postgresql, where an image before 18 mounted at the parent left data/.
#[test]
fn eighteen_layout_upgrades_the_old_data_directory_into_pgdata() {
    let (fx, before) = fixture(15, 18, "data");
    let volume = fx.root.path();
    let pgdata = volume.join("18/docker");
    let ep = || {
        Entrypoint::new(&pgdata, 18)
            .old(15)
            .env("PGLEAP_VOLUME", &volume.display().to_string())
    };

    // Killed after initdb: PGDATA now holds an empty PostgreSQL 18 cluster, which must never
    // be handed over.
    ep().env("PGLEAP_FAULT", "after:initdb").run().killed();
    assert_eq!(pg_version(&pgdata).as_deref(), Some("18"));

    // One shot (a Kubernetes Job): resume, analyze, stop, exit 0.
    let out = ep().args(&["--leave-stopped"]).run();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    out.no_handover();
    let j = journal(&pgdata, 15, 18);
    assert_eq!(j["state"], "done");
    let steps: Vec<&str> = j["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(steps.contains(&"analyze"), "{steps:?}");
    assert!(!pgdata.join("postmaster.pid").exists(), "left running");
    assert_eq!(pg_version(&fx.datadir).as_deref(), Some("15"), "old moved");

    let out = ep().run();
    assert_eq!(out.handed_over().pgdata, pgdata);
    assert_holds(&fx, 18, &pgdata, &before);
}

#[test]
fn eighteen_layout_relocates_an_old_cluster_at_the_volume_root() {
    let (fx, before) = fixture(14, 18, "vol");
    let volume = fx.datadir.clone();
    let pgdata = volume.join("18/docker");
    let out = Entrypoint::new(&pgdata, 18)
        .old(14)
        .env("PGLEAP_VOLUME", &volume.display().to_string())
        .run();
    assert_eq!(out.handed_over().pgdata, pgdata);
    assert!(out.stderr.contains("at its root"), "{}", out.stderr);
    assert_eq!(pg_version(&volume.join("14/docker")).as_deref(), Some("14"));
    assert_holds(&fx, 18, &pgdata, &before);
}

#[test]
fn eighteen_layout_upgrades_a_volume_still_mounted_at_data() {
    if skip_unless_root(
        "eighteen_layout_upgrades_a_volume_still_mounted_at_data",
        "mount",
    ) {
        return;
    }
    let (fx, before) = fixture(16, 18, "data");
    let data = Tmpfs::over_datadir(&fx);
    let volume = fx.root.path();
    let out = Entrypoint::new(&volume.join("18/docker"), 18)
        .old(16)
        .env("PGLEAP_VOLUME", &volume.display().to_string())
        .env("PGLEAP_MODE", "link")
        .run();
    // Not into the 18 image's PGDATA, which is on another filesystem (an anonymous volume in
    // a container): on the volume that holds the data.
    let new = data.path.join("18/docker");
    assert_eq!(out.handed_over().pgdata, new, "{}", out.stderr);
    assert!(!volume.join("18").exists());
    assert_holds(&fx, 18, &new, &before);
    drop(data);
}

// FIELD-FAILURES #9: a data directory owned by another uid than the image's server user.
#[test]
fn uid_mismatch_is_refused_naming_both_uids() {
    if skip_unless_root("uid_mismatch_is_refused_naming_both_uids", "other uids") {
        return;
    }
    let fx = Fixture::new(15).layout("pgdata").build();
    // Other uids may look into the fixture's root, not into the data directory (0700).
    std::fs::set_permissions(fx.root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = snapshot(fx.root.path());
    let o = owner();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let nobody_uid = nobody.uid.as_raw();

    // The container runs as root; the image's server user is another uid.
    let out = Entrypoint::new(&fx.datadir, 18)
        .old(15)
        .env("PGLEAP_POSTGRES_USER", "nobody")
        .run();
    out.failed(3, &format!("belongs to uid {}", o.uid));
    for part in [
        format!("as nobody (uid {nobody_uid})"),
        "PGLEAP_CHOWN=true".into(),
        format!("--user {}:{}", o.uid, o.gid),
        "Nothing was changed".into(),
    ] {
        assert!(out.stderr.contains(&part), "{part:?}:\n{}", out.stderr);
    }

    // The container runs as another uid (docker run --user).
    let out = Entrypoint::new(&fx.datadir, 18)
        .old(15)
        .user(nobody_uid, nobody.gid.as_raw())
        .run();
    out.failed(3, &format!("belongs to uid {}", o.uid));
    assert!(
        out.stderr
            .contains(&format!("the container runs as uid {nobody_uid}")),
        "{}",
        out.stderr
    );
    assert_unchanged(&before, &snapshot(fx.root.path()), "a uid mismatch");
}

#[test]
fn chown_gives_a_foreign_cluster_to_the_server_user() {
    if skip_unless_root("chown_gives_a_foreign_cluster_to_the_server_user", "chown") {
        return;
    }
    let (fx, before) = fixture(16, 17, "pgdata");
    // Written by an image whose server user has another uid (Alpine's is 70, Debian's 999).
    chown_tree(&fx.datadir, ARBITRARY_UID, ARBITRARY_UID);
    let out = Entrypoint::new(&fx.datadir, 17)
        .old(16)
        .env("PGLEAP_CHOWN", "true")
        .run();
    let new = fx.datadir.clone();
    assert_eq!(out.handed_over().pgdata, new);
    assert_eq!(
        std::fs::metadata(fx.root.path().join("16")).unwrap().uid(),
        owner().uid
    );
    assert_eq!(std::fs::metadata(&new).unwrap().uid(), owner().uid);
    assert_holds(&fx, 17, &new, &before);
}

// FIELD-FAILURES #9: arbitrary uids in Kubernetes have no passwd entry, which initdb and
// pg_upgrade need; nss_wrapper provides one, as in the official image.
#[test]
fn arbitrary_uid_upgrades_with_nss_wrapper() {
    if skip_unless_root("arbitrary_uid_upgrades_with_nss_wrapper", "other uids") {
        return;
    }
    assert!(
        Path::new("/usr/lib/x86_64-linux-gnu/libnss_wrapper.so").exists()
            || Path::new("/usr/lib/aarch64-linux-gnu/libnss_wrapper.so").exists(),
        "libnss_wrapper.so is missing: scripts/test installs libnss-wrapper"
    );
    assert!(
        nix::unistd::User::from_uid(ARBITRARY_UID.into())
            .unwrap()
            .is_none()
    );
    let (fx, before) = fixture(15, 17, "pgdata");
    chown_tree(fx.root.path(), ARBITRARY_UID, ARBITRARY_UID);
    let out = Entrypoint::new(&fx.datadir, 17)
        .old(15)
        .user(ARBITRARY_UID, ARBITRARY_UID)
        .run();
    let new = fx.datadir.clone();
    let h = out.handed_over();
    assert_eq!(h.pgdata, new);
    assert_eq!(h.uid, ARBITRARY_UID);
    assert_eq!(h.ld_preload, "", "nss_wrapper leaked into the handover");
    assert_eq!(std::fs::metadata(&new).unwrap().uid(), ARBITRARY_UID);
    assert_eq!(journal(&new, 15, 17)["state"], "done");
    let o = owner();
    chown_tree(fx.root.path(), o.uid, o.gid);
    assert_holds(&fx, 17, &new, &before);
}

/// A stopped 15 fixture at `layout` that pg_upgrade --check refuses, and its row checksums.
fn unupgradable(layout: &str) -> (Fixture, BTreeMap<String, String>) {
    let fx = Fixture::new(15).layout(layout).running().build();
    // pg_upgrade --check refuses reg* types other than regclass, regrole and regtype in
    // user tables.
    fx.sql(
        "postgres",
        "CREATE TABLE fn_refs (f regproc); INSERT INTO fn_refs VALUES ('now'::regproc)",
    );
    let rows = fx.checksums(15, fx.port);
    fx.stop();
    (fx, rows)
}

// A failed upgrade must not hand over (to an empty or half-built cluster), and must leave the
// old cluster where the old image finds it: PGDATA.
#[test]
fn failed_upgrade_hands_nothing_over_and_puts_the_old_cluster_back() {
    let (fx, rows) = unupgradable("data/pgdata");
    let aside = fx.root.path().join("data/15");
    let marker = fx.root.path().join("data/.pgleap-pgdata-aside");
    let ep = || Entrypoint::new(&fx.datadir, 18).old(15);

    // Killed once the cluster is back in PGDATA, before the marker is gone: the rerun renames
    // it aside again, is refused again, and puts it back again.
    ep().env("PGLEAP_FAULT", "entrypoint:unaside:renamed")
        .run()
        .killed();
    assert_eq!(pg_version(&fx.datadir).as_deref(), Some("15"));
    assert!(marker.exists());
    assert!(!aside.exists());

    let out = ep().run();
    out.failed(3, "pg_upgrade");
    assert!(
        out.stderr.contains(&format!(
            "the PostgreSQL 15 cluster is back in {}, as the old image expects it",
            fx.datadir.display()
        )),
        "{}",
        out.stderr
    );
    assert_eq!(pg_version(&fx.datadir).as_deref(), Some("15"));
    assert!(!marker.exists());
    assert!(!aside.exists());

    // The old image starts it where it always was, with every row.
    fx.start();
    assert_eq!(rows, fx.checksums(15, fx.port));
    fx.stop();
}

// The same, for a volume mounted at PGDATA, where the cluster was moved into a subdirectory.
#[test]
fn failed_upgrade_moves_the_cluster_back_to_the_volume_root() {
    if skip_unless_root(
        "failed_upgrade_moves_the_cluster_back_to_the_volume_root",
        "mount",
    ) {
        return;
    }
    let (fx, rows) = unupgradable("pgdata");
    let vol = Tmpfs::over_datadir(&fx);
    let ep = || Entrypoint::new(&fx.datadir, 18).old(15);

    // Killed on the way back: a rerun finishes it first (then tries, and fails, again).
    ep().env("PGLEAP_FAULT", "entrypoint:return:2")
        .run()
        .killed();
    assert!(marker(&fx.datadir).contains("state=returning"));
    assert_eq!(pg_version(&fx.datadir), None, "PG_VERSION must return last");
    // Killed once everything is back but the marker.
    ep().env("PGLEAP_FAULT", "entrypoint:returned")
        .run()
        .killed();
    assert!(marker(&fx.datadir).contains("state=returning"));
    assert_eq!(pg_version(&fx.datadir).as_deref(), Some("15"));
    assert!(!fx.datadir.join("15").exists());

    let out = ep().run();
    out.failed(3, "pg_upgrade");
    assert!(out.stderr.contains("back at the root"), "{}", out.stderr);
    assert_eq!(pg_version(&fx.datadir).as_deref(), Some("15"));
    assert!(!fx.datadir.join(".pgleap-relocated").exists());
    assert!(!fx.datadir.join("15").exists());
    assert!(!fx.datadir.join("18/docker").exists());

    fx.start();
    assert_eq!(rows, fx.checksums(15, fx.port));
    fx.stop();
    drop(vol);
}

// docker stop sends SIGINT (the postgres image's STOPSIGNAL) to the entrypoint; pgleap must
// get it and stop at a safe point, and nothing may be handed over.
#[test]
fn stop_signal_reaches_pgleap_and_hands_nothing_over() {
    let (fx, before) = fixture(16, 17, "pgdata");
    let new = fx.datadir.clone();
    let resume = fx.root.path().join("resume");
    let (child, ep) = Entrypoint::new(&fx.datadir, 17)
        .old(16)
        .env(
            "PGLEAP_FAULT",
            &format!("before:stop-old:pause={}", resume.display()),
        )
        .spawn();
    let started = Instant::now();
    let journal_path = new
        .parent()
        .unwrap()
        .join(".pgleap-pgdata-16-to-17/journal.json");
    while !std::fs::read_to_string(&journal_path).is_ok_and(|t| t.contains("\"checked\"")) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "pgleap never reached stop-old"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&resume, "").unwrap();
    let out = child.wait_with_output().unwrap();
    let out = ep.outcome(out.status, &out.stderr);
    out.failed(130, "interrupted");

    let out = Entrypoint::new(&fx.datadir, 17).old(16).run();
    assert_eq!(out.handed_over().pgdata, new);
    assert_holds(&fx, 17, &new, &before);
}

/// One refusal: set the scene, run, expect `code` and `message` and no change on disk.
struct Refusal {
    what: &'static str,
    setup: fn(&Path),
    run: Entrypoint,
    code: i32,
    message: &'static str,
}

#[test]
#[allow(clippy::too_many_lines)] // one table of refusals, each checked the same way
fn refusals_change_nothing() {
    let fx = Fixture::new(15).layout("pgdata").build();
    let d = &fx.datadir;
    let ep = || Entrypoint::new(d, 18).old(15);
    let nothing: fn(&Path) = |_| {};
    let cases = [
        Refusal {
            what: "no old binaries",
            setup: nothing,
            run: ep().env("PGLEAP_OLD_BINDIR", "/nonexistent/bin"),
            code: 3,
            message: "has no PostgreSQL 15: use an image built with --build-arg PG_OLD=15",
        },
        Refusal {
            what: "newer than the image",
            setup: nothing,
            run: Entrypoint::new(d, 14),
            code: 3,
            message: "newer than this image's PostgreSQL 14",
        },
        Refusal {
            what: "postmaster.pid",
            setup: |d| std::fs::write(d.join("postmaster.pid"), "4242\n").unwrap(),
            run: ep(),
            code: 3,
            message: "postmaster.pid exists",
        },
        Refusal {
            what: "a sibling named like the old major",
            setup: |d| std::fs::create_dir(d.with_file_name("15")).unwrap(),
            run: ep(),
            code: 3,
            message: "/15 exists, where the PostgreSQL 15 cluster in ",
        },
        Refusal {
            what: "a bad boolean",
            setup: nothing,
            run: ep().env("PGLEAP_CHOWN", "maybe"),
            code: 2,
            message: "PGLEAP_CHOWN=maybe: expected true or false",
        },
        Refusal {
            what: "a tablespace inside the data directory",
            setup: |d| {
                std::os::unix::fs::symlink(d.join("inside"), d.join("pg_tblspc/99999")).unwrap();
            },
            run: ep(),
            code: 3,
            message: "inside the data directory; renaming the cluster would break it. Move the tablespace out of the data directory first",
        },
        Refusal {
            what: "a cluster older than 10",
            setup: |d| {
                std::fs::create_dir_all(d.with_file_name("ancient")).unwrap();
                std::fs::write(d.with_file_name("ancient/PG_VERSION"), "9.6\n").unwrap();
            },
            run: Entrypoint::new(&d.with_file_name("ancient"), 18),
            code: 3,
            message: "PG_VERSION says '9.6': pgleap upgrades PostgreSQL 10 and newer only",
        },
        Refusal {
            what: "the image's major at the root of the 18 volume",
            setup: |d| {
                std::fs::create_dir_all(d.with_file_name("vol18")).unwrap();
                std::fs::write(d.with_file_name("vol18/PG_VERSION"), "18\n").unwrap();
            },
            run: Entrypoint::new(&d.with_file_name("vol18/18/docker"), 18).env(
                "PGLEAP_VOLUME",
                &d.with_file_name("vol18").display().to_string(),
            ),
            code: 3,
            message: "holds a PostgreSQL 18 cluster at its root, but PGDATA is",
        },
        Refusal {
            what: "one shot without a cluster",
            setup: nothing,
            run: Entrypoint::new(&fx.root.path().join("sock"), 18).args(&["--leave-stopped"]),
            code: 3,
            message: "no PostgreSQL cluster found",
        },
    ];
    for case in cases {
        (case.setup)(d);
        let before = snapshot(fx.root.path());
        let out = case.run.run();
        assert_eq!(
            out.status.code(),
            Some(case.code),
            "{}: {}",
            case.what,
            out.stderr
        );
        out.failed(case.code, case.message);
        assert_unchanged(&before, &snapshot(fx.root.path()), case.what);
        for leftover in ["postmaster.pid", "pg_tblspc/99999", "../15"] {
            let p = d.join(leftover);
            if p.is_symlink() || p.is_file() {
                std::fs::remove_file(p).unwrap();
            } else if p.is_dir() {
                std::fs::remove_dir_all(p).unwrap();
            }
        }
    }
}

#[test]
fn root_only_refusals_change_nothing() {
    if skip_unless_root("root_only_refusals_change_nothing", "mount, other uids") {
        return;
    }
    let fx = Fixture::new(15).layout("pgdata").build();
    let ep = || Entrypoint::new(&fx.datadir, 18).old(15);

    // A mount point inside the data directory cannot be renamed with it.
    let inside = fx.datadir.join("pg_wal_mount");
    std::fs::create_dir(&inside).unwrap();
    let i = inside.display().to_string();
    run("mount", &["-t", "tmpfs", "-o", "size=1m", "tmpfs", &i]);
    let before = snapshot(fx.root.path());
    let out = ep().run();
    let after = snapshot(fx.root.path());
    run("umount", &[&i]);
    out.failed(
        3,
        &format!(
            "{i} is a mount point inside the old cluster, which would be renamed to {}: mount it elsewhere",
            fx.datadir.with_file_name("15").display()
        ),
    );
    assert_unchanged(&before, &after, "a mount point inside");
    std::fs::remove_dir(&inside).unwrap();

    // A volume mounted at PGDATA: its cluster moves into subdirectories, which must not exist.
    let vol = Tmpfs::over_datadir(&fx);
    let d = fx.datadir.display().to_string();
    for (what, dir, message) in [
        (
            "an entry named like the old major",
            "15",
            format!("{d}/15 exists inside the old cluster, where its data would move; rename it"),
        ),
        (
            "a non-empty target",
            "18/docker/base",
            format!(
                "{d}/18/docker, where the upgraded cluster goes, exists inside the old cluster and is not empty: move it away"
            ),
        ),
    ] {
        std::fs::create_dir_all(fx.datadir.join(dir)).unwrap();
        let before = snapshot(fx.root.path());
        ep().run().failed(3, &message);
        assert_unchanged(&before, &snapshot(fx.root.path()), what);
        let top = fx.datadir.join(dir.split('/').next().unwrap());
        std::fs::remove_dir_all(top).unwrap();
    }
    drop(vol);

    // PGLEAP_CHOWN needs root.
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let out = ep()
        .env("PGLEAP_CHOWN", "true")
        .user(nobody.uid.as_raw(), nobody.gid.as_raw())
        .run();
    out.failed(2, "PGLEAP_CHOWN=true needs the container to run as root");
}

/// A bare cluster of `major` made by initdb in `dir`, owned by the cluster owner.
fn initdb(major: u32, dir: &Path) {
    common::ok(
        &common::as_owner(
            &bindir(major).join("initdb"),
            &[
                "-D",
                &dir.display().to_string(),
                "--no-sync",
                "-A",
                "trust",
                "-U",
                "postgres",
            ],
        ),
        "initdb",
    );
}

/// Asserts some relation file in `datadir` has more than one link: link mode was used.
#[track_caller]
fn assert_linked(datadir: &Path) {
    let linked = walkdir::WalkDir::new(datadir.join("base"))
        .into_iter()
        .filter_map(Result::ok)
        .any(|e| e.metadata().is_ok_and(|m| m.is_file() && m.nlink() > 1));
    assert!(
        linked,
        "no hard-linked relation file in {}",
        datadir.display()
    );
}

#[track_caller]
fn assert_says(out: &Outcome, part: &str) {
    assert!(out.stderr.contains(part), "{part:?}:\n{}", out.stderr);
}

/// The refusal's whole text, as the entrypoint prints it.
fn refusal(message: &str) -> String {
    format!("pgleap-entrypoint.sh: refused: {message}\nNothing was changed.\n")
}

// Issue 18: the volume at /data, PGDATA=/data/15 under the old image and PGDATA=/data/17 under
// the new one. The entrypoint once missed /data/15 and handed over, and the official
// entrypoint initialized an empty cluster in /data/17.
#[test]
fn versioned_pgdata_upgrades_the_sibling_named_by_the_old_major() {
    let (fx, before) = fixture(15, 17, "data/{major}");
    let data = fx.root.path().join("data");
    let new = data.join("17");
    let ep = || Entrypoint::new(&new, 17).old(15).env("PGLEAP_MODE", "link");

    // Killed after initdb: PGDATA holds an empty PostgreSQL 17 cluster, which must never be
    // handed over; killed again right after pg_upgrade.
    ep().env("PGLEAP_FAULT", "after:initdb").run().killed();
    assert_eq!(pg_version(&new).as_deref(), Some("17"));
    ep().env("PGLEAP_FAULT", "after:pg_upgrade").run().killed();
    assert_eq!(journal(&new, 15, 17)["state"], "upgraded");

    let out = ep().run();
    assert_eq!(out.handed_over().pgdata, new, "{}", out.stderr);
    assert_says(
        &out,
        &format!(
            "the PostgreSQL 15 cluster stays in {0}/15: 'pgleap finalize --old-datadir {0}/15 --new-datadir {0}/17' removes it",
            data.display()
        ),
    );
    assert_eq!(journal(&new, 15, 17)["state"], "done");
    assert_eq!(pg_version(&data.join("15")).as_deref(), Some("15"));
    assert_linked(&new);
    assert_holds(&fx, 17, &new, &before);

    // A restart serves the same cluster: nothing to do, no refusal for the old directory.
    let out = ep().run();
    assert_eq!(out.handed_over().pgdata, new, "{}", out.stderr);
    assert_says(&out, "nothing to do");
    assert_holds(&fx, 17, &new, &before);

    // The next major: /data/15 was upgraded into /data/17 and is not a second candidate.
    let log = fx.root.path().join("server-17-again.log");
    start_server(17, &new, &log);
    let before18 = fx.contents(17, 18, fx.port);
    stop_server(17, &new);
    let new18 = data.join("18");
    let out = Entrypoint::new(&new18, 18)
        .old(17)
        .env("PGLEAP_MODE", "link")
        .run();
    assert_eq!(out.handed_over().pgdata, new18, "{}", out.stderr);
    assert_says(
        &out,
        &format!(
            "leaving the PostgreSQL 15 cluster in {0}/15 alone: pgleap upgraded it into {0}/17",
            data.display()
        ),
    );
    assert_holds(&fx, 18, &new18, &before18);
}

// Issue 18: the official images' advice when the volume's root cannot be the data directory,
// PGDATA=/var/lib/postgresql/data/pgdata, kept across majors: a plain directory in the volume,
// renamed aside and upgraded back into the same path.
#[test]
fn pgdata_subdirectory_is_upgraded_in_place() {
    let (fx, before) = fixture(16, 18, "data/pgdata");
    let aside = fx.root.path().join("data/16");
    let ep = || {
        Entrypoint::new(&fx.datadir, 18)
            .old(16)
            .env("PGLEAP_MODE", "link")
    };

    // Killed after the marker, before the rename; then right after the rename; then pgleap
    // right after pg_upgrade. Each rerun goes on from there.
    ep().env("PGLEAP_FAULT", "entrypoint:aside:marked")
        .run()
        .killed();
    assert_eq!(pg_version(&fx.datadir).as_deref(), Some("16"));
    assert!(!aside.exists());
    ep().env("PGLEAP_FAULT", "entrypoint:aside:renamed")
        .run()
        .killed();
    assert!(!fx.datadir.exists());
    assert_eq!(pg_version(&aside).as_deref(), Some("16"));
    ep().env("PGLEAP_FAULT", "after:pg_upgrade").run().killed();
    assert_eq!(journal(&fx.datadir, 16, 18)["state"], "upgraded");

    let out = ep().args(&["-c", "max_connections=20"]).run();
    let h = out.handed_over();
    assert_eq!(h.pgdata, fx.datadir, "{}", out.stderr);
    assert_eq!(h.args, ["postgres", "-c", "max_connections=20"]);
    assert_eq!(journal(&fx.datadir, 16, 18)["state"], "done");
    assert_eq!(pg_version(&aside).as_deref(), Some("16"));
    assert_linked(&fx.datadir);
    assert_holds(&fx, 18, &fx.datadir, &before);

    // A restart: the same cluster, PGDATA unchanged.
    let out = ep().run();
    assert_eq!(out.handed_over().pgdata, fx.datadir, "{}", out.stderr);
    assert_says(&out, "nothing to do");
    assert_holds(&fx, 18, &fx.datadir, &before);
}

// Issue 18: two older clusters where the rules look; upgrading either one could be wrong.
#[test]
fn two_older_clusters_are_refused_naming_both() {
    let (fx, before) = fixture(15, 17, "data/{major}");
    let data = fx.root.path().join("data");
    initdb(14, &data.join("14"));
    let new = data.join("17");
    let d = data.display();
    let message = refusal(&format!(
        "PGDATA {d}/17 holds no cluster, and several older clusters could be upgraded into it: {d}/14 (PostgreSQL 14), {d}/15 (PostgreSQL 15). Set PGLEAP_OLD_DATADIR to the one to upgrade (or move the others off the volume), or PGLEAP_INIT_EMPTY=true to start an empty PostgreSQL 17 cluster beside them"
    ));
    let ep = || Entrypoint::new(&new, 17).old(15);

    let snap = snapshot(fx.root.path());
    ep().run().failed(3, &message);
    assert_unchanged(&snap, &snapshot(fx.root.path()), "two candidates");
    // PGDATA made empty by the orchestrator, and a one-shot Job: the same.
    std::fs::create_dir(&new).unwrap();
    common::chown(&new);
    let snap = snapshot(fx.root.path());
    ep().run().failed(3, &message);
    ep().args(&["--leave-stopped"]).run().failed(3, &message);
    assert_unchanged(
        &snap,
        &snapshot(fx.root.path()),
        "two candidates, empty PGDATA",
    );

    // Naming one upgrades it; the other is left alone.
    let out = ep()
        .env("PGLEAP_OLD_DATADIR", &data.join("15").display().to_string())
        .run();
    assert_eq!(out.handed_over().pgdata, new, "{}", out.stderr);
    assert_eq!(pg_version(&data.join("14")).as_deref(), Some("14"));
    assert_holds(&fx, 17, &new, &before);
}

// Issue 18: an old cluster the image cannot upgrade beside an empty PGDATA is refused, never
// answered with an empty database; PGLEAP_INIT_EMPTY=true is the only way to start empty.
#[test]
fn empty_pgdata_beside_a_major_the_image_lacks_is_refused() {
    let fx = Fixture::new(14).build();
    let data = fx.root.path().join("data");
    let new = data.join("17");
    let ep = || Entrypoint::new(&new, 17).env("PGLEAP_OLD_BINDIR", "/nonexistent/14/bin");
    let snap = snapshot(fx.root.path());
    ep().run().failed(
        3,
        &refusal(&format!(
            "PGDATA {0}/17 holds no cluster, and {0}/14 holds a PostgreSQL 14 cluster, but /nonexistent/14/bin has no PostgreSQL 14: use an image built with --build-arg PG_OLD=14 (or set PGLEAP_OLD_BINDIR), or set PGLEAP_INIT_EMPTY=true to start an empty PostgreSQL 17 cluster beside it",
            data.display()
        )),
    );
    assert_unchanged(
        &snap,
        &snapshot(fx.root.path()),
        "an old major the image lacks",
    );

    // The opt-in hands over, for the official entrypoint to initialize PGDATA.
    let out = ep().env("PGLEAP_INIT_EMPTY", "true").run();
    assert_eq!(out.handed_over().pgdata, new, "{}", out.stderr);
    assert_says(
        &out,
        &format!(
            "PGLEAP_INIT_EMPTY=true: starting an empty PostgreSQL 17 cluster in {0}/17, leaving {0}/14 (PostgreSQL 14) alone",
            data.display()
        ),
    );
    assert_unchanged(&snap, &snapshot(fx.root.path()), "the opt-in");

    // Once PGDATA holds the image's major, every start hands over, leaving 14 alone.
    initdb(17, &new);
    let out = ep().run();
    assert_eq!(out.handed_over().pgdata, new, "{}", out.stderr);
    assert_says(
        &out,
        &format!(
            "{0}/17 already holds PostgreSQL 17, not upgraded by pgleap from {0}/14: leaving the PostgreSQL 14 cluster in {0}/14 alone",
            data.display()
        ),
    );
    assert_eq!(pg_version(&data.join("14")).as_deref(), Some("14"));
}

// Issue 18: older clusters the rules see but do not upgrade stop an empty start too.
#[test]
fn unrecognized_old_clusters_beside_an_empty_pgdata_are_refused() {
    let (fx, before) = fixture(15, 17, "data/pg15");
    let data = fx.root.path().join("data");
    let d = data.display();
    let new = data.join("pg17");
    let snap = snapshot(fx.root.path());
    let cases = [
        (
            "a sibling not named by its major",
            Entrypoint::new(&new, 17).old(15),
            format!(
                "PGDATA {d}/pg17 holds no cluster, and beside it {d}/pg15 (PostgreSQL 15) would not be upgraded: this image upgrades a sibling named by its major (/data/15 beside PGDATA=/data/17). Set PGLEAP_OLD_DATADIR to the data directory to upgrade into {d}/pg17, or PGLEAP_INIT_EMPTY=true to start an empty PostgreSQL 17 cluster beside it"
            ),
        ),
        (
            "PGDATA inside the old cluster",
            Entrypoint::new(&data.join("pg15/pgdata"), 17).old(15),
            format!(
                "PGDATA {d}/pg15/pgdata holds no cluster, but its parent {d}/pg15 holds a PostgreSQL 15 cluster: set PGDATA={d}/pg15 (this image upgrades a cluster found there), or PGLEAP_INIT_EMPTY=true to start an empty PostgreSQL 17 cluster inside it anyway"
            ),
        ),
        (
            "PGLEAP_OLD_DATADIR without a cluster",
            Entrypoint::new(&new, 17)
                .old(15)
                .env("PGLEAP_OLD_DATADIR", &format!("{d}/15")),
            format!(
                "PGLEAP_OLD_DATADIR={d}/15 holds no PostgreSQL cluster (no PG_VERSION): set it to the old data directory, or unset it"
            ),
        ),
        (
            "PGLEAP_OLD_DATADIR not older",
            Entrypoint::new(&new, 15)
                .old(15)
                .env("PGLEAP_OLD_DATADIR", &format!("{d}/pg15")),
            format!(
                "PGLEAP_OLD_DATADIR={d}/pg15 holds PostgreSQL 15, not older than this image's PostgreSQL 15"
            ),
        ),
    ];
    for (what, ep, message) in cases {
        let out = ep.run();
        assert_eq!(out.status.code(), Some(3), "{what}: {}", out.stderr);
        out.failed(3, &refusal(&message));
        assert_unchanged(&snap, &snapshot(fx.root.path()), what);
    }

    // Named, it is upgraded.
    let out = Entrypoint::new(&new, 17)
        .old(15)
        .env("PGLEAP_OLD_DATADIR", &fx.datadir.display().to_string())
        .run();
    assert_eq!(out.handed_over().pgdata, new, "{}", out.stderr);
    assert_holds(&fx, 17, &new, &before);
}

// Issue 18 in the 18 images' layout: /var/lib/postgresql/data from an image before 18 and
// /var/lib/postgresql/16/docker are both candidates; neither is picked for the user.
#[test]
fn eighteen_layout_with_two_older_clusters_is_refused() {
    let fx = Fixture::new(15).layout("data").build();
    let volume = fx.root.path();
    initdb(16, &volume.join("16/docker"));
    let v = volume.display();
    let snap = snapshot(volume);
    Entrypoint::new(&volume.join("18/docker"), 18)
        .old(15)
        .env("PGLEAP_VOLUME", &v.to_string())
        .run()
        .failed(
            3,
            &refusal(&format!(
                "PGDATA {v}/18/docker holds no cluster, and several older clusters could be upgraded into it: {v}/16/docker (PostgreSQL 16), {v}/data (PostgreSQL 15). Set PGLEAP_OLD_DATADIR to the one to upgrade (or move the others off the volume), or PGLEAP_INIT_EMPTY=true to start an empty PostgreSQL 18 cluster beside them"
            )),
        );
    assert_unchanged(&snap, &snapshot(volume), "two candidates in the 18 layout");
}
