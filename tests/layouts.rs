//! Host layouts: postgresql-common (Debian, Ubuntu) clusters with their configuration in
//! /etc/postgresql, RHEL/PGDG clusters in /var/lib/pgsql with /usr/pgsql-N binaries and
//! systemd units, and anything else through --stop-command/--start-command hooks. Each layout
//! is built with real clusters below a temporary `--root`; after the upgrade the new cluster
//! runs with the carried configuration and port, and the old one is not set to start again.
//! A last test upgrades a cluster made by postgresql-common's own pg_createcluster.

mod common;

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Fixture, Run, bindir, chown, is_root};

const START_CONF: &str = "# Automatic startup configuration
#   auto: automatically start the cluster
#   manual: manual startup with pg_ctlcluster/postgresql@.service only
#   disabled: refuse to start cluster
# See pg_createcluster(1) for details. When running from systemd,
# invoke 'systemctl daemon-reload' after editing this file.

auto
";

/// A postgresql-common cluster made the way pg_createcluster makes one: initdb into
/// `<root>/var/lib/postgresql/N/main`, then the configuration moved to
/// `<root>/etc/postgresql/N/main` with data_directory, hba_file, ident_file,
/// external_pid_file, cluster_name and include_dir 'conf.d' set, beside start.conf,
/// pg_ctl.conf and environment.
struct Debian {
    fx: Fixture,
    confdir: PathBuf,
}

impl Debian {
    fn build(major: u32, running: bool) -> Debian {
        let fx = Fixture::new(major)
            .layout("var/lib/postgresql/{major}/main")
            .build();
        let root = fx.root.path();
        let confdir = root.join(format!("etc/postgresql/{major}/main"));
        mkdirs_owned(root, &confdir, 0o755);
        let run = root.join("run/postgresql");
        mkdirs_owned(root, &run, 0o2775);
        for (f, mode) in [
            ("postgresql.conf", 0o644),
            ("pg_hba.conf", 0o640),
            ("pg_ident.conf", 0o640),
        ] {
            let to = confdir.join(f);
            std::fs::rename(fx.datadir.join(f), &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let mut conf = format!(
            "\n# postgresql-common\ndata_directory = '{}'\t\t# use data in another directory\nhba_file = '{c}/pg_hba.conf'\t# host-based authentication file\nident_file = '{c}/pg_ident.conf'\t# ident configuration file\nexternal_pid_file = '{}/{major}-main.pid'\t\t\t# write an extra PID file\ncluster_name = '{major}/main'\t\t\t# added to process titles if nonempty\ninclude_dir = 'conf.d'\t\t\t# include files ending in '.conf' from\n",
            fx.datadir.display(),
            run.display(),
            c = confdir.display(),
        );
        if major < 15 {
            // pg_createcluster before 15 sets it; PostgreSQL 15 removed the setting.
            let stats = run.join(format!("{major}-main.pg_stat_tmp"));
            mkdirs_owned(root, &stats, 0o700);
            let _ = writeln!(conf, "stats_temp_directory = '{}'", stats.display());
        }
        append(&confdir.join("postgresql.conf"), &conf);
        let confd = confdir.join("conf.d");
        mkdirs_owned(root, &confd, 0o755);
        write_owned(&confd.join("tuning.conf"), "work_mem = '8MB'\n", 0o644);
        write_owned(&confdir.join("start.conf"), START_CONF, 0o644);
        write_owned(
            &confdir.join("pg_ctl.conf"),
            "# Automatic pg_ctl configuration\npg_ctl_options = ''\n",
            0o644,
        );
        write_owned(
            &confdir.join("environment"),
            "# environment variables for postgres processes\n",
            0o644,
        );
        let d = Debian { fx, confdir };
        if running {
            d.start();
        }
        d
    }

    fn root(&self) -> &Path {
        self.fx.root.path()
    }

    /// `pg_ctl start -D <confdir>`, as pg_ctlcluster does.
    fn start(&self) {
        let log = self.root().join(format!("server-{}.log", self.fx.major));
        let out = common::as_owner(
            &bindir(self.fx.major).join("pg_ctl"),
            &[
                "start",
                "-D",
                &self.confdir.display().to_string(),
                "-w",
                "-l",
                &log.display().to_string(),
            ],
        );
        common::ok(&out, "pg_ctl start -D confdir");
    }

    fn new_confdir(&self, major: u32) -> PathBuf {
        self.root().join(format!("etc/postgresql/{major}/main"))
    }

    /// pgleap arguments naming the cluster as postgresql-common does, with the cache's bindirs.
    fn args(&self, command: &str, new_major: u32, extra: &[&str]) -> Vec<String> {
        let mut a = vec![
            command.to_string(),
            "--root".into(),
            self.root().display().to_string(),
            "--cluster".into(),
            format!("{}/main", self.fx.major),
            "--old-bindir".into(),
            bindir(self.fx.major).display().to_string(),
            "--new-bindir".into(),
            bindir(new_major).display().to_string(),
        ];
        a.extend(extra.iter().map(ToString::to_string));
        a
    }

    fn show(&self, setting: &str) -> String {
        self.fx
            .sql("postgres", &format!("SHOW {setting}"))
            .trim()
            .to_string()
    }
}

fn mkdirs_owned(root: &Path, dir: &Path, mode: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for a in dir
        .ancestors()
        .take_while(|a| a.starts_with(root) && *a != root)
    {
        chown(a);
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn write_owned(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    chown(path);
}

fn append(path: &Path, text: &str) {
    let mut s = std::fs::read_to_string(path).unwrap();
    s.push_str(text);
    std::fs::write(path, s).unwrap();
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The start mode of a start.conf: its first line that is no comment.
fn start_mode(path: &Path) -> String {
    read(path)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_default()
        .to_string()
}

fn running(datadir: &Path) -> bool {
    let Ok(pid) = std::fs::read_to_string(datadir.join("postmaster.pid")) else {
        return false;
    };
    let pid = pid.lines().next().unwrap_or("").trim().to_string();
    Path::new(&format!("/proc/{pid}")).exists()
}

#[track_caller]
fn assert_contains(haystack: &str, needle: &str) {
    assert!(haystack.contains(needle), "{needle:?} not in:\n{haystack}");
}

/// Debian, 15 → 17 in copy mode, nothing managing the server under --root (pg_ctl): the new
/// cluster's configuration goes to /etc/postgresql/17/main and is what the new server runs
/// with; the old cluster is set to manual, and rollback puts `auto` back.
#[test]
fn debian_cluster_upgrades_into_etc_postgresql_and_old_goes_manual() {
    let d = Debian::build(15, true);
    let root = d.root().to_path_buf();
    let port = d.fx.port;
    let rows = d.fx.checksums(15, port);
    let new_datadir = root.join("var/lib/postgresql/17/main");
    let new_confdir = d.new_confdir(17);

    // check: the detected layout in the plan and in --json; nothing written to /etc.
    let etc_before = common::snapshot(&root.join("etc"));
    let check = common::pgleap(d.args("check", 17, &["--json"]));
    check.success();
    let plan = &check.json()["plan"];
    assert_eq!(plan["layout"]["kind"], "debian");
    assert_eq!(plan["layout"]["version"], 15);
    assert_eq!(plan["layout"]["name"], "main");
    assert_eq!(plan["layout"]["confdir"], d.confdir.display().to_string());
    assert_eq!(plan["old"]["datadir"], d.fx.datadir.display().to_string());
    assert_eq!(plan["new"]["datadir"], new_datadir.display().to_string());
    assert_eq!(plan["new"]["confdir"], new_confdir.display().to_string());
    assert_eq!(plan["host"]["old"]["stop"]["kind"], "pg-ctl");
    assert_eq!(plan["host"]["boot"]["kind"], "start-conf");
    assert_contains(
        &check.stderr,
        &format!(
            "layout        Debian cluster 15/main, config in {} → {}",
            d.confdir.display(),
            new_confdir.display()
        ),
    );
    assert_eq!(etc_before, common::snapshot(&root.join("etc")));
    assert!(!new_confdir.exists() && !new_datadir.exists());

    let run = common::pgleap(d.args("upgrade", 17, &["--mode", "copy"]));
    run.success();
    assert_contains(&run.stderr, "set to manual");

    // The new server runs with the carried configuration, from /etc/postgresql/17/main.
    assert!(d.show("server_version_num").starts_with("17"));
    assert_eq!(
        d.show("config_file"),
        new_confdir.join("postgresql.conf").display().to_string()
    );
    assert_eq!(d.show("data_directory"), new_datadir.display().to_string());
    assert_eq!(
        d.show("hba_file"),
        new_confdir.join("pg_hba.conf").display().to_string()
    );
    assert_eq!(
        d.show("ident_file"),
        new_confdir.join("pg_ident.conf").display().to_string()
    );
    assert_eq!(
        d.show("external_pid_file"),
        root.join("run/postgresql/17-main.pid")
            .display()
            .to_string()
    );
    assert_eq!(d.show("cluster_name"), "17/main");
    assert_eq!(d.show("port"), port.to_string());
    assert_eq!(d.show("work_mem"), "8MB", "conf.d was not carried");
    assert_eq!(d.fx.checksums(17, port), rows);
    for f in [
        "start.conf",
        "pg_ctl.conf",
        "environment",
        "conf.d/tuning.conf",
    ] {
        assert!(new_confdir.join(f).is_file(), "{f} not carried");
    }
    assert_eq!(start_mode(&new_confdir.join("start.conf")), "auto");
    assert_eq!(
        std::fs::metadata(new_confdir.join("postgresql.conf"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
    for f in ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"] {
        assert!(
            !new_datadir.join(f).exists(),
            "initdb's {f} left in the new data directory"
        );
    }
    // The old cluster does not come back at boot beside the new one.
    assert_eq!(start_mode(&d.confdir.join("start.conf")), "manual");
    assert!(!running(&d.fx.datadir));

    // Rollback (copy mode): the new cluster and its /etc directory go, `auto` comes back.
    let back = common::pgleap([
        "rollback",
        "--root",
        &root.display().to_string(),
        "--cluster",
        "15/main",
        "--yes",
    ]);
    back.success();
    assert_contains(&back.stderr, "restored");
    assert_eq!(read(&d.confdir.join("start.conf")), START_CONF);
    assert!(
        !new_confdir.exists(),
        "the new configuration is still in /etc"
    );
    assert!(!new_datadir.exists());
    assert!(d.show("server_version_num").starts_with("15"));
    assert_eq!(d.fx.checksums(15, port), rows);
}

/// The lines indented by 4 spaces right after the first line of `out` starting with `header`.
fn printed_block(out: &str, header: &str) -> Vec<String> {
    let mut lines = out.lines().skip_while(|l| !l.starts_with(header));
    assert!(lines.next().is_some(), "no {header:?} in:\n{out}");
    lines
        .take_while(|l| l.starts_with("    "))
        .map(|l| l[4..].to_string())
        .collect()
}

/// Runs printed lines verbatim as the owner, as one `bash -e` script.
fn run_verbatim(lines: &[String]) {
    let script = lines.join("\n");
    let out = common::as_owner(Path::new("/bin/bash"), &["-e", "-c", &script]);
    common::ok(&out, &format!("the printed commands:\n{script}"));
}

/// A streaming standby of `d` on the same host, at `<root>/standby/16/main` with its own
/// configuration files in its data directory; its port.
fn standby_keeping_its_configuration(d: &Debian) -> (PathBuf, u16) {
    let root = d.root().to_path_buf();
    let sb = root.join("standby/16/main");
    mkdirs_owned(&root, sb.parent().unwrap(), 0o755);
    let socket = d.fx.socket.display().to_string();
    let args = [
        "-h",
        &socket,
        "-p",
        &d.fx.port.to_string(),
        "-U",
        "postgres",
        "-D",
        &sb.display().to_string(),
        "-X",
        "stream",
        "-R",
        "--checkpoint=fast",
        "-C",
        "-S",
        "sb",
    ];
    common::ok(
        &common::as_owner(&bindir(16).join("pg_basebackup"), &args),
        "pg_basebackup",
    );
    let sb_port = common::port();
    write_owned(
        &sb.join("postgresql.conf"),
        &format!(
            "port = {sb_port}\nlisten_addresses = ''\nunix_socket_directories = '{socket}'\nhot_standby = on\n"
        ),
        0o600,
    );
    write_owned(
        &sb.join("pg_hba.conf"),
        "local all all trust\nlocal replication all trust\n",
        0o600,
    );
    common::start_server(16, &sb, &root.join("standby.log"));
    common::wait_for(
        "the standby streams",
        std::time::Duration::from_secs(60),
        || {
            d.fx.sql(
                "postgres",
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
            )
            .trim()
                == "1"
        },
    );
    (sb, sb_port)
}

/// A Debian primary (configuration in /etc/postgresql/16/main) with a standby on the same
/// host that keeps its own configuration in its data directory: the printed rsync, which
/// copies the primary's data directory without any configuration, saves the standby's own
/// files first and puts them back, so that the standby started by the printed command
/// streams from the new primary.
#[test]
fn debian_primary_with_a_standby_keeping_its_configuration_is_rebuilt() {
    let d = Debian::build(16, true);
    let root = d.root().to_path_buf();
    let (sb, sb_port) = standby_keeping_its_configuration(&d);
    let standby_rows = || {
        common::psql(
            17,
            &d.fx.socket,
            sb_port,
            "postgres",
            "postgres",
            "SELECT count(*) FROM t",
        )
    };

    let mapping = format!("walreceiver={}", sb.display());
    let flags = [
        "--mode",
        "link",
        "--standbys",
        "rebuild-later",
        "--standby",
        &mapping,
        "--slots",
        "recreate-physical",
    ];
    let run = common::pgleap(d.args("upgrade", 17, &flags));
    run.success();
    let procedure = printed_block(&run.stderr, "  standby 'walreceiver'");
    let saved = root.join("standby/16/main.standby.postgresql.conf");
    for line in [
        format!(
            "cp -p {} {}",
            sb.join("postgresql.conf").display(),
            saved.display()
        ),
        format!(
            "cp -p {} {}",
            sb.join("pg_hba.conf").display(),
            root.join("standby/16/main.standby.pg_hba.conf").display()
        ),
        format!(
            "sed -E 's/^[[:space:]]*(db_user_namespace|old_snapshot_threshold)[[:space:]]*(=|[[:space:]]).*/# pgleap: PostgreSQL 17 does not have this setting: &/I' {} > {}",
            saved.display(),
            root.join("standby/17/main/postgresql.conf").display()
        ),
    ] {
        assert!(procedure.contains(&line), "{line}\nnot in {procedure:?}");
    }
    run_verbatim(&procedure);

    let resume = common::pgleap(d.args("upgrade", 17, &flags));
    resume.success();
    let start = printed_block(&resume.stderr, "  standby 'walreceiver'");
    assert_eq!(
        start.last().unwrap(),
        &format!(
            "{} -D {} -l {} start",
            bindir(17).join("pg_ctl").display(),
            root.join("standby/17/main").display(),
            root.join("standby/17/main/startup.log").display()
        )
    );
    run_verbatim(&start);
    d.fx.sql(
        "postgres",
        "INSERT INTO t SELECT g, 'after' FROM generate_series(1001, 1010) g",
    );
    common::wait_for(
        "the standby has the new rows",
        std::time::Duration::from_secs(60),
        || standby_rows().trim() == "1010",
    );
    assert_eq!(
        common::psql(
            17,
            &d.fx.socket,
            sb_port,
            "postgres",
            "postgres",
            "SELECT pg_is_in_recovery()"
        )
        .trim(),
        "t"
    );
}

/// Debian 14 (whose postgresql.conf sets stats_temp_directory, gone in 15) through the user's
/// hooks: --stop-command stops the old server, --start-command starts the new one, each told
/// which server by its environment.
#[test]
fn debian_14_through_hooks_drops_stats_temp_directory() {
    let d = Debian::build(14, true);
    let root = d.root().to_path_buf();
    let port = d.fx.port;
    let rows = d.fx.checksums(14, port);
    let hook_log = root.join("hook.log");
    let hook = root.join("hook.sh");
    let as_owner = if is_root() {
        format!("runuser -u {} --", common::owner().name)
    } else {
        String::new()
    };
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nset -e\necho \"$PGLEAP_HOOK_ACTION $PGLEAP_HOOK_SIDE $PGLEAP_HOOK_MAJOR $PGDATA $PGPORT $PGLEAP_HOOK_DATADIR\" >> {log}\nif [ \"$PGLEAP_HOOK_ACTION\" = start ]; then\n  {as_owner} \"$PGLEAP_HOOK_BINDIR/pg_ctl\" start -D \"$PGDATA\" -w -l {root}/hook-server.log >/dev/null\nelse\n  {as_owner} \"$PGLEAP_HOOK_BINDIR/pg_ctl\" stop -D \"$PGDATA\" -m fast -w >/dev/null\nfi\n",
            log = hook_log.display(),
            root = root.display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let hook_s = hook.display().to_string();

    let run = common::pgleap(d.args(
        "upgrade",
        17,
        &[
            "--mode",
            "link",
            "--stop-command",
            &hook_s,
            "--start-command",
            &hook_s,
            "--json",
        ],
    ));
    run.success();
    let doc = run.json();
    assert_eq!(doc["plan"]["host"]["old"]["stop"]["kind"], "hook");
    assert_eq!(doc["plan"]["host"]["new"]["start"]["command"], hook_s);
    let new_confdir = d.new_confdir(17);
    let new_datadir = root.join("var/lib/postgresql/17/main");
    assert_eq!(
        read(&hook_log),
        format!(
            "stop old 14 {} {port} {}\nstart new 17 {} {port} {}\n",
            d.confdir.display(),
            d.fx.datadir.display(),
            new_confdir.display(),
            new_datadir.display()
        )
    );
    assert!(d.show("server_version_num").starts_with("17"));
    assert_eq!(
        d.show("config_file"),
        new_confdir.join("postgresql.conf").display().to_string()
    );
    assert_eq!(d.show("port"), port.to_string());
    assert_eq!(d.fx.checksums(17, port), rows);
    let conf = read(&new_confdir.join("postgresql.conf"));
    // Kept for the record, commented out with the reason (initdb's own template line aside).
    let stats: Vec<&str> = conf
        .lines()
        .filter(|l| l.contains("stats_temp_directory") && l.contains("run/postgresql"))
        .collect();
    assert_eq!(stats.len(), 1, "{conf}");
    assert!(
        stats[0].starts_with("#stats_temp_directory")
            && stats[0].contains("# pgleap: PostgreSQL 17 has no setting stats_temp_directory"),
        "{}",
        stats[0]
    );
    assert_contains(
        &doc["config"]["commented"].to_string(),
        "stats_temp_directory",
    );
    assert_eq!(start_mode(&d.confdir.join("start.conf")), "manual");
}

/// RHEL/PGDG under --root: binaries found in /usr/pgsql-N/bin, data in /var/lib/pgsql/N/data,
/// and the unit postgresql-15 disabled (postgresql-17 enabled) once the upgrade succeeded;
/// rollback enables postgresql-15 again.
#[test]
fn rhel_layout_finds_pgsql_binaries_and_switches_units() {
    let fx = Fixture::new(15)
        .layout("var/lib/pgsql/{major}/data")
        .running()
        .build();
    let root = fx.root.path().to_path_buf();
    let port = fx.port;
    let rows = fx.checksums(15, port);
    std::fs::create_dir_all(root.join("usr")).unwrap();
    for major in [15, 17] {
        // /usr/pgsql-N is the whole installation (bin, lib, share), as the cache's.
        std::os::unix::fs::symlink(
            bindir(major).parent().unwrap(),
            root.join(format!("usr/pgsql-{major}")),
        )
        .unwrap();
    }
    let units = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    for major in [15, 17] {
        std::fs::write(
            units.join(format!("postgresql-{major}.service")),
            format!(
                "[Unit]\nDescription=PostgreSQL {major} database server\n[Service]\nType=notify\nUser=postgres\nEnvironment=PGDATA=/var/lib/pgsql/{major}/data/\nExecStart=/usr/pgsql-{major}/bin/postmaster -D ${{PGDATA}}\n[Install]\nWantedBy=multi-user.target\n"
            ),
        )
        .unwrap();
    }
    let systemctl = Path::new("/usr/bin/systemctl").exists() && is_root();
    let unit_state = |unit: &str| -> String {
        let out = Command::new("systemctl")
            .arg(format!("--root={}", root.display()))
            .args(["is-enabled", &format!("{unit}.service")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    if systemctl {
        let out = Command::new("systemctl")
            .arg(format!("--root={}", root.display()))
            .args(["enable", "postgresql-15.service"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(unit_state("postgresql-15"), "enabled");
    } else {
        eprintln!("systemctl missing or not root: the unit part of this test is skipped");
    }

    let root_s = root.display().to_string();
    let old = fx.datadir.display().to_string();
    let run = common::pgleap([
        "upgrade",
        "--root",
        &root_s,
        "--old-datadir",
        &old,
        "--new-version",
        "17",
        "--mode",
        "copy",
        "--json",
    ]);
    run.success();
    let plan = &run.json()["plan"];
    assert_eq!(plan["layout"]["kind"], "rhel");
    assert_eq!(
        plan["old"]["bindir"],
        root.join("usr/pgsql-15/bin").display().to_string()
    );
    assert_eq!(
        plan["new"]["bindir"],
        root.join("usr/pgsql-17/bin").display().to_string()
    );
    let new_datadir = root.join("var/lib/pgsql/17/data");
    assert_eq!(plan["new"]["datadir"], new_datadir.display().to_string());
    assert!(running(&new_datadir));
    let v = fx.sql("postgres", "SHOW server_version_num");
    assert!(v.starts_with("17"), "{v}");
    assert_eq!(fx.sql("postgres", "SHOW port").trim(), port.to_string());
    assert_eq!(fx.checksums(17, port), rows);
    if systemctl {
        assert_eq!(plan["host"]["boot"]["kind"], "units");
        assert_eq!(unit_state("postgresql-15"), "disabled");
        assert_eq!(unit_state("postgresql-17"), "enabled");
    }

    common::pgleap([
        "rollback",
        "--root",
        &root_s,
        "--old-datadir",
        &old,
        "--yes",
    ])
    .success();
    let v = fx.sql("postgres", "SHOW server_version_num");
    assert!(v.starts_with("15"), "{v}");
    assert_eq!(fx.checksums(15, port), rows);
    if systemctl {
        assert_eq!(unit_state("postgresql-15"), "enabled");
        assert_eq!(unit_state("postgresql-17"), "disabled");
    }
}

fn pgleap_with_fault(args: &[String], point: &str) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_pgleap"))
        .args(args)
        .env("PGLEAP_FAULT", point)
        .output()
        .unwrap();
    Run::from(out)
}

/// Crashes of a Debian upgrade: killed once the new /etc directory exists, rollback moves it
/// out of /etc/postgresql (where postgresql-common would list it as a cluster); killed in
/// the downtime window, the upgrade resumes and ends with the old cluster set to manual.
#[test]
fn debian_crashes_roll_back_out_of_etc_and_resume() {
    use std::os::unix::process::ExitStatusExt as _;
    let d = Debian::build(15, true);
    let root = d.root().to_path_buf();
    let port = d.fx.port;
    let rows = d.fx.checksums(15, port);
    let new_confdir = d.new_confdir(17);
    let args = d.args("upgrade", 17, &["--mode", "link"]);

    let crashed = pgleap_with_fault(&args, "after:carry-config");
    assert_eq!(crashed.status.signal(), Some(9), "{}", crashed.stderr);
    assert!(new_confdir.join("postgresql.conf").is_file());
    let back = common::pgleap([
        "rollback",
        "--root",
        &root.display().to_string(),
        "--cluster",
        "15/main",
    ]);
    back.success();
    assert!(!new_confdir.exists(), "{}", back.stderr);
    let aside: Vec<PathBuf> = std::fs::read_dir(root.join("var/lib/postgresql/17"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.display().to_string().ends_with(".config"))
        .collect();
    assert_eq!(aside.len(), 1, "{}", back.stderr);
    assert!(aside[0].join("start.conf").is_file());
    assert_eq!(read(&d.confdir.join("start.conf")), START_CONF);
    assert!(d.show("server_version_num").starts_with("15"));

    let crashed = pgleap_with_fault(&args, "after:stop-old");
    assert_eq!(crashed.status.signal(), Some(9), "{}", crashed.stderr);
    assert_eq!(start_mode(&d.confdir.join("start.conf")), "auto");
    common::pgleap(&args).success();
    assert!(d.show("server_version_num").starts_with("17"));
    assert_eq!(
        d.show("config_file"),
        new_confdir.join("postgresql.conf").display().to_string()
    );
    assert_eq!(d.fx.checksums(17, port), rows);
    assert_eq!(start_mode(&d.confdir.join("start.conf")), "manual");
}

/// Runs pgleap, asserts a refusal quoting `message`, and that nothing below `root` changed.
#[track_caller]
fn assert_refused(root: &Path, args: &[String], message: &str) -> Run {
    let before = common::snapshot(root);
    let run = common::pgleap(args);
    run.refused(message);
    assert_contains(&run.stderr, "Nothing was changed.");
    assert_eq!(before, common::snapshot(root), "{} changed files", args[0]);
    run
}

#[test]
fn refuses_a_debian_cluster_that_does_not_exist() {
    let d = Debian::build(15, false);
    for cmd in ["check", "upgrade"] {
        let mut args = d.args(cmd, 17, &[]);
        let i = args.iter().position(|a| a == "15/main").unwrap();
        args[i] = "15/nope".into();
        let run = assert_refused(
            d.root(),
            &args,
            &format!(
                "refused: there is no cluster 15/nope: {} does not exist",
                d.root()
                    .join("etc/postgresql/15/nope/postgresql.conf")
                    .display()
            ),
        );
        assert_contains(
            &run.stderr,
            "Pass --cluster with one of the clusters found: 15/main",
        );
    }
    assert!(!d.root().join("etc/postgresql/17").exists());
}

/// Installing postgresql-17 on Debian creates an empty cluster 17/main: pgleap will not
/// write its configuration over it.
#[test]
fn refuses_when_the_new_debian_cluster_exists() {
    let d = Debian::build(15, false);
    let taken = d.new_confdir(17);
    std::fs::create_dir_all(&taken).unwrap();
    std::fs::write(taken.join("postgresql.conf"), "port = 5433\n").unwrap();
    let run = assert_refused(
        d.root(),
        &d.args("upgrade", 17, &[]),
        &format!(
            "{} exists and is not empty (1 entry): another cluster of that name exists",
            taken.display()
        ),
    );
    assert_contains(&run.stderr, "pg_dropcluster");
    assert!(!d.root().join("var/lib/postgresql/17/main").exists());
}

/// Run as the cluster owner, pgleap cannot create /etc/postgresql/17 when /etc/postgresql is
/// root's: refused before anything is written.
#[test]
fn refuses_as_owner_when_etc_postgresql_is_not_writable() {
    use std::os::unix::process::CommandExt as _;
    if !is_root() {
        eprintln!("skipped: needs root to hand /etc/postgresql to root and run as the owner");
        return;
    }
    let d = Debian::build(15, false);
    let etc = d.root().join("etc/postgresql");
    nix::unistd::chown(&etc, Some(0.into()), Some(0.into())).unwrap();
    std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The pgleap binary where the owner may run it (the target directory may be private).
    let bin = tempfile::Builder::new()
        .prefix("pgleap-bin-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = bin.path().join("pgleap");
    std::fs::copy(env!("CARGO_BIN_EXE_pgleap"), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let owner = common::owner();
    let before = common::snapshot(d.root());
    let out = Command::new(&exe)
        .args(d.args("upgrade", 17, &[]))
        .current_dir("/")
        .uid(owner.uid)
        .gid(owner.gid)
        .output()
        .unwrap();
    let run = Run::from(out);
    run.refused(&format!(
        "{} cannot be created: {} is not writable by {}. Run pgleap as root",
        d.new_confdir(17).display(),
        etc.display(),
        owner.name
    ));
    assert_contains(&run.stderr, "Nothing was changed.");
    assert_eq!(before, common::snapshot(d.root()));
}

/// `--cluster` and `--old-datadir` name the same thing: both is a usage error.
#[test]
fn cluster_and_old_datadir_conflict() {
    let run = common::pgleap(["check", "--cluster", "15/main", "--old-datadir", "/x"]);
    assert_eq!(run.code(), 2, "{}", run.stderr);
    let run = common::pgleap(["check", "--cluster", "main"]);
    assert_eq!(run.code(), 2, "{}", run.stderr);
    assert_contains(&run.stderr, "is not VERSION/NAME, for example 15/main");
}

/// A postgresql-common cluster that removes itself (and what pgleap made of it) when dropped.
struct RealCluster {
    name: String,
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        let n = &self.name;
        for dir in [
            format!("/etc/postgresql/17/{n}"),
            format!("/var/lib/postgresql/17/{n}"),
        ] {
            if Path::new(&dir).join("postmaster.pid").exists()
                || Path::new(&dir).join("postgresql.conf").exists()
            {
                let _ = common::as_owner(
                    &bindir(17).join("pg_ctl"),
                    &["stop", "-D", &dir, "-m", "immediate", "-w"],
                );
            }
        }
        let _ = Command::new("pg_dropcluster")
            .args(["--stop", "15", n])
            .status();
        let mut leftovers = vec![
            PathBuf::from(format!("/etc/postgresql/17/{n}")),
            PathBuf::from(format!("/var/lib/postgresql/17/{n}")),
            PathBuf::from(format!("/var/lib/postgresql/17/.pgleap-{n}-15-to-17")),
        ];
        if let Ok(rd) = std::fs::read_dir("/var/lib/postgresql/17") {
            leftovers.extend(rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| {
                p.file_name()
                    .is_some_and(|f| f.to_string_lossy().starts_with(&format!("{n}.")))
            }));
        }
        for p in leftovers {
            let _ = std::fs::remove_dir_all(p);
        }
        for d in ["/etc/postgresql/17", "/var/lib/postgresql/17"] {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn sh(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .env("LANG", "C.UTF-8")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// postgresql-common itself: a cluster made by pg_createcluster and run by pg_ctlcluster,
/// upgraded by name to 17 (from the cache: pg_ctlcluster gets --bindir), then rolled back.
/// Uses the real /etc/postgresql with a cluster name of its own, removed afterwards.
#[test]
fn real_pg_createcluster_cluster_upgrades_through_pg_ctlcluster() {
    if !is_root() {
        eprintln!("skipped: pg_createcluster and /etc/postgresql need root");
        return;
    }
    if !Path::new("/usr/bin/pg_createcluster").exists()
        || !Path::new("/usr/lib/postgresql/15/bin/pg_ctl").exists()
    {
        if !Path::new("/usr/bin/apt-get").exists() {
            eprintln!("skipped: postgresql-common is not installed and apt-get is unavailable");
            return;
        }
        let (ok, out) = sh("apt-get", &["install", "-y", "-qq", "postgresql-15"]);
        assert!(ok, "apt-get install postgresql-15 failed:\n{out}");
    }
    let name = format!("pgleap{}", std::process::id());
    let cluster = RealCluster { name: name.clone() };
    let port = common::port();
    let sock = tempfile::Builder::new()
        .prefix("pgleap-sock-")
        .tempdir_in("/tmp")
        .unwrap();
    chown(sock.path());
    let (ok, out) = sh(
        "pg_createcluster",
        &[
            "--locale",
            "C.UTF-8",
            "-p",
            &port.to_string(),
            "-s",
            &sock.path().display().to_string(),
            "--start",
            "15",
            &name,
        ],
    );
    assert!(ok, "pg_createcluster failed:\n{out}");
    let psql = |major: u32, sql: &str| {
        common::psql(major, sock.path(), port, "postgres", "postgres", sql)
            .trim()
            .to_string()
    };
    psql(
        15,
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 500) g",
    );
    let sum = "SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM t";
    let rows = psql(15, sum);
    let old_start = format!("/etc/postgresql/15/{name}/start.conf");
    let original_start = read(Path::new(&old_start));

    let run = common::pgleap([
        "upgrade",
        "--cluster",
        &format!("15/{name}"),
        "--new-bindir",
        &bindir(17).display().to_string(),
        "--mode",
        "copy",
    ]);
    run.success();
    assert_contains(&run.stderr, &format!("pg_ctlcluster 15 {name} stop"));
    // pg_ctlcluster checks a start with /usr/lib/postgresql/17/bin/psql, which is not there:
    // the new cluster is started with pg_ctl, and pgleap says what boot will lack.
    if !Path::new("/usr/lib/postgresql/17/bin/psql").exists() {
        assert_contains(&run.stderr, "(pg_ctl start)");
        assert_contains(&run.stderr, "postgresql-common starts cluster 17/");
    }
    assert!(psql(17, "SHOW server_version_num").starts_with("17"));
    assert_eq!(
        psql(17, "SHOW config_file"),
        format!("/etc/postgresql/17/{name}/postgresql.conf")
    );
    assert_eq!(psql(17, "SHOW cluster_name"), format!("17/{name}"));
    assert_eq!(psql(17, sum), rows);
    let (_, ls) = sh("pg_lsclusters", &["--no-header"]);
    let line = |v: &str| {
        ls.lines()
            .find(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.first() == Some(&v) && f.get(1) == Some(&name.as_str())
            })
            .unwrap_or_else(|| panic!("no {v}/{name} in pg_lsclusters:\n{ls}"))
            .to_string()
    };
    assert_contains(&line("17"), &format!("{port} online"));
    // (pg_lsclusters calls 15 online too: it probes the port, which the new cluster took.)
    let _ = line("15");
    assert!(!Path::new(&format!("/var/lib/postgresql/15/{name}/postmaster.pid")).exists());
    assert_eq!(start_mode(Path::new(&old_start)), "manual");

    let back = common::pgleap(["rollback", "--cluster", &format!("15/{name}"), "--yes"]);
    back.success();
    assert_contains(&back.stderr, &format!("pg_ctlcluster 15 {name} start"));
    assert_eq!(read(Path::new(&old_start)), original_start);
    assert!(psql(15, "SHOW server_version_num").starts_with("15"));
    assert_eq!(psql(15, sum), rows);
    assert!(!Path::new(&format!("/etc/postgresql/17/{name}")).exists());
    drop(cluster);
}
