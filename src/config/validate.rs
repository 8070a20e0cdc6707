//! Validating the carried configuration with the new server itself: the setting names it
//! knows (`postgres --describe-config`, and `postgres -C name` for names that list leaves
//! out), then `postgres -C` until it accepts the files,
//! commenting out each setting it rejects with a note.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::config::files::{ConfFile, Dirs, comment_out, write_owned};
use crate::config::parse::{is_directive, parse_line, rejected_setting};
use crate::error::{Error, Result};
use crate::exec::process::{Opts, Runner};
use crate::inspect::install::Install;

use crate::config::CarryReport;
use crate::config::outside::{find_outside, outside_refusal};

/// The setting names the new server knows, from the server itself: the list of
/// `postgres --describe-config`, and for each of `names` (those the carried files set) that
/// it lacks, an answer to `postgres -C name`. The list leaves out settings not shown in the
/// sample file (17: 31 of them, such as `remove_temp_files_after_crash`,
/// `jit_tuple_deforming` or `application_name`), which the server accepts all the same.
pub(crate) fn valid_settings(
    runner: &Runner,
    new: &Install,
    new_data: &Path,
    names: BTreeSet<String>,
) -> Result<BTreeSet<String>> {
    let out = runner.run(
        &new.postgres(),
        &["--describe-config"],
        &Opts {
            log_name: Some("describe-config"),
            ..Opts::default()
        },
    )?;
    let mut valid: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split('\t').next())
        .filter(|n| !n.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    let unlisted: Vec<String> = names
        .into_iter()
        .filter(|n| !n.contains('.') && !is_directive(n) && !valid.contains(n))
        .collect();
    for name in unlisted {
        if server_knows(runner, new, new_data, &name)? {
            valid.insert(name);
        }
    }
    Ok(valid)
}

/// Whether the new server knows `name`: `postgres -C` prints any setting it has, and fails
/// with "unrecognized configuration parameter" for one it has not. It reads the new data
/// directory's own (initdb's) configuration, which loads cleanly.
fn server_knows(runner: &Runner, new: &Install, new_data: &Path, name: &str) -> Result<bool> {
    let args = [
        "-D".to_string(),
        new_data.display().to_string(),
        "-C".into(),
        name.to_string(),
    ];
    let out = runner.run_unchecked(
        &new.postgres(),
        &args,
        &Opts {
            log_name: Some("known-setting"),
            ..Opts::default()
        },
    )?;
    Ok(out.status.success()
        || !out
            .stderr()
            .contains("unrecognized configuration parameter"))
}

/// Asks the new server to load the carried files; comments out each setting it rejects
/// (by the name in its message) and asks again.
pub(crate) fn validate(
    runner: &Runner,
    new: &Install,
    dirs: &Dirs<'_>,
    files: &mut [ConfFile],
    outside: &[(PathBuf, Vec<String>)],
    report: &mut CarryReport,
) -> Result<()> {
    let args = [
        "-D".to_string(),
        dirs.new_conf.display().to_string(),
        "-C".into(),
        "data_directory".into(),
    ];
    for _ in 0..50 {
        let out = runner.run_unchecked(
            &new.postgres(),
            &args,
            &Opts {
                log_name: Some("validate-config"),
                ..Opts::default()
            },
        )?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = out.stderr();
        let Some(name) = rejected_setting(&stderr) else {
            return Err(crate::exec::process::failure(&new.postgres(), &args, &out));
        };
        let mut fixed = false;
        // The definition in effect is the last one read: postgresql.auto.conf, then the rest.
        for f in files.iter_mut().rev().filter(|f| f.settings) {
            if let Some(i) = f
                .lines
                .iter()
                .rposition(|l| parse_line(l).is_some_and(|s| s.name == name))
            {
                let why = format!("PostgreSQL {} rejects this value", new.major);
                comment_out(&mut f.lines, i, &why);
                report
                    .commented
                    .push(format!("{name} ({})", dirs.show(&f.new)));
                write_owned(&f.new, &f.lines, runner.owner(), f.mode, dirs)?;
                fixed = true;
                break;
            }
        }
        if !fixed {
            if let Some((path, line)) = find_outside(outside, &name) {
                return Err(outside_refusal(
                    &format!("PostgreSQL {} rejects the value of {name}", new.major),
                    path,
                    line,
                    &stderr,
                ));
            }
            return Err(crate::exec::process::failure(&new.postgres(), &args, &out));
        }
    }
    Err(Error::ConfigNotAccepted {
        confdir: dirs.new_conf.to_path_buf(),
    })
}
