//! Preflights that passed and then failed inside the downtime window, or refused for the wrong
//! reason, as a DBA found them on real clusters. One test per finding; each names what it
//! guards. Real clusters, binaries and pg_upgrade.

mod common;

use std::path::Path;

use common::{Fixture, chown};

/// Appends lines to the old cluster's postgresql.conf.
fn append_conf(fx: &Fixture, text: &str) {
    let path = fx.datadir.join("postgresql.conf");
    let mut conf = std::fs::read_to_string(&path).unwrap();
    conf.push_str(text);
    std::fs::write(&path, conf).unwrap();
}

/// Runs `check --json` and returns the run and its document.
fn check_json(fx: &Fixture, new: u32, extra: &[&str]) -> (common::Run, serde_json::Value) {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let run = fx.pgleap(fx.args("check", new, &args));
    let doc = run.json();
    (run, doc)
}

fn write_owned(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    chown(path);
}

// Valid settings were commented out as "rejected": `postgres --describe-config` omits the
// settings not shown in the sample file (remove_temp_files_after_crash, jit_tuple_deforming,
// ignore_checksum_failure, application_name, ...).
#[test]
fn settings_missing_from_describe_config_are_kept() {
    let fx = Fixture::new(16).running().build();
    let kept = [
        "remove_temp_files_after_crash = off",
        "jit_tuple_deforming = off",
        "ignore_checksum_failure = off",
        "application_name = 'billing'",
    ];
    append_conf(&fx, &format!("{}\n", kept.join("\n")));
    fx.sql("postgres", "SELECT pg_reload_conf()");
    let (run, doc) = check_json(&fx, 17, &[]);
    run.success();
    assert_eq!(
        doc["config"]["commented"],
        serde_json::json!([]),
        "{}",
        run.stdout
    );
    let findings = doc["findings"].to_string();
    assert!(!findings.contains("config-setting-dropped"), "{findings}");
}

// A removed setting in an include_dir outside the data directory: `check` exited 1 with the
// new server's raw FATAL instead of the refusal a removed setting in postgresql.conf gets.
#[test]
fn removed_setting_in_an_outside_include_dir_is_refused() {
    let fx = Fixture::new(16).running().build();
    let shared = fx.root.path().join("shared-conf.d");
    std::fs::create_dir(&shared).unwrap();
    chown(&shared);
    let file = shared.join("old.conf");
    // old_snapshot_threshold: removed in 17.
    write_owned(&file, "work_mem = '8MB'\nold_snapshot_threshold = -1\n");
    append_conf(&fx, &format!("include_dir '{}'\n", shared.display()));
    fx.sql("postgres", "SELECT pg_reload_conf()");
    let new = fx.new_datadir(17);
    for cmd in ["check", "upgrade"] {
        let before = common::snapshot(fx.root.path());
        let run = fx.pgleap(fx.args(cmd, 17, &[]));
        run.refused(&format!(
            "PostgreSQL 17 has no setting old_snapshot_threshold, set in {} line 2, outside the data directory",
            file.display()
        ));
        assert!(
            run.stderr.contains(&format!(
                "Comment out line 2 of {} or remove the setting",
                file.display()
            )),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("FATAL"), "{}", run.stderr);
        assert!(!new.exists(), "{cmd} left {}", new.display());
        // The old cluster's files and the shared file are untouched (the running server's
        // own files aside).
        let after = common::snapshot(fx.root.path());
        for p in [
            Path::new("shared-conf.d/old.conf"),
            Path::new("data/16/postgresql.conf"),
        ] {
            assert_eq!(before.get(p), after.get(p), "{cmd} changed {}", p.display());
        }
    }
    assert!(
        fx.sql("postgres", "SHOW server_version_num")
            .starts_with("16")
    );
}
