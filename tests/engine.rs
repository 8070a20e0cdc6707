//! The pgleap image in a real container engine: docker/Dockerfile built by
//! scripts/test-images from local images (a debootstrap base, PostgreSQL laid out as the
//! official images lay it out) with the pgleap binary cargo built, then run with `docker run`,
//! stopped with `docker stop` and `docker kill`, started again with `docker start`, on named
//! volumes. Data is compared before and after with row checksums of a pgbench-like table and
//! a typed table, and the extensions in use. The Debian host path runs under a real systemd
//! in a bookworm container with Debian's postgresql-15.
//!
//! Needs root (the private daemon of scripts/test-images); without an engine every test says
//! so in one line and passes without running. Every container runs with `--network none`.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

struct Engine {
    docker: String,
    host: String,
    images: BTreeMap<String, String>,
}

/// The engine and images, made once per test binary; `None` (after one line saying why)
/// when no engine can run here.
fn engine() -> Option<&'static Engine> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    let e = ENGINE.get_or_init(|| {
        if let Ok(why) = std::env::var("PGLEAP_TEST_ENGINE_SKIP") {
            return Err(why);
        }
        let out = Command::new(format!("{ROOT}/scripts/test-images"))
            .args(["--pgleap", env!("CARGO_BIN_EXE_pgleap")])
            .output()
            .expect("run scripts/test-images");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() == Some(77) {
            return Err(stderr.lines().last().unwrap_or("no engine").to_string());
        }
        assert!(
            out.status.success(),
            "scripts/test-images failed:\n{stderr}"
        );
        let mut vars: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let images = vars
            .iter()
            .filter_map(|(k, v)| {
                Some((k.strip_prefix("PGLEAP_TEST_IMAGE_")?.to_string(), v.clone()))
            })
            .collect();
        Ok(Engine {
            docker: vars
                .remove("PGLEAP_TEST_DOCKER")
                .expect("PGLEAP_TEST_DOCKER"),
            host: vars.remove("DOCKER_HOST").expect("DOCKER_HOST"),
            images,
        })
    });
    match e {
        Ok(e) => Some(e),
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

macro_rules! engine_or_skip {
    () => {
        match engine() {
            Some(e) => e,
            None => return,
        }
    };
}

impl Engine {
    fn image(&self, name: &str) -> &str {
        self.images
            .get(name)
            .unwrap_or_else(|| panic!("scripts/test-images made no image {name}"))
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.docker)
            .env("DOCKER_HOST", &self.host)
            .args(args)
            .output()
            .expect("run docker")
    }

    /// `docker ARGS` that must succeed; its stdout, trimmed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn logs(&self, container: &str) -> String {
        let out = self.run(&["logs", container]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn state(&self, container: &str) -> (bool, i32) {
        let s = self.ok(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.ExitCode}}",
            container,
        ]);
        let (running, code) = s.split_once(' ').expect("state");
        (running == "true", code.parse().expect("exit code"))
    }

    /// Waits until `container` has stopped; its exit code.
    fn wait_exit(&self, container: &str) -> i32 {
        self.ok(&["wait", container]).parse().expect("exit code")
    }

    /// Waits until the container's logs contain `needle`.
    fn wait_log(&self, container: &str, needle: &str) {
        let t = Instant::now();
        loop {
            let logs = self.logs(container);
            if logs.contains(needle) {
                return;
            }
            let (running, code) = self.state(container);
            assert!(
                running,
                "{container} exited ({code}) before logging {needle:?}:\n{logs}"
            );
            assert!(
                t.elapsed() < Duration::from_secs(180),
                "{container} did not log {needle:?} in 180 s:\n{logs}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `psql` in a running container as `user`; its output.
    fn sql_as(&self, container: &str, user: &str, sql: &str) -> String {
        self.ok(&[
            "exec",
            "-u",
            user,
            container,
            "psql",
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "postgres",
            "-Atc",
            sql,
        ])
    }

    /// Waits until PostgreSQL in `container` answers; the major it runs.
    fn ready(&self, container: &str, user: &str) -> u32 {
        let t = Instant::now();
        loop {
            let out = self.run(&[
                "exec",
                "-u",
                user,
                container,
                "psql",
                "-X",
                "-U",
                "postgres",
                "-Atc",
                "SHOW server_version_num",
            ]);
            if out.status.success() {
                let v: u32 = String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .expect("version");
                return v / 10000;
            }
            let (running, code) = self.state(container);
            assert!(
                running,
                "{container} exited ({code}) before PostgreSQL answered:\n{}",
                self.logs(container)
            );
            assert!(
                t.elapsed() < Duration::from_secs(180),
                "PostgreSQL in {container} did not answer in 180 s:\n{}",
                self.logs(container)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Every entry of a volume with its type, size (files), owner and mode.
    fn listing(&self, volume: &str) -> String {
        self.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &format!("{volume}:/v"),
            self.image("BASE"),
            "find",
            "/v",
            "-printf",
            "%P %y %U %m\\n",
        ])
    }
}

/// Fails with the entries that differ between two listings of a volume.
fn assert_same_listing(before: &str, after: &str, what: &str) {
    // pgleap's check starts a stopped old cluster (fenced) to read its catalog; PostgreSQL
    // then writes its relation cache file, pg_internal.init, which it rebuilds at every start.
    let keep = |l: &&str| !l.contains("pg_internal.init ");
    let b: std::collections::BTreeSet<&str> = before.lines().filter(keep).collect();
    let a: std::collections::BTreeSet<&str> = after.lines().filter(keep).collect();
    let gone: Vec<_> = b.difference(&a).collect();
    let new: Vec<_> = a.difference(&b).collect();
    assert!(
        gone.is_empty() && new.is_empty(),
        "{what}: gone {gone:?}, new {new:?}"
    );
}

/// Containers and volumes of one test, removed when it ends (also when it fails).
struct Scope<'a> {
    e: &'a Engine,
    prefix: String,
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl<'a> Scope<'a> {
    fn new(e: &'a Engine, test: &str) -> Self {
        Scope {
            e,
            prefix: format!("pgleap-{test}-{}", std::process::id()),
            containers: vec![],
            volumes: vec![],
        }
    }

    fn volume(&mut self, name: &str) -> String {
        let v = format!("{}-{name}", self.prefix);
        self.e.ok(&["volume", "create", &v]);
        self.volumes.push(v.clone());
        v
    }

    fn name(&mut self, name: &str) -> String {
        let c = format!("{}-{name}", self.prefix);
        self.containers.push(c.clone());
        c
    }

    /// `docker run -d --name NAME --network none ARGS...`: the container's name.
    fn start(&mut self, name: &str, args: &[&str]) -> String {
        let c = self.name(name);
        let mut all = vec![
            "run",
            "-d",
            "--name",
            c.as_str(),
            "--network",
            "none",
            "-e",
            "POSTGRES_HOST_AUTH_METHOD=trust",
        ];
        all.extend_from_slice(args);
        self.e.ok(&all);
        c
    }

    /// `docker run --name NAME --network none ARGS...` in the foreground: exit code and logs.
    fn once(&mut self, name: &str, args: &[&str]) -> (i32, String) {
        let c = self.name(name);
        let mut all = vec![
            "run",
            "--name",
            c.as_str(),
            "--network",
            "none",
            "-e",
            "POSTGRES_HOST_AUTH_METHOD=trust",
        ];
        all.extend_from_slice(args);
        let out = self.e.run(&all);
        (out.status.code().unwrap_or(-1), self.e.logs(&c))
    }
}

impl Drop for Scope<'_> {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = self.e.run(&["rm", "-f", "-v", c]);
        }
        for v in &self.volumes {
            let _ = self.e.run(&["volume", "rm", "-f", v]);
        }
    }
}

const SEED: &str = "
CREATE EXTENSION hstore;
CREATE TABLE accounts (aid int PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL, filler char(84));
INSERT INTO accounts SELECT g, g % 10, (g * 7919) % 100000 - 50000, md5(g::text)
  FROM generate_series(1, 20000) g;
CREATE TABLE typed (id serial PRIMARY KEY, t text, n numeric(14,3), ts timestamptz, d date,
  j jsonb, a int[], h hstore, u uuid, b bytea, f float8, r int4range);
INSERT INTO typed (t, n, ts, d, j, a, h, u, b, f, r)
  SELECT 'row ' || g, g * 1.125, timestamptz '2024-01-01 00:00+00' + g * interval '1 hour',
    date '2020-02-29' + g, jsonb_build_object('g', g, 'even', g % 2 = 0), ARRAY[g, g + 1],
    hstore('k', g::text), md5(g::text)::uuid, decode(md5(g::text), 'hex'), g / 3.0,
    int4range(g, g + 10)
  FROM generate_series(1, 3000) g;
";

/// Row checksums of both tables and the extensions, as one comparable text.
const CHECKSUMS: &str = "
SELECT (SELECT count(*) || ' ' || md5(string_agg(a::text, ',' ORDER BY aid)) FROM accounts a)
  || ' | ' || (SELECT count(*) || ' ' || md5(string_agg(t::text, ',' ORDER BY id)) FROM typed t)
  || ' | ' || (SELECT string_agg(extname || ' ' || extversion, ', ' ORDER BY extname) FROM pg_extension)";

/// Makes a PostgreSQL 15 cluster with data on `volume` mounted at `mount` (options such as
/// `:nocopy` may follow), by the postgres:15 image run as `user` (empty: the image's default)
/// with more `docker run` options `extra`; stops it cleanly. Its checksums.
fn seed15(s: &mut Scope, volume: &str, mount: &str, user: &str, extra: &[&str]) -> String {
    let e = s.e;
    let v = format!("{volume}:{mount}");
    let mut args = vec!["-v", v.as_str()];
    if !user.is_empty() {
        args.extend(["--user", user]);
    }
    args.extend_from_slice(extra);
    let image = e.image("POSTGRES_15").to_string();
    args.push(&image);
    let ctr = s.start("old", &args);
    let exec_user = if user.is_empty() { "postgres" } else { user };
    assert_eq!(e.ready(&ctr, exec_user), 15);
    e.sql_as(&ctr, exec_user, SEED);
    let sums = e.sql_as(&ctr, exec_user, CHECKSUMS);
    e.ok(&["stop", &ctr]);
    assert_eq!(
        e.state(&ctr).1,
        0,
        "the old server did not stop cleanly:\n{}",
        e.logs(&ctr)
    );
    sums
}

fn vol(volume: &str, mount: &str) -> String {
    format!("{volume}:{mount}")
}

#[test]
fn pre_18_volume_is_upgraded_and_handed_over() {
    let e = engine_or_skip!();
    let mut s = Scope::new(e, "pre18");
    let vol_name = s.volume("data");
    let before = seed15(&mut s, &vol_name, "/var/lib/postgresql/data", "", &[]);
    let mount = vol(&vol_name, "/var/lib/postgresql/data");
    let ctr = s.start("new", &["-v", &mount, e.image("PGLEAP_15_TO_17")]);
    assert_eq!(e.ready(&ctr, "postgres"), 17, "{}", e.logs(&ctr));
    assert_eq!(e.sql_as(&ctr, "postgres", CHECKSUMS), before);
    assert!(e.logs(&ctr).contains(
        "handing over to docker-entrypoint.sh (PGDATA=/var/lib/postgresql/data/17/docker)"
    ));
    // A restart finds the upgraded cluster and hands over at once.
    e.ok(&["restart", &ctr]);
    assert_eq!(e.ready(&ctr, "postgres"), 17);
    assert_eq!(e.sql_as(&ctr, "postgres", CHECKSUMS), before);
}

/// Where the typed table lives: its tablespace and that tablespace's directory.
const WHERE: &str = "SELECT spcname || ' ' || pg_tablespace_location(t.oid) FROM pg_class c \
    JOIN pg_tablespace t ON t.oid = c.reltablespace WHERE c.relname = 'typed'";

#[test]
fn layout_18_volume_at_var_lib_postgresql_is_upgraded_with_a_tablespace() {
    let e = engine_or_skip!();
    let mut s = Scope::new(e, "layout18");
    let vol_name = s.volume("data");
    let mount = vol(&vol_name, "/var/lib/postgresql");
    // The 18+ images' layout, used by the old image already: the volume at
    // /var/lib/postgresql, PGDATA=/var/lib/postgresql/15/docker inside it, and a tablespace
    // beside it on the same volume. (Mounting the volume at /var/lib/postgresql while leaving
    // the old image's PGDATA would put the data in the anonymous volume that image declares
    // at /var/lib/postgresql/data, not in this one.)
    let old = s.start(
        "old",
        &[
            "-v",
            &mount,
            "-e",
            "PGDATA=/var/lib/postgresql/15/docker",
            e.image("POSTGRES_15"),
        ],
    );
    assert_eq!(e.ready(&old, "postgres"), 15);
    e.ok(&[
        "exec",
        "-u",
        "postgres",
        &old,
        "mkdir",
        "/var/lib/postgresql/tablespace",
    ]);
    e.sql_as(&old, "postgres", SEED);
    e.sql_as(
        &old,
        "postgres",
        "CREATE TABLESPACE outside LOCATION '/var/lib/postgresql/tablespace'",
    );
    e.sql_as(&old, "postgres", "ALTER TABLE typed SET TABLESPACE outside");
    let before = e.sql_as(&old, "postgres", CHECKSUMS);
    e.ok(&["stop", &old]);
    assert_eq!(e.state(&old).1, 0, "{}", e.logs(&old));

    let ctr = s.start("new", &["-v", &mount, e.image("PGLEAP_15_TO_18")]);
    assert_eq!(e.ready(&ctr, "postgres"), 18, "{}", e.logs(&ctr));
    assert_eq!(e.sql_as(&ctr, "postgres", CHECKSUMS), before);
    assert_eq!(
        e.sql_as(&ctr, "postgres", WHERE),
        "outside /var/lib/postgresql/tablespace"
    );
    assert!(
        e.logs(&ctr).contains(
            "handing over to docker-entrypoint.sh (PGDATA=/var/lib/postgresql/18/docker)"
        ),
        "{}",
        e.logs(&ctr)
    );
    e.ok(&["stop", &ctr]);
    // The plain postgres:18 image, with its default PGDATA, serves the same data.
    let plain = s.start("plain", &["-v", &mount, e.image("POSTGRES_18")]);
    assert_eq!(e.ready(&plain, "postgres"), 18, "{}", e.logs(&plain));
    assert_eq!(e.sql_as(&plain, "postgres", CHECKSUMS), before);
    assert_eq!(
        e.sql_as(&plain, "postgres", WHERE),
        "outside /var/lib/postgresql/tablespace"
    );
}

#[test]
fn pre_18_volume_still_mounted_at_data_under_an_18_image() {
    let e = engine_or_skip!();
    let mut s = Scope::new(e, "pre18on18");
    let vol_name = s.volume("data");
    let before = seed15(&mut s, &vol_name, "/var/lib/postgresql/data", "", &[]);
    let mount = vol(&vol_name, "/var/lib/postgresql/data");
    let ctr = s.start("new", &["-v", &mount, e.image("PGLEAP_15_TO_18")]);
    assert_eq!(e.ready(&ctr, "postgres"), 18, "{}", e.logs(&ctr));
    assert_eq!(e.sql_as(&ctr, "postgres", CHECKSUMS), before);
    e.ok(&["restart", &ctr]);
    assert_eq!(e.ready(&ctr, "postgres"), 18, "{}", e.logs(&ctr));
    assert_eq!(e.sql_as(&ctr, "postgres", CHECKSUMS), before);
}

/// Interrupts the upgrade of a pre-18 volume at `point` (a pgleap fault point that pauses)
/// with `docker stop` or `docker kill`, then `docker start`s the same container: it must
/// finish (resume or redo) and serve the same data on 17.
fn interrupted(test: &str, point: &str, release_first: bool, how: &str, expect_exit: i32) {
    let e = engine_or_skip!();
    let mut s = Scope::new(e, test);
    let vol_name = s.volume("data");
    let before = seed15(&mut s, &vol_name, "/var/lib/postgresql/data", "", &[]);
    let mount = vol(&vol_name, "/var/lib/postgresql/data");
    let fault = format!("PGLEAP_FAULT={point}:pause=/tmp/pgleap-go");
    let ctr = s.start(
        "new",
        &[
            "--stop-timeout",
            "120",
            "-v",
            &mount,
            "-e",
            &fault,
            e.image("PGLEAP_15_TO_17"),
        ],
    );
    e.wait_log(&ctr, &format!("fault point {point}: waiting"));
    if release_first {
        e.ok(&["exec", &ctr, "touch", "/tmp/pgleap-go"]);
        // pg_upgrade and the steps after it run for seconds: the signal lands inside them.
        std::thread::sleep(Duration::from_millis(700));
    }
    e.ok(&[how, &ctr]);
    let code = e.wait_exit(&ctr);
    let logs = e.logs(&ctr);
    assert_eq!(code, expect_exit, "after docker {how} at {point}:\n{logs}");
    assert!(
        !logs.contains("handing over"),
        "handed over despite docker {how}:\n{logs}"
    );
    // Open the gate in the stopped container, so the rerun passes the point.
    let gate = std::env::temp_dir().join(format!("{}-gate", s.prefix));
    std::fs::write(&gate, "").unwrap();
    e.ok(&[
        "cp",
        gate.to_str().unwrap(),
        &format!("{ctr}:/tmp/pgleap-go"),
    ]);
    let _ = std::fs::remove_file(&gate);
    e.ok(&["start", &ctr]);
    assert_eq!(e.ready(&ctr, "postgres"), 17, "{}", e.logs(&ctr));
    assert_eq!(
        e.sql_as(&ctr, "postgres", CHECKSUMS),
        before,
        "{}",
        e.logs(&ctr)
    );
}

#[test]
fn docker_stop_during_initdb_and_check_then_start_finishes() {
    interrupted("stop-initdb", "after:initdb", true, "stop", 130);
}

#[test]
fn docker_kill_during_initdb_and_check_then_start_finishes() {
    interrupted("kill-initdb", "after:initdb", false, "kill", 137);
}

#[test]
fn docker_stop_during_pg_upgrade_then_start_finishes() {
    interrupted("stop-pgupgrade", "before:pg_upgrade", true, "stop", 130);
}

#[test]
fn docker_kill_during_pg_upgrade_then_start_finishes() {
    interrupted("kill-pgupgrade", "before:pg_upgrade", true, "kill", 137);
}

#[test]
fn docker_stop_after_pg_upgrade_then_start_finishes() {
    interrupted("stop-after", "after:pg_upgrade", true, "stop", 130);
}

#[test]
fn docker_kill_after_pg_upgrade_then_start_finishes() {
    interrupted("kill-after", "after:pg_upgrade", false, "kill", 137);
}

#[test]
fn read_only_root_filesystem_with_tmpfs_run_and_tmp() {
    let e = engine_or_skip!();
    let mut s = Scope::new(e, "readonly");
    let vol_name = s.volume("data");
    let before = seed15(&mut s, &vol_name, "/var/lib/postgresql/data", "", &[]);
    let mount = vol(&vol_name, "/var/lib/postgresql/data");
    let ctr = s.start(
        "new",
        &[
            "--read-only",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/tmp",
            "-v",
            &mount,
            e.image("PGLEAP_15_TO_17"),
        ],
    );
    assert_eq!(e.ready(&ctr, "postgres"), 17, "{}", e.logs(&ctr));
    assert_eq!(e.sql_as(&ctr, "postgres", CHECKSUMS), before);
}

/// Gives the empty volume in `mount` to `owner` (uid:gid), as an operator or Kubernetes'
/// fsGroup would. Docker copies an image's mount point, owner included, into an empty volume
/// at every mount: the mounts that follow, until the volume has content, use `:nocopy`.
fn give_volume(e: &Engine, mount: &str, owner: &str) {
    let nocopy = format!("{mount}:nocopy");
    let dir = mount.split_once(':').expect("volume:path").1;
    e.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &nocopy,
        e.image("BASE"),
        "chown",
        owner,
        dir,
    ]);
}

/// The old image and the pgleap image both run as `user` (uid:gid), one with no passwd entry
/// or one with none in the image: initdb and pg_upgrade get a name from nss_wrapper.
fn as_user(test: &str, user: &str) {
    let e = engine_or_skip!();
    let mut s = Scope::new(e, test);
    let vol_name = s.volume("data");
    let mount = vol(&vol_name, "/var/lib/postgresql/data");
    give_volume(e, &mount, user);
    let before = seed15(
        &mut s,
        &vol_name,
        "/var/lib/postgresql/data:nocopy",
        user,
        &[],
    );
    let ctr = s.start(
        "new",
        &["--user", user, "-v", &mount, e.image("PGLEAP_15_TO_17")],
    );
    assert_eq!(e.ready(&ctr, user), 17, "{}", e.logs(&ctr));
    assert_eq!(e.sql_as(&ctr, user, CHECKSUMS), before);
}

#[test]
fn runs_as_user_1000() {
    as_user("uid1000", "1000:1000");
}

#[test]
fn runs_as_an_arbitrary_uid_without_passwd_entry() {
    as_user("uid424242", "424242:0");
}

#[test]
fn volume_of_another_uid_is_refused_as_root_and_upgraded_as_that_uid() {
    let e = engine_or_skip!();
    let mut s = Scope::new(e, "uid70");
    let vol_name = s.volume("data");
    let mount = vol(&vol_name, "/var/lib/postgresql/data");
    // uid 70 is the postgres user of the Alpine images.
    give_volume(e, &mount, "70:70");
    let before = seed15(
        &mut s,
        &vol_name,
        "/var/lib/postgresql/data:nocopy",
        "70:70",
        &[],
    );
    let listing = e.listing(&vol_name);
    let (code, logs) = s.once("refused", &["-v", &mount, e.image("PGLEAP_15_TO_17")]);
    assert_eq!(code, 3, "{logs}");
    assert!(
        logs.contains(
            "refused: /var/lib/postgresql/data belongs to uid 70, but this image runs PostgreSQL as postgres (uid 999). \
             Give the data to uid 999 (chown -R 999:999 on the volume, or PGLEAP_CHOWN=true to let this entrypoint do it), \
             or run the container as uid 70 (docker run --user 70:70"
        ),
        "{logs}"
    );
    assert!(logs.contains("Nothing was changed."), "{logs}");
    assert_same_listing(
        &listing,
        &e.listing(&vol_name),
        "the refusal changed the volume",
    );
    // Run as the data's owner, as the refusal says: upgraded, still owned by 70.
    let ctr = s.start(
        "new",
        &["--user", "70:70", "-v", &mount, e.image("PGLEAP_15_TO_17")],
    );
    assert_eq!(e.ready(&ctr, "70:70"), 17, "{}", e.logs(&ctr));
    assert_eq!(e.sql_as(&ctr, "70:70", CHECKSUMS), before);
    let owners = e.ok(&[
        "exec",
        &ctr,
        "stat",
        "-c",
        "%u",
        "/var/lib/postgresql/data/17/docker/PG_VERSION",
        "/var/lib/postgresql/data/15/docker/PG_VERSION",
    ]);
    assert_eq!(owners, "70\n70");
}

#[test]
fn one_shot_leave_stopped_then_the_plain_new_image_starts_on_it() {
    let e = engine_or_skip!();
    let mut s = Scope::new(e, "oneshot");
    let vol_name = s.volume("data");
    let before = seed15(&mut s, &vol_name, "/var/lib/postgresql/data", "", &[]);
    let mount = vol(&vol_name, "/var/lib/postgresql/data");
    let (code, logs) = s.once(
        "job",
        &["-v", &mount, e.image("PGLEAP_15_TO_17"), "--leave-stopped"],
    );
    assert_eq!(code, 0, "{logs}");
    assert!(
        logs.contains(
            "done: the PostgreSQL 17 cluster is in /var/lib/postgresql/data/17/docker and stopped"
        ),
        "{logs}"
    );
    let plain = s.start(
        "plain",
        &[
            "-v",
            &mount,
            "-e",
            "PGDATA=/var/lib/postgresql/data/17/docker",
            e.image("POSTGRES_17"),
        ],
    );
    assert_eq!(e.ready(&plain, "postgres"), 17, "{}", e.logs(&plain));
    assert_eq!(e.sql_as(&plain, "postgres", CHECKSUMS), before);
    assert!(
        !e.logs(&plain).contains("initdb"),
        "the plain image initialized a new cluster"
    );
}

/// An extension installed only in the old container: the pgleap image lacks it.
const PROBE_EXTENSION: &str = "
printf '%s\\n' \"comment = 'test extension'\" \"default_version = '1.0'\" \"relocatable = true\" \
  > /usr/lib/postgresql/15/share/extension/pgleap_probe.control
printf '%s\\n' 'CREATE FUNCTION pgleap_probe() RETURNS int LANGUAGE sql AS $$ SELECT 42 $$;' \
  > /usr/lib/postgresql/15/share/extension/pgleap_probe--1.0.sql
";

#[test]
fn refusal_for_a_missing_extension_leaves_the_volume_to_the_old_image() {
    let e = engine_or_skip!();
    let mut s = Scope::new(e, "missingext");
    let vol_name = s.volume("data");
    let mount = vol(&vol_name, "/var/lib/postgresql/data");
    let old = s.start("old", &["-v", &mount, e.image("POSTGRES_15")]);
    assert_eq!(e.ready(&old, "postgres"), 15);
    e.ok(&["exec", &old, "bash", "-c", PROBE_EXTENSION]);
    e.sql_as(&old, "postgres", SEED);
    e.sql_as(&old, "postgres", "CREATE EXTENSION pgleap_probe");
    let before = e.sql_as(&old, "postgres", CHECKSUMS);
    assert!(
        before.ends_with("hstore 1.8, pgleap_probe 1.0, plpgsql 1.0"),
        "{before}"
    );
    e.ok(&["stop", &old]);
    let listing = e.listing(&vol_name);
    let (code, logs) = s.once("refused", &["-v", &mount, e.image("PGLEAP_15_TO_17")]);
    assert_eq!(code, 3, "{logs}");
    assert!(
        logs.contains("pgleap_probe"),
        "the refusal does not name the extension:\n{logs}"
    );
    assert!(logs.contains("moving the PostgreSQL 15 cluster in /var/lib/postgresql/data/15/docker back to the root"), "{logs}");
    assert!(!logs.contains("handing over"), "{logs}");
    assert_same_listing(
        &listing,
        &e.listing(&vol_name),
        "the refusal left the volume changed",
    );
    // The old image starts on it again: a new container, as a rollback of the deployment does.
    let again = s.start("again", &["-v", &mount, e.image("POSTGRES_15")]);
    assert_eq!(e.ready(&again, "postgres"), 15, "{}", e.logs(&again));
    assert_eq!(e.sql_as(&again, "postgres", CHECKSUMS), before);
}

/// A Debian 12 host with systemd as PID 1 (`--privileged` is refused on these machines; these
/// capabilities suffice), the pgleap binary cargo built mounted at /usr/local/bin/pgleap.
fn boot_debian(s: &mut Scope) -> String {
    let e = s.e;
    let bin = format!("{}:/usr/local/bin/pgleap:ro", env!("CARGO_BIN_EXE_pgleap"));
    let image = e.image("DEBIAN_SYSTEMD").to_string();
    let c = s.name("host");
    e.ok(&[
        "run",
        "-d",
        "--name",
        &c,
        "--network",
        "none",
        "--cap-add",
        "SYS_ADMIN",
        "--security-opt",
        "seccomp=unconfined",
        "-v",
        "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "--tmpfs",
        "/run",
        "--tmpfs",
        "/run/lock",
        "--tmpfs",
        "/tmp",
        "-v",
        &bin,
        &image,
    ]);
    booted(e, &c);
    c
}

/// Waits until systemd in `c` has finished booting, with no failed unit.
fn booted(e: &Engine, c: &str) {
    let t = Instant::now();
    loop {
        let out = e.run(&["exec", c, "systemctl", "is-system-running"]);
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if state == "running" {
            return;
        }
        assert!(
            state != "degraded" && t.elapsed() < Duration::from_secs(120),
            "systemd in {c} is {state:?}:\n{}",
            e.ok(&["exec", c, "systemctl", "--failed", "--no-pager"])
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn sh(e: &Engine, c: &str, script: &str) -> String {
    e.ok(&["exec", c, "bash", "-ec", script])
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario under systemd, read top to bottom
fn debian_host_under_systemd_upgrades_restarts_on_17_and_rolls_back() {
    let e = engine_or_skip!();
    let mut s = Scope::new(e, "systemd");
    let c = boot_debian(&mut s);
    sh(
        e,
        &c,
        "pg_createcluster 15 main >/dev/null && systemctl start postgresql@15-main",
    );
    assert_eq!(
        sh(e, &c, "systemctl is-active postgresql@15-main"),
        "active"
    );
    let psql = |sql: &str| {
        sh(
            e,
            &c,
            &format!("cd / && runuser -u postgres -- psql -X -v ON_ERROR_STOP=1 -Atc \"{sql}\""),
        )
    };
    psql(&SEED.replace('"', "\\\""));
    let before = psql(CHECKSUMS);
    assert_eq!(
        psql("SHOW server_version_num").parse::<u32>().unwrap() / 10000,
        15
    );

    let up = e.run(&[
        "exec",
        "-w",
        "/",
        &c,
        "pgleap",
        "upgrade",
        "--cluster",
        "15/main",
        "--new-version",
        "17",
    ]);
    let up_err =
        String::from_utf8_lossy(&up.stderr).to_string() + &String::from_utf8_lossy(&up.stdout);
    assert!(up.status.success(), "pgleap upgrade failed:\n{up_err}");
    assert!(
        up_err.contains("(systemctl start postgresql@17-main)"),
        "{up_err}"
    );
    assert_eq!(
        sh(e, &c, "systemctl is-active postgresql@17-main"),
        "active"
    );
    assert_eq!(
        sh(e, &c, "systemctl is-active postgresql@15-main || true"),
        "inactive"
    );
    assert_eq!(
        sh(
            e,
            &c,
            "grep -v '^#' /etc/postgresql/15/main/start.conf | grep -v '^$'"
        ),
        "manual"
    );
    assert_eq!(
        psql("SHOW server_version_num").parse::<u32>().unwrap() / 10000,
        17
    );
    assert_eq!(psql(CHECKSUMS), before);

    // A reboot: systemd's postgresql generator reads start.conf; 17 comes up, 15 stays down.
    e.ok(&["restart", &c]);
    booted(e, &c);
    let t = Instant::now();
    while sh(e, &c, "systemctl is-active postgresql@17-main || true") != "active" {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "17 did not come up after the restart"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        sh(e, &c, "systemctl is-active postgresql@15-main || true"),
        "inactive"
    );
    assert_eq!(
        psql("SHOW server_version_num").parse::<u32>().unwrap() / 10000,
        17
    );
    assert_eq!(psql(CHECKSUMS), before);

    // Rollback: 15 again under systemd, its start.conf back to auto.
    let back = e.run(&[
        "exec",
        "-w",
        "/",
        &c,
        "pgleap",
        "rollback",
        "--cluster",
        "15/main",
    ]);
    let back_err =
        String::from_utf8_lossy(&back.stderr).to_string() + &String::from_utf8_lossy(&back.stdout);
    assert!(back.status.success(), "pgleap rollback failed:\n{back_err}");
    assert_eq!(
        sh(e, &c, "systemctl is-active postgresql@15-main"),
        "active",
        "{back_err}"
    );
    assert_eq!(
        sh(e, &c, "systemctl is-active postgresql@17-main || true"),
        "inactive"
    );
    assert_eq!(
        sh(
            e,
            &c,
            "grep -v '^#' /etc/postgresql/15/main/start.conf | grep -v '^$'"
        ),
        "auto"
    );
    assert_eq!(
        psql("SHOW server_version_num").parse::<u32>().unwrap() / 10000,
        15
    );
    assert_eq!(psql(CHECKSUMS), before);
}
