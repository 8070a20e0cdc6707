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

/// The single JSON document on stdout; fails when there are none or several.
#[track_caller]
fn one_document(run: &common::Run) -> serde_json::Value {
    let docs: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&run.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                run.stdout, run.stderr
            )
        });
    assert_eq!(
        docs.len(),
        1,
        "expected one JSON document on stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    docs.into_iter().next().unwrap()
}

// `--json` printed nothing for `upgrade` on a finished upgrade, `finalize` on a finalized one
// and usage errors, and two documents for a refused `check`. Every outcome prints one.
#[test]
fn every_json_outcome_prints_one_document() {
    let fx = Fixture::new(16).build();
    let new = fx.new_datadir(17);

    // Usage error: exit 2, and the document says so.
    let run = fx.pgleap(fx.args("check", 17, &["--json", "--mode", "sideways"]));
    assert_eq!(run.code(), 2, "{}", run.stderr);
    let doc = one_document(&run);
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["exit_code"], 2);
    assert!(doc["error"].as_str().unwrap().contains("sideways"), "{doc}");

    // A refusal found by the preflight.
    std::fs::create_dir(&new).unwrap();
    std::fs::write(new.join("stray"), "x").unwrap();
    let run = fx.pgleap(fx.args("check", 17, &["--json"]));
    assert_eq!(run.code(), 3, "{}", run.stderr);
    let doc = one_document(&run);
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["exit_code"], 3);
    assert!(doc["findings"].to_string().contains("not empty"), "{doc}");
    std::fs::remove_dir_all(&new).unwrap();

    let run = fx.pgleap(fx.args("upgrade", 17, &["--json", "--no-analyze"]));
    run.success();
    assert_eq!(one_document(&run)["ok"], true);
    // Again: nothing to do, said in JSON too.
    let run = fx.pgleap(fx.args("upgrade", 17, &["--json", "--no-analyze"]));
    run.success();
    let doc = one_document(&run);
    assert_eq!(doc["ok"], true, "{doc}");
    assert_eq!(doc["state"], "done", "{doc}");
    assert_eq!(doc["new_datadir"], new.display().to_string(), "{doc}");

    let target = ["-d", &fx.datadir.display().to_string(), "--json"];
    let run = fx.pgleap(["status"].iter().chain(&target));
    run.success();
    assert_eq!(one_document(&run)["state"], "done");
    let run = fx.pgleap(["finalize", "--yes"].iter().chain(&target));
    run.success();
    assert_eq!(one_document(&run)["ok"], true);
    let run = fx.pgleap(["finalize", "--yes"].iter().chain(&target));
    run.success();
    let doc = one_document(&run);
    assert_eq!(doc["ok"], true, "{doc}");
    assert_eq!(doc["state"], "finalized", "{doc}");
    assert_eq!(doc["removed"], serde_json::json!([]), "{doc}");
}
