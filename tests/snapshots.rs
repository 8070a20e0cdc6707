//! What users read, pinned: `pgleap --help`, each subcommand's `--help`, and `check --json`
//! on a real cluster. A change to any of them shows up as a snapshot diff to review (and the
//! README to update), never silently. Review with `cargo insta review`, or rerun with
//! `INSTA_UPDATE=always` and read the diff.
//!
//! Temporary paths, ports, byte counts, devices, uids, core counts and point releases vary
//! between runs and machines; they are replaced by placeholders before the comparison.

mod common;

use std::process::Command;

use common::{Fixture, bindir};

/// `pgleap ARGS` with an environment holding nothing that changes the output: no
/// `PGLEAP_*` variable (clap shows their values in the help) and a fixed terminal width.
fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pgleap"))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("COLUMNS", "100")
        .output()
        .unwrap();
    assert!(out.status.success(), "pgleap {args:?} failed: {out:?}");
    assert!(out.stderr.is_empty(), "pgleap {args:?} wrote to stderr");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn top_level_help() {
    insta::assert_snapshot!("help", help(&["--help"]));
}

#[test]
fn subcommand_help() {
    for sub in [
        "check", "upgrade", "rehearse", "status", "rollback", "finalize",
    ] {
        insta::assert_snapshot!(format!("help_{sub}"), help(&[sub, "--help"]));
    }
}

/// Replaces what varies between runs in a `check --json` document by placeholders.
fn stable(value: &mut serde_json::Value, subst: &[(String, &str)]) {
    use serde_json::Value;
    const VARYING: [&str; 13] = [
        "free",
        "needed",
        "device",
        "relation_bytes",
        "user_relation_bytes",
        "uid",
        "gid",
        "jobs",
        "port",
        "estimated_downtime_secs",
        // The estimate's basis names the jobs and bytes; the scaled one, initdb's time.
        "copy_bytes",
        "downtime_basis",
        "downtime_estimate",
    ];
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if VARYING.contains(&k.as_str()) && !v.is_null() {
                    *v = Value::String(format!("[{k}]"));
                } else if k == "version" && v.is_string() {
                    // 17.2 → 17.x: the cache may hold any point release.
                    let s = v.as_str().unwrap_or_default();
                    let major = s.split('.').next().unwrap_or(s);
                    *v = Value::String(format!("{major}.x"));
                } else {
                    stable(v, subst);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| stable(v, subst)),
        Value::String(s) => {
            for (from, to) in subst {
                *s = s.replace(from.as_str(), to);
            }
        }
        _ => {}
    }
}

#[test]
fn check_json_on_a_stopped_cluster() {
    let fx = Fixture::new(16).build();
    let run = fx.pgleap(fx.args("check", 17, &["--mode", "copy", "--json"]));
    run.success();
    let mut doc = run.json();
    let subst = [
        (bindir(16).display().to_string(), "[BINDIR16]"),
        (bindir(17).display().to_string(), "[BINDIR17]"),
        (fx.root.path().display().to_string(), "[ROOT]"),
    ];
    stable(&mut doc, &subst);
    // The cluster's owner depends on how the tests run (root with PGLEAP_TEST_OWNER, or
    // the user running them).
    doc["plan"]["owner"] = serde_json::json!("[OWNER]");
    insta::assert_snapshot!("check_json", serde_json::to_string_pretty(&doc).unwrap());
}
