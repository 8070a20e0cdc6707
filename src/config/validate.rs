//! Validating the carried configuration with the new server itself: the setting names it
//! knows (`postgres --describe-config`), then `postgres -C` until it accepts the files,
//! commenting out each setting it rejects with a note.

use std::collections::BTreeSet;

use crate::config::files::{ConfFile, Dirs, comment_out, write_owned};
use crate::config::parse::{parse_line, rejected_setting};
use crate::error::{Error, Result};
use crate::exec::process::{Opts, Runner};
use crate::inspect::install::Install;

use crate::config::CarryReport;

/// The setting names the new server knows, from the server itself.
pub(crate) fn valid_settings(runner: &Runner, new: &Install) -> Result<BTreeSet<String>> {
    let out = runner.run(
        &new.postgres(),
        &["--describe-config"],
        &Opts {
            log_name: Some("describe-config"),
            ..Opts::default()
        },
    )?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split('\t').next())
        .filter(|n| !n.is_empty())
        .map(str::to_ascii_lowercase)
        .collect())
}

/// Asks the new server to load the carried files; comments out each setting it rejects
/// (by the name in its message) and asks again.
pub(crate) fn validate(
    runner: &Runner,
    new: &Install,
    dirs: &Dirs<'_>,
    files: &mut [ConfFile],
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
            return Err(crate::exec::process::failure(&new.postgres(), &args, &out));
        }
    }
    Err(Error::ConfigNotAccepted {
        confdir: dirs.new_conf.to_path_buf(),
    })
}
