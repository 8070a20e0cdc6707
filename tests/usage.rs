//! What a person meets first: `--help` and README's option tables name the same flags and
//! variables, output into a closed pipe (`pgleap -vv check ... 2>&1 | head`) ends the run
//! quietly, and `check` names no directory it never creates.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Fixture, written_by_a_start_and_stop};

// 1. Help and README.

/// One option as `--help` shows it or README's tables list it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Opt {
    short: Option<char>,
    long: String,
    /// `DIR` in `--old-datadir <DIR>`; none for switches.
    value: Option<String>,
    env: Option<String>,
}

impl std::fmt::Display for Opt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(s) = self.short {
            write!(f, "-{s}, ")?;
        }
        write!(f, "--{}", self.long)?;
        if let Some(v) = &self.value {
            write!(f, " {v}")?;
        }
        write!(f, " [{}]", self.env.as_deref().unwrap_or("no variable"))
    }
}

fn help(args: &[&str]) -> String {
    let run = common::pgleap(args);
    run.success();
    run.stdout
}

/// The options in one `--help` text, without clap's own `--help` and `--version`.
fn help_options(text: &str) -> BTreeSet<Opt> {
    // An option's first line is indented by 2 (with a short flag) or 6 (without); its
    // description is indented further, and `[env: ...]` may wrap onto the next line.
    let start =
        regex::Regex::new(r"(?m)^(?:  -(\w), |      )--([a-z][a-z-]*)(\.\.\.)?(?: <([^>]+)>)?")
            .unwrap();
    let env = regex::Regex::new(r"\[env:\s+(PGLEAP_[A-Z_]+)=").unwrap();
    let starts: Vec<_> = start.captures_iter(text).collect();
    assert!(!starts.is_empty(), "no options found in:\n{text}");
    let mut out = BTreeSet::new();
    for (i, c) in starts.iter().enumerate() {
        let from = c.get(0).unwrap().end();
        let to = starts
            .get(i + 1)
            .map_or(text.len(), |n| n.get(0).unwrap().start());
        let long = c[2].to_string();
        if long == "help" || long == "version" {
            continue;
        }
        out.insert(Opt {
            short: c.get(1).map(|s| s.as_str().chars().next().unwrap()),
            long,
            value: c.get(4).map(|v| v.as_str().to_string()),
            env: env.captures(&text[from..to]).map(|e| e[1].to_string()),
        });
    }
    out
}

/// README's option tables under "### Options": (check, upgrade and rehearse; upgrade only;
/// the journal commands status/rollback/finalize; rehearse only).
fn readme_tables() -> [BTreeSet<Opt>; 4] {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("\n### Options\n")
        .nth(1)
        .expect("README has an Options section")
        .split("\n### ")
        .next()
        .unwrap();
    let row = regex::Regex::new(
        r"(?m)^\| `(?:-(\w), )?--([a-z][a-z-]*)(?: ([A-Z][A-Z/=:\[\]]*))?` \| `(PGLEAP_[A-Z_]+)`",
    )
    .unwrap();
    let mut tables: [BTreeSet<Opt>; 4] = Default::default();
    let mut table = 0;
    for line in section.lines() {
        if line.starts_with("| `upgrade` only:") {
            table = 1;
        } else if line.starts_with("| `rehearse` only:") {
            table = 3;
        } else if line.starts_with("`status`, `rollback` and `finalize`") {
            table = 2;
        }
        let Some(c) = row.captures(line) else {
            continue;
        };
        let opt = Opt {
            short: c.get(1).map(|s| s.as_str().chars().next().unwrap()),
            long: c[2].to_string(),
            value: c.get(3).map(|v| v.as_str().to_string()),
            env: Some(c[4].to_string()),
        };
        tables[table].insert(opt);
    }
    tables
}

#[track_caller]
fn assert_same_options(help: &BTreeSet<Opt>, readme: &BTreeSet<Opt>, what: &str) {
    let only_help: Vec<String> = help.difference(readme).map(ToString::to_string).collect();
    let only_readme: Vec<String> = readme.difference(help).map(ToString::to_string).collect();
    assert!(
        only_help.is_empty() && only_readme.is_empty(),
        "{what}: --help and README's option tables differ\n  only in --help: {only_help:?}\n  only in README: {only_readme:?}"
    );
}

#[test]
fn help_and_readme_name_the_same_options() {
    let [common_rows, upgrade_rows, journal_rows, rehearse_rows] = readme_tables();
    let global = help_options(&help(&["--help"]));
    assert_eq!(
        global.iter().map(|o| o.long.as_str()).collect::<Vec<_>>(),
        ["verbose"],
        "pgleap --help's own options"
    );
    assert!(
        global.is_subset(&common_rows),
        "README lists -v, --verbose as `{}`",
        global.first().unwrap()
    );

    assert_same_options(
        &help_options(&help(&["check", "--help"])),
        &common_rows,
        "check",
    );
    let upgrade: BTreeSet<Opt> = common_rows.union(&upgrade_rows).cloned().collect();
    assert_same_options(
        &help_options(&help(&["upgrade", "--help"])),
        &upgrade,
        "upgrade",
    );
    let rehearse: BTreeSet<Opt> = common_rows.union(&rehearse_rows).cloned().collect();
    assert_same_options(
        &help_options(&help(&["rehearse", "--help"])),
        &rehearse,
        "rehearse",
    );

    // status, rollback and finalize share README's second table (plus the global -v);
    // only rollback and finalize take --yes and the hooks, only rollback
    // --discard-new-writes.
    let mut seen = BTreeSet::new();
    for cmd in ["status", "rollback", "finalize"] {
        let opts = help_options(&help(&[cmd, "--help"]));
        let mut want: BTreeSet<Opt> = journal_rows.union(&global).cloned().collect();
        if cmd == "status" {
            want.retain(|o| !["yes", "stop-command", "start-command"].contains(&o.long.as_str()));
        }
        if cmd != "rollback" {
            want.retain(|o| o.long != "discard-new-writes");
        }
        assert_same_options(&opts, &want, cmd);
        seen.extend(opts);
    }
    assert!(journal_rows.is_subset(&seen));
}

// 2. A closed pipe.

/// The write end of a pipe whose reader is already gone: every write fails with EPIPE.
fn closed_pipe() -> Stdio {
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    Stdio::from(write)
}

fn status_into_closed_pipes(args: &[&str]) -> std::process::ExitStatus {
    Command::new(env!("CARGO_BIN_EXE_pgleap"))
        .args(args)
        .stdout(closed_pipe())
        .stderr(closed_pipe())
        .status()
        .unwrap()
}

#[test]
fn closed_output_pipes_end_the_run_quietly() {
    // A refusal (the error and the --json document are both written into the dead pipes):
    // its own exit code, not a panic's 101.
    let status = status_into_closed_pipes(&["-vv", "check", "-d", "/nonexistent/15", "--json"]);
    assert_eq!(status.code(), Some(3), "{status}");

    // A whole check of a real cluster with debug output: it finishes and passes, and the
    // scratch cluster is gone as after any check.
    let fx = Fixture::new(16).running().build();
    let check = fx.args("check", 17, &["--json"]);
    let mut verbose = vec!["-vv"];
    verbose.extend(check.iter().map(String::as_str));
    let status = status_into_closed_pipes(&verbose);
    assert_eq!(status.code(), Some(0), "{status}");
    let left: Vec<PathBuf> = std::fs::read_dir(fx.datadir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".pgleap-check-")
        })
        .collect();
    assert!(left.is_empty(), "check left {left:?}");
}

// 3. What check prints.

#[test]
fn check_names_no_log_directory_and_upgrade_names_the_one_it_made() {
    let fx = Fixture::new(16).running().build();
    let run = fx.pgleap(fx.args("check", 17, &["--json"]));
    run.success();
    let work_dir = PathBuf::from(run.json()["plan"]["work_dir"].as_str().unwrap());
    assert!(!work_dir.exists(), "check created {}", work_dir.display());
    let work = work_dir.display().to_string();
    assert!(
        !run.stderr.contains(&work),
        "check names {work}, which it never creates:\n{}",
        run.stderr
    );

    let run = fx.pgleap(fx.args("upgrade", 17, &["--mode", "copy"]));
    run.success();
    let logs = work_dir.join("logs");
    let line = format!("  logs          {}\n", logs.display());
    assert!(
        run.stderr.contains(&line),
        "upgrade lacks {line:?}:\n{}",
        run.stderr
    );
    assert!(logs.is_dir());
    assert!(
        std::fs::read_dir(&logs).unwrap().count() > 0,
        "{} is empty",
        logs.display()
    );
}

// 4. What check changes.

#[test]
fn check_of_a_stopped_cluster_changes_no_data_or_configuration() {
    let fx = Fixture::new(16).running().build();
    let user_table = fx.sql("postgres", "SELECT pg_relation_filepath('t')");
    fx.stop();
    let before = common::snapshot(&fx.datadir);
    assert!(
        before.contains_key(Path::new(user_table.trim())),
        "{user_table}"
    );
    fx.pgleap(fx.args("check", 17, &[])).success();
    let after = common::snapshot(&fx.datadir);
    let changed: Vec<&PathBuf> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // README and `check --help` say so: the fenced start's clean stop writes a checkpoint.
    assert!(
        changed.contains(&&PathBuf::from("global/pg_control")),
        "no shutdown checkpoint was written: {changed:?}"
    );
    let unexpected: Vec<&&PathBuf> = changed
        .iter()
        .filter(|p| !written_by_a_start_and_stop(&fx.datadir, p))
        .collect();
    assert!(
        unexpected.is_empty(),
        "check changed data or configuration files: {unexpected:?}"
    );
}
