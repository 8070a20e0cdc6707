//! Test fixtures: real clusters built with real binaries from `scripts/install-postgres`,
//! each in its own temp dir with its own socket directory and port, owned by an unprivileged
//! user (`PGLEAP_TEST_OWNER`, or the current user when not root).
//!
//! `Fixture::new(16).checksums(false).tablespace().rich().build()` then
//! `fx.pgleap(["upgrade", ...])`.
#![allow(dead_code, unreachable_pub, clippy::unused_self)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::UNIX_EPOCH;

pub mod reflink;

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A port unique within this test process; distinct processes get distinct ranges.
pub fn port() -> u16 {
    let base = 20000 + u16::try_from(std::process::id() % 400).unwrap() * 100;
    base + NEXT_PORT.fetch_add(1, Ordering::SeqCst) % 100
}

/// The bindir of a major, from `scripts/test`'s environment or the default cache.
pub fn bindir(major: u32) -> PathBuf {
    if let Ok(d) = std::env::var(format!("PGLEAP_TEST_BINDIR_{major}")) {
        return PathBuf::from(d);
    }
    let d = PathBuf::from(format!("/var/cache/pgleap/postgres/{major}/bin"));
    assert!(
        d.join("pg_ctl").exists(),
        "no PostgreSQL {major}: run scripts/install-postgres {major} (or scripts/test)"
    );
    d
}

/// The unprivileged user that owns test clusters.
#[derive(Debug, Clone)]
pub struct Owner {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub fn owner() -> Owner {
    let name = if is_root() {
        std::env::var("PGLEAP_TEST_OWNER").unwrap_or_else(|_| "postgres".into())
    } else {
        nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap()
            .name
    };
    let u = nix::unistd::User::from_name(&name)
        .unwrap()
        .unwrap_or_else(|| {
            panic!("cluster owner {name} does not exist: run scripts/test, which creates it")
        });
    Owner {
        name,
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
    }
}

/// Runs a program as the owner (switching when root), with a clean environment.
pub fn as_owner<S: AsRef<OsStr>>(program: &Path, args: &[S]) -> Output {
    let o = owner();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LANG", "C")
        .env("PGCLIENTENCODING", "UTF8");
    cmd.current_dir("/");
    if is_root() {
        cmd.uid(o.uid).gid(o.gid);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

pub fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn chown(path: &Path) {
    if is_root() {
        let o = owner();
        nix::unistd::chown(path, Some(o.uid.into()), Some(o.gid.into())).unwrap();
    }
}

/// A fixture being described.
#[derive(Debug, Clone)]
pub struct Builder {
    major: u32,
    checksums: bool,
    tablespace: bool,
    rich: bool,
    running: bool,
    superuser: String,
    /// Path of the data directory below the fixture root.
    layout: String,
    /// Extra initdb arguments, after the defaults (so `--locale` or `-E` here win).
    initdb_args: Vec<String>,
    /// Directory the fixture root is created in (default `/tmp`).
    root_in: Option<PathBuf>,
}

impl Builder {
    pub fn checksums(mut self, on: bool) -> Self {
        self.checksums = on;
        self
    }
    /// An external tablespace holding a table.
    pub fn tablespace(mut self) -> Self {
        self.tablespace = true;
        self
    }
    /// Two databases (one LATIN1 with C locale), pg_trgm and hstore, a large object, a
    /// partitioned table, a materialized view.
    pub fn rich(mut self) -> Self {
        self.rich = true;
        self
    }
    /// Leave the old server running after building.
    pub fn running(mut self) -> Self {
        self.running = true;
        self
    }
    pub fn superuser(mut self, name: &str) -> Self {
        self.superuser = name.into();
        self
    }
    /// Data directory path below the fixture root, e.g. "var/lib/postgresql/{major}/main".
    pub fn layout(mut self, layout: &str) -> Self {
        self.layout = layout.into();
        self
    }
    /// Extra initdb arguments, appended after the defaults (`-E UTF8 --locale=C.UTF-8`), e.g.
    /// `&["--locale=POSIX", "-E", "SQL_ASCII"]`.
    pub fn initdb_args(mut self, args: &[&str]) -> Self {
        self.initdb_args
            .extend(args.iter().map(ToString::to_string));
        self
    }
    /// Create the fixture root in `dir` (for example a mounted test filesystem) instead of
    /// `/tmp`. The owner must be able to traverse `dir`.
    pub fn root_in(mut self, dir: &Path) -> Self {
        self.root_in = Some(dir.to_path_buf());
        self
    }

    pub fn build(self) -> Fixture {
        let root = tempfile::Builder::new()
            .prefix("pgleap-test-")
            .tempdir_in(self.root_in.as_deref().unwrap_or(Path::new("/tmp")))
            .unwrap();
        // The owner must traverse the root and create siblings of the data directory.
        chown(root.path());
        let datadir = root
            .path()
            .join(self.layout.replace("{major}", &self.major.to_string()));
        std::fs::create_dir_all(datadir.parent().unwrap()).unwrap();
        for a in datadir
            .parent()
            .unwrap()
            .ancestors()
            .take_while(|a| a.starts_with(root.path()))
        {
            chown(a);
        }
        let socket = root.path().join("sock");
        std::fs::create_dir(&socket).unwrap();
        chown(&socket);
        let fx = Fixture {
            root,
            major: self.major,
            datadir,
            socket,
            port: port(),
            superuser: self.superuser.clone(),
            tablespace: None,
        };
        let mut args = vec![
            "-D".to_string(),
            fx.datadir.display().to_string(),
            "-U".into(),
            self.superuser.clone(),
            "-E".into(),
            "UTF8".into(),
            "--locale=C.UTF-8".into(),
            "--no-sync".into(),
            "-A".into(),
            "trust".into(),
        ];
        if self.checksums {
            args.push("--data-checksums".into());
        } else if self.major >= 18 {
            args.push("--no-data-checksums".into());
        }
        args.extend(self.initdb_args.iter().cloned());
        ok(
            &as_owner(&bindir(self.major).join("initdb"), &args),
            "initdb",
        );
        // Settings live in postgresql.conf (not on the command line) so they carry over.
        let conf = format!(
            "\n# test fixture\nport = {}\nlisten_addresses = ''\nunix_socket_directories = '{}'\nfsync = off\nautovacuum = off\nshared_buffers = 16MB\nmax_connections = 20\n",
            fx.port,
            fx.socket.display()
        );
        let mut text = std::fs::read_to_string(fx.datadir.join("postgresql.conf")).unwrap();
        text.push_str(&conf);
        std::fs::write(fx.datadir.join("postgresql.conf"), text).unwrap();
        let mut fx = fx;
        fx.start();
        if self.tablespace {
            let loc = fx.root.path().join("tblspc");
            std::fs::create_dir(&loc).unwrap();
            chown(&loc);
            fx.sql(
                "postgres",
                &format!("CREATE TABLESPACE ext LOCATION '{}'", loc.display()),
            );
            fx.tablespace = Some(loc);
        }
        if self.rich {
            fx.populate(self.tablespace);
        } else {
            fx.sql("postgres", "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000) g");
        }
        fx.sql("postgres", "CHECKPOINT");
        if !self.running {
            fx.stop();
        }
        fx
    }
}

/// A real cluster in a temp dir; its servers are stopped when dropped.
pub struct Fixture {
    pub root: tempfile::TempDir,
    pub major: u32,
    pub datadir: PathBuf,
    pub socket: PathBuf,
    pub port: u16,
    pub superuser: String,
    pub tablespace: Option<PathBuf>,
}

impl Fixture {
    #[allow(clippy::new_ret_no_self)]
    pub fn new(major: u32) -> Builder {
        Builder {
            major,
            checksums: false,
            tablespace: false,
            rich: false,
            running: false,
            superuser: "postgres".into(),
            layout: "data/{major}".into(),
            initdb_args: Vec::new(),
            root_in: None,
        }
    }

    pub fn bindir(&self) -> PathBuf {
        bindir(self.major)
    }

    /// The default new data directory for `new_major`: the versioned sibling.
    pub fn new_datadir(&self, new_major: u32) -> PathBuf {
        let s = self.datadir.display().to_string();
        let old = format!("/{}", self.major);
        let i = s.rfind(&old).unwrap();
        PathBuf::from(format!("{}/{}{}", &s[..i], new_major, &s[i + old.len()..]))
    }

    pub fn start(&self) {
        start_server(
            self.major,
            &self.datadir,
            &self.root.path().join(format!("server-{}.log", self.major)),
        );
    }

    pub fn stop(&self) {
        stop_server(self.major, &self.datadir);
    }

    /// Runs SQL through the old major's psql (any major's psql works for these statements).
    pub fn sql(&self, db: &str, sql: &str) -> String {
        psql(
            self.major,
            &self.socket,
            self.port,
            &self.superuser,
            db,
            sql,
        )
    }

    fn populate(&self, tablespace: bool) {
        self.sql("postgres", "CREATE DATABASE app");
        self.sql("postgres", "CREATE DATABASE legacy ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");
        let ts = if tablespace {
            "CREATE TABLE archived (id int PRIMARY KEY, note text) TABLESPACE ext; INSERT INTO archived SELECT g, 'old ' || g FROM generate_series(1, 500) g;"
        } else {
            ""
        };
        self.sql(
            "app",
            &format!(
                "CREATE EXTENSION pg_trgm; CREATE EXTENSION hstore;
                 CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, attrs hstore);
                 INSERT INTO items (name, attrs) SELECT 'item ' || g, hstore('k', g::text) FROM generate_series(1, 2000) g;
                 CREATE INDEX items_name_trgm ON items USING gin (name gin_trgm_ops);
                 CREATE TABLE events (id bigint, at date NOT NULL, payload text) PARTITION BY RANGE (at);
                 CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
                 CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
                 INSERT INTO events SELECT g, date '2024-01-01' + (g % 700), 'e' || g FROM generate_series(1, 3000) g;
                 CREATE MATERIALIZED VIEW item_counts AS SELECT left(name, 6) AS prefix, count(*) FROM items GROUP BY 1;
                 CREATE TABLE docs (id int PRIMARY KEY, body oid);
                 INSERT INTO docs VALUES (1, lo_from_bytea(0, convert_to(repeat('large object ', 1000), 'UTF8')));
                 {ts}"
            ),
        );
        self.sql(
            "legacy",
            "CREATE TABLE names (id int PRIMARY KEY, name text);
             INSERT INTO names VALUES (1, 'Müller'), (2, 'José'), (3, 'Ærøskøbing');",
        );
    }

    /// Per-table checksums of every user table in every database: (db.table) → md5.
    pub fn checksums(&self, major: u32, port: u16) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let dbs = psql(
            major,
            &self.socket,
            port,
            &self.superuser,
            "postgres",
            "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1",
        );
        for db in dbs.lines().filter(|l| !l.is_empty()) {
            let tables = psql(
                major,
                &self.socket,
                port,
                &self.superuser,
                db,
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
            );
            for t in tables.lines().filter(|l| !l.is_empty()) {
                let sum = psql(
                    major,
                    &self.socket,
                    port,
                    &self.superuser,
                    db,
                    &format!(
                        "SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '') FROM {t} x"
                    ),
                );
                out.insert(format!("{db}.{t}"), sum.trim().to_string());
            }
            let lo = psql(
                major,
                &self.socket,
                port,
                &self.superuser,
                db,
                "SELECT count(*) || ':' || coalesce(md5(string_agg(md5(lo_get(oid)), ',' ORDER BY oid)), '') FROM pg_largeobject_metadata",
            );
            out.insert(format!("{db}.<large objects>"), lo.trim().to_string());
        }
        out
    }

    /// `pg_dumpall` by the `dump_major` client, normalized for comparison.
    pub fn dumpall(&self, dump_major: u32, port: u16) -> String {
        let mut args = vec![
            "-h".to_string(),
            self.socket.display().to_string(),
            "-p".into(),
            port.to_string(),
            "-U".into(),
            self.superuser.clone(),
        ];
        if dump_major >= 18 {
            // 18: statistics would differ after ANALYZE; the schema and data are what matter.
            args.push("--no-statistics".into());
        }
        let text = ok(
            &as_owner(&bindir(dump_major).join("pg_dumpall"), &args),
            "pg_dumpall",
        );
        normalize_dump(&text)
    }

    /// Runs the real pgleap binary.
    pub fn pgleap<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        pgleap(args)
    }

    /// pgleap args naming this fixture's data directory and old bindir.
    pub fn args(&self, command: &str, new_major: u32, extra: &[&str]) -> Vec<String> {
        let mut a = vec![
            command.to_string(),
            "--old-datadir".into(),
            self.datadir.display().to_string(),
            "--old-bindir".into(),
            self.bindir().display().to_string(),
            "--new-bindir".into(),
            bindir(new_major).display().to_string(),
        ];
        a.extend(extra.iter().map(ToString::to_string));
        a
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Stop every server still running below the root (old, new, moved-aside).
        stop_servers_below(self.root.path());
    }
}

/// Stops (immediate mode) every server whose data directory lies below `dir`, a few levels
/// deep: for cleanup, before a fixture or a test mount goes away.
pub fn stop_servers_below(dir: &Path) {
    for entry in walkdir::WalkDir::new(dir)
        .max_depth(6)
        .into_iter()
        .filter_map(Result::ok)
    {
        if entry.file_name() == "postmaster.pid" {
            let dir = entry.path().parent().unwrap().to_path_buf();
            if let Ok(v) = std::fs::read_to_string(dir.join("PG_VERSION")) {
                if let Ok(m) = v.trim().parse::<u32>() {
                    let _ = as_owner(
                        &bindir(m).join("pg_ctl"),
                        &[
                            "stop",
                            "-D",
                            &dir.display().to_string(),
                            "-m",
                            "immediate",
                            "-w",
                        ],
                    );
                }
            }
        }
    }
}

pub fn start_server(major: u32, datadir: &Path, log: &Path) {
    if log.parent().is_some_and(|p| !p.exists()) {
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    }
    let out = as_owner(
        &bindir(major).join("pg_ctl"),
        &[
            "start",
            "-D",
            &datadir.display().to_string(),
            "-w",
            "-l",
            &log.display().to_string(),
        ],
    );
    if !out.status.success() {
        let server_log = std::fs::read_to_string(log).unwrap_or_default();
        panic!(
            "pg_ctl start failed: {}\n{}\nserver log:\n{server_log}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

pub fn stop_server(major: u32, datadir: &Path) {
    ok(
        &as_owner(
            &bindir(major).join("pg_ctl"),
            &[
                "stop",
                "-D",
                &datadir.display().to_string(),
                "-m",
                "fast",
                "-w",
            ],
        ),
        "pg_ctl stop",
    );
}

pub fn psql(major: u32, socket: &Path, port: u16, user: &str, db: &str, sql: &str) -> String {
    let out = as_owner(
        &bindir(major).join("psql"),
        &[
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            &socket.display().to_string(),
            "-p",
            &port.to_string(),
            "-U",
            user,
            "-d",
            db,
            "-c",
            sql,
        ],
    );
    ok(&out, &format!("psql {db}: {sql}"))
}

/// Drops what legitimately differs between two dumps of the same data: version banners, the
/// random keys of `\restrict`, and column qualification inside view bodies (servers before 16
/// deparse `items.name` where 16+ print `name`).
pub fn normalize_dump(text: &str) -> String {
    let mut out = Vec::new();
    let mut in_view = false;
    for l in text.lines() {
        // Blank lines: 18's pg_dumpall spaces role sections by what each server reports.
        if l.trim().is_empty()
            || l.starts_with("-- Dumped from database version")
            || l.starts_with("-- Dumped by pg_dump")
            || l.starts_with("\\restrict ")
            || l.starts_with("\\unrestrict ")
        {
            continue;
        }
        if l.starts_with("CREATE VIEW") || l.starts_with("CREATE MATERIALIZED VIEW") {
            in_view = true;
        }
        if in_view {
            out.push(strip_qualifiers(l));
            if l.trim_end().ends_with(';') {
                in_view = false;
            }
        } else {
            out.push(l.to_string());
        }
    }
    out.join("\n")
}

/// `"left"(items.name, 6)` → `"left"(name, 6)`: drops `identifier.` prefixes.
fn strip_qualifiers(line: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    for c in line.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else if c == '.' && !word.is_empty() && !word.chars().all(|d| d.is_ascii_digit()) {
            word.clear();
        } else {
            out.push_str(&word);
            word.clear();
            out.push(c);
        }
    }
    out.push_str(&word);
    out
}

/// What a clean start and stop of a server (`check` reading a stopped cluster's catalog)
/// may write: `pg_control` and the WAL, the other `pg_*` bookkeeping, relation cache init
/// files, catalog pages whose hint bits catalog reads set, and directory times.
pub fn written_by_a_start_and_stop(datadir: &Path, path: &Path) -> bool {
    let s = path.to_string_lossy();
    let catalog_page = path.starts_with("base")
        && path.components().count() == 3
        && path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .split(['_', '.'])
            .next()
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n < 16384);
    datadir.join(path).is_dir()
        || s == "global/pg_control"
        || s == "postmaster.opts"
        || path.file_name().is_some_and(|n| n == "pg_internal.init")
        || [
            "pg_wal",
            "pg_xact",
            "pg_subtrans",
            "pg_multixact",
            "pg_stat",
            "pg_logical",
        ]
        .iter()
        .any(|d| path.starts_with(d))
        || catalog_page
}

/// Polls `done` every 50 ms until it holds; panics naming `what` once `within` has passed.
#[track_caller]
pub fn wait_for(what: &str, within: std::time::Duration, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Path -> (size, mode, mtime) of every entry below a directory, as `snapshot` returns.
pub type Snapshot = BTreeMap<PathBuf, (u64, u32, u128)>;

/// Asserts two snapshots are equal, listing only the entries that differ.
#[track_caller]
pub fn assert_unchanged(before: &Snapshot, after: &Snapshot, what: &str) {
    let keys: std::collections::BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
    let changed: Vec<String> = keys
        .into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| {
            format!(
                "  {}: {:?} -> {:?}",
                k.display(),
                before.get(k),
                after.get(k)
            )
        })
        .collect();
    assert!(
        changed.is_empty(),
        "{what} changed files on disk (path: (size, mode, mtime)):\n{}",
        changed.join("\n")
    );
}

/// Every file and directory below `dir` with its size, mode and mtime: equal snapshots mean
/// nothing was written.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, u32, u128)> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        // The fixture's own server logs (`<root>/server-N.log`) are the test's, not the
        // cluster's: a stopping server may still append a line to them.
        .filter(|e| !(e.depth() == 1 && e.file_name().to_string_lossy().ends_with(".log")))
        .map(|e| {
            let m = e.path().symlink_metadata().unwrap();
            let mtime = m
                .modified()
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            (
                e.path().strip_prefix(dir).unwrap().to_path_buf(),
                (m.len(), m.mode(), mtime),
            )
        })
        .collect()
}

/// The result of one pgleap run.
pub struct Run {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    #[track_caller]
    pub fn success(&self) -> &Self {
        assert!(
            self.status.success(),
            "pgleap failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts exit code 3 (refused) and that stderr contains `message`.
    #[track_caller]
    pub fn refused(&self, message: &str) -> &Self {
        assert_eq!(
            self.code(),
            3,
            "expected a refusal (exit 3):\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        assert!(
            self.stderr.contains(message),
            "stderr lacks {message:?}:\n{}",
            self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs pgleap as [`pgleap`] does, but fails the test when it has not ended within `limit`,
/// after killing it and the programs it started (its own process group): a FIFO where root
/// reads, or a commit waiting for a standby that never comes, would otherwise hang the test
/// forever.
#[allow(dead_code)]
pub fn pgleap_within(args: &[String], limit: std::time::Duration) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgleap"))
        .args(args)
        .env_remove("PGLEAP_OLD_DATADIR")
        .env_remove("PGLEAP_NEW_DATADIR")
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let group = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let out = child.wait_with_output().unwrap();
            panic!(
                "pgleap {args:?} did not end within {limit:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Run::from(child.wait_with_output().unwrap())
}

pub fn pgleap<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = Command::new(env!("CARGO_BIN_EXE_pgleap"))
        .args(args)
        .env_remove("PGLEAP_OLD_DATADIR")
        .env_remove("PGLEAP_NEW_DATADIR")
        .output()
        .unwrap();
    Run::from(out)
}

/// Asserts two texts are equal, showing only the lines that differ.
#[track_caller]
pub fn assert_same_text(before: &str, after: &str, what: &str) {
    if before == after {
        return;
    }
    let a: Vec<&str> = before.lines().collect();
    let b: Vec<&str> = after.lines().collect();
    let only_a: Vec<&&str> = a.iter().filter(|l| !b.contains(l)).take(20).collect();
    let only_b: Vec<&&str> = b.iter().filter(|l| !a.contains(l)).take(20).collect();
    let first = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let from = first.saturating_sub(3);
    let ctx_a = &a[from..(first + 5).min(a.len())];
    let ctx_b = &b[from..(first + 5).min(b.len())];
    panic!(
        "{what} differ ({} vs {} lines)\nonly before:\n{only_a:#?}\nonly after:\n{only_b:#?}\nfirst difference at line {first}:\nbefore:\n{ctx_a:#?}\nafter:\n{ctx_b:#?}",
        a.len(),
        b.len()
    );
}

/// What an upgrade must preserve: the new major's `pg_dumpall` and per-table row checksums.
pub struct Contents {
    pub dump: String,
    pub rows: BTreeMap<String, String>,
}

impl Fixture {
    /// Captures the contents of the server of `server_major` listening on `port`, dumped by
    /// the `dump_major` client (use the upgrade's target major before and after).
    pub fn contents(&self, server_major: u32, dump_major: u32, port: u16) -> Contents {
        Contents {
            dump: self.dumpall(dump_major, port),
            rows: self.checksums(server_major, port),
        }
    }
}

impl Contents {
    /// Asserts that `after` holds the same rows and the same dump as `self`.
    #[track_caller]
    pub fn assert_same(&self, after: &Contents) {
        assert_eq!(self.rows, after.rows, "row checksums differ");
        assert_same_text(&self.dump, &after.dump, "pg_dumpall outputs");
    }
}

/// A size-limited tmpfs mounted at `path` (root only), owned by the cluster owner: a small or
/// separate filesystem for a test. Dropping it stops any server below it, then unmounts it
/// (lazily if it is still busy), also when the test panics.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts it, or says why not (not root, no tmpfs here).
    pub fn try_mount(path: &Path, size: &str, mode: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let o = owner();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!(
                "size={size},mode={mode},uid={},gid={}",
                o.uid, o.gid
            ))
            .arg("tmpfs")
            .arg(path)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "cannot mount a tmpfs on {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    #[track_caller]
    pub fn mount(path: &Path, size: &str, mode: &str) -> Tmpfs {
        Tmpfs::try_mount(path, size, mode).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        stop_servers_below(&self.path);
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// pgleap run with `args` until the fault point `point` pauses it; `resume` lets it go on and
/// returns how it ended.
pub struct Paused {
    child: std::process::Child,
    go: PathBuf,
    stderr: PathBuf,
}

impl Paused {
    pub fn start(fx: &Fixture, args: &[String], point: &str) -> Paused {
        let go = fx.root.path().join("go");
        let stderr = fx.root.path().join("pgleap.stderr");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_pgleap"))
            .args(args)
            .env("PGLEAP_FAULT", format!("{point}:pause={}", go.display()))
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let want = format!("fault point {point}: waiting for");
        wait_for(
            &format!("pgleap pauses at {point}"),
            std::time::Duration::from_secs(90),
            || std::fs::read_to_string(&stderr).is_ok_and(|t| t.contains(&want)),
        );
        Paused { child, go, stderr }
    }

    pub fn resume(self) -> Run {
        std::fs::write(&self.go, "").unwrap();
        let out = self.child.wait_with_output().unwrap();
        Run {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: std::fs::read_to_string(&self.stderr).unwrap(),
        }
    }
}
