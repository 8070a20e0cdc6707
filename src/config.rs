//! Carrying the old cluster's configuration into the new data directory.
//!
//! postgresql.conf, postgresql.auto.conf, pg_hba.conf, pg_ident.conf, included files that live
//! inside the old data directory, and SSL files are copied; paths naming the old data
//! directory are rewritten; settings the new server rejects are commented out with a note,
//! learning the valid set from the new server itself (`postgres --describe-config`, then
//! `postgres -C` until it accepts the files). The old files are only read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::install::Install;
use crate::process::{Opts, Owner, Runner};

/// Files copied when present, relative to the data directory.
const FIXED_FILES: [&str; 8] = [
    "postgresql.conf",
    "postgresql.auto.conf",
    "pg_hba.conf",
    "pg_ident.conf",
    "server.crt",
    "server.key",
    "root.crt",
    "root.crl",
];

/// Settings whose relative values name files in the data directory.
const FILE_SETTINGS: [&str; 6] = [
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_ca_file",
    "ssl_crl_file",
    "ssl_crl_dir",
    "ssl_dh_params_file",
];

#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct CarryReport {
    pub(crate) copied: Vec<PathBuf>,
    pub(crate) rewritten: Vec<String>,
    pub(crate) commented: Vec<String>,
    pub(crate) shared_outside: Vec<PathBuf>,
}

/// One `name = value` line of a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Setting {
    pub(crate) name: String,
    pub(crate) value: String,
}

/// Parses a configuration line; `None` for blanks, comments and malformed lines.
pub(crate) fn parse_line(line: &str) -> Option<Setting> {
    let t = line.trim_start();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    let end = t.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))?;
    let (name, rest) = t.split_at(end);
    if name.is_empty() {
        return None;
    }
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    Some(Setting {
        name: name.to_ascii_lowercase(),
        value: unquote(strip_comment(rest)),
    })
}

/// Drops a trailing `# comment` that is not inside quotes.
fn strip_comment(s: &str) -> &str {
    let mut in_quote = false;
    for (i, c) in s.char_indices() {
        match c {
            '\'' => in_quote = !in_quote,
            '#' if !in_quote => return s[..i].trim_end(),
            _ => {}
        }
    }
    s.trim_end()
}

fn unquote(s: &str) -> String {
    match s.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        Some(inner) => inner.replace("''", "'").replace("\\'", "'"),
        None => s.to_string(),
    }
}

/// Replaces `old` with `new` where it appears as a whole path (followed by `/`, a quote,
/// whitespace or the end), so `/data/15` does not touch `/data/150`.
pub(crate) fn rewrite_path(line: &str, old: &str, new: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find(old) {
        let after = &rest[i + old.len()..];
        let boundary = after
            .chars()
            .next()
            .is_none_or(|c| matches!(c, '/' | '\'' | '"' | ' ' | '\t' | '#' | ','));
        out.push_str(&rest[..i]);
        out.push_str(if boundary { new } else { old });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Comments out line `idx` with a note saying why.
fn comment_out(lines: &mut [String], idx: usize, why: &str) {
    lines[idx] = format!("#{}\t# pgleap: {why}", lines[idx]);
}

/// A file being carried: its old location, new location, and lines.
struct ConfFile {
    new: PathBuf,
    lines: Vec<String>,
    /// postgresql.conf and its includes hold settings; pg_hba.conf and pg_ident.conf do not.
    settings: bool,
}

/// Copies and adapts the configuration; returns what it did.
pub(crate) fn carry(
    runner: &Runner,
    old_datadir: &Path,
    new_datadir: &Path,
    new: &Install,
    port: u16,
) -> Result<CarryReport> {
    let mut report = CarryReport::default();
    let old_s = old_datadir.display().to_string();
    let new_s = new_datadir.display().to_string();
    let mut files: Vec<ConfFile> = Vec::new();
    let mut queue: Vec<(PathBuf, bool)> = FIXED_FILES
        .iter()
        .map(|f| (old_datadir.join(f), f.starts_with("postgresql")))
        .collect();
    let mut seen = BTreeSet::new();
    while let Some((old, settings)) = queue.pop() {
        if !seen.insert(old.clone()) || !old.is_file() {
            continue;
        }
        let Ok(rel) = old.strip_prefix(old_datadir) else {
            report.shared_outside.push(old);
            continue;
        };
        let target = new_datadir.join(rel);
        let is_conf = old.extension().is_some_and(|e| e == "conf");
        if is_conf {
            let text =
                std::fs::read_to_string(&old).map_err(|e| Error::io("cannot read", &old, e))?;
            let dir = old.parent().unwrap_or(old_datadir);
            let mut lines = Vec::new();
            for line in text.lines() {
                if let Some(s) = parse_line(line).filter(|_| settings) {
                    let includes = matches!(
                        s.name.as_str(),
                        "include" | "include_if_exists" | "include_dir"
                    );
                    for referenced in referenced_files(&s, dir, old_datadir) {
                        queue.push((referenced, includes));
                    }
                }
                let rewritten = rewrite_path(line, &old_s, &new_s);
                if rewritten != line {
                    report
                        .rewritten
                        .push(format!("{}: {}", rel.display(), rewritten.trim()));
                }
                lines.push(rewritten);
            }
            files.push(ConfFile {
                new: target,
                lines,
                settings,
            });
        } else {
            copy_owned(&old, &target, runner.owner())?;
        }
        report.copied.push(rel.to_path_buf());
    }
    let valid = valid_settings(runner, new)?;
    for f in files.iter_mut().filter(|f| f.settings) {
        for i in 0..f.lines.len() {
            if let Some(s) = parse_line(&f.lines[i]) {
                let custom = s.name.contains('.');
                let directive = matches!(
                    s.name.as_str(),
                    "include" | "include_if_exists" | "include_dir"
                );
                if !custom && !directive && !valid.contains(&s.name) {
                    comment_out(
                        &mut f.lines,
                        i,
                        &format!("PostgreSQL {} has no setting {}", new.major, s.name),
                    );
                    report.commented.push(format!(
                        "{} ({})",
                        s.name,
                        display_rel(&f.new, new_datadir)
                    ));
                }
            }
        }
    }
    set_port(&mut files, new_datadir, port);
    for f in &files {
        write_owned(&f.new, &f.lines, runner.owner())?;
    }
    validate(runner, new, new_datadir, &mut files, &mut report)?;
    Ok(report)
}

fn display_rel(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Files a setting points at that live in the old data directory and must come along.
fn referenced_files(s: &Setting, conf_dir: &Path, old_datadir: &Path) -> Vec<PathBuf> {
    let resolve = |v: &str, base: &Path| {
        let p = Path::new(v);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    match s.name.as_str() {
        "include" | "include_if_exists" => vec![resolve(&s.value, conf_dir)],
        "include_dir" => {
            let dir = resolve(&s.value, conf_dir);
            let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map(|rd| {
                    rd.filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
                        .collect()
                })
                .unwrap_or_default();
            out.sort();
            out
        }
        "hba_file" | "ident_file" => vec![resolve(&s.value, old_datadir)],
        n if FILE_SETTINGS.contains(&n) && !s.value.is_empty() => {
            vec![resolve(&s.value, old_datadir)]
        }
        _ => Vec::new(),
    }
}

/// Makes the new cluster listen on `port`: rewrites the last `port` line in effect, or
/// appends one to postgresql.conf.
fn set_port(files: &mut [ConfFile], new_datadir: &Path, port: u16) {
    let main = new_datadir.join("postgresql.conf");
    let auto = new_datadir.join("postgresql.auto.conf");
    // postgresql.auto.conf is read last and wins; then postgresql.conf.
    for path in [&auto, &main] {
        if let Some(f) = files.iter_mut().find(|f| &f.new == path) {
            if let Some(i) = f
                .lines
                .iter()
                .rposition(|l| parse_line(l).is_some_and(|s| s.name == "port"))
            {
                if parse_line(&f.lines[i]).is_some_and(|s| s.value == port.to_string()) {
                    return;
                }
                f.lines[i] = format!("port = {port}\t# pgleap: was {}", f.lines[i].trim());
                return;
            }
        }
    }
    if let Some(f) = files.iter_mut().find(|f| f.new == main) {
        f.lines.push(format!("port = {port}\t# pgleap"));
    }
}

/// The setting names the new server knows, from the server itself.
fn valid_settings(runner: &Runner, new: &Install) -> Result<BTreeSet<String>> {
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
fn validate(
    runner: &Runner,
    new: &Install,
    new_datadir: &Path,
    files: &mut [ConfFile],
    report: &mut CarryReport,
) -> Result<()> {
    let args = [
        "-D".to_string(),
        new_datadir.display().to_string(),
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
            return Err(crate::process::failure(&new.postgres(), &args, &out));
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
                    .push(format!("{name} ({})", display_rel(&f.new, new_datadir)));
                write_owned(&f.new, &f.lines, runner.owner())?;
                fixed = true;
                break;
            }
        }
        if !fixed {
            return Err(crate::process::failure(&new.postgres(), &args, &out));
        }
    }
    Err(Error::Other(
        "the carried configuration still fails validation after 50 fixes".into(),
    ))
}

/// The parameter named by the server's complaint about a configuration file.
pub(crate) fn rejected_setting(stderr: &str) -> Option<String> {
    for line in stderr.lines() {
        for marker in [
            "invalid value for parameter \"",
            "unrecognized configuration parameter \"",
            "parameter \"",
        ] {
            if let Some(rest) = line.split(marker).nth(1) {
                if let Some(name) = rest.split('"').next() {
                    return Some(name.to_ascii_lowercase());
                }
            }
        }
    }
    None
}

fn write_owned(path: &Path, lines: &[String], owner: &Owner) -> Result<()> {
    if let Some(parent) = path.parent() {
        create_dirs_owned(parent, owner)?;
    }
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).map_err(|e| Error::io("cannot write", path, e))?;
    set_mode(path, 0o600)?;
    crate::server::chown(path, owner)
}

fn copy_owned(from: &Path, to: &Path, owner: &Owner) -> Result<()> {
    if let Some(parent) = to.parent() {
        create_dirs_owned(parent, owner)?;
    }
    std::fs::copy(from, to).map_err(|e| Error::io("cannot copy", from, e))?;
    crate::server::chown(to, owner)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("cannot chmod", path, e))
}

fn create_dirs_owned(dir: &Path, owner: &Owner) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs_owned(parent, owner)?;
    }
    std::fs::create_dir(dir).map_err(|e| Error::io("cannot create directory", dir, e))?;
    set_mode(dir, 0o700)?;
    crate::server::chown(dir, owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_settings_like_the_server() {
        assert_eq!(
            parse_line("shared_buffers = 128MB  # comment"),
            Some(Setting {
                name: "shared_buffers".into(),
                value: "128MB".into()
            })
        );
        assert_eq!(
            parse_line("  Port 5433"),
            Some(Setting {
                name: "port".into(),
                value: "5433".into()
            })
        );
        assert_eq!(
            parse_line("log_line_prefix = '%m # [%p] '"),
            Some(Setting {
                name: "log_line_prefix".into(),
                value: "%m # [%p] ".into()
            })
        );
        assert_eq!(
            parse_line("include_dir 'conf.d'"),
            Some(Setting {
                name: "include_dir".into(),
                value: "conf.d".into()
            })
        );
        assert_eq!(
            parse_line("pg_stat_statements.max=500"),
            Some(Setting {
                name: "pg_stat_statements.max".into(),
                value: "500".into()
            })
        );
        assert_eq!(parse_line("#port = 5432"), None);
        assert_eq!(parse_line("   "), None);
    }

    #[test]
    fn rewrites_only_whole_paths() {
        assert_eq!(
            rewrite_path("data_directory = '/data/15'", "/data/15", "/data/17"),
            "data_directory = '/data/17'"
        );
        assert_eq!(
            rewrite_path("include '/data/15/extra.conf'", "/data/15", "/data/17"),
            "include '/data/17/extra.conf'"
        );
        assert_eq!(
            rewrite_path(
                "archive_command = 'cp %p /data/150/%f'",
                "/data/15",
                "/data/17"
            ),
            "archive_command = 'cp %p /data/150/%f'"
        );
    }

    #[test]
    fn finds_the_rejected_setting_in_server_messages() {
        let unknown = "LOG:  unrecognized configuration parameter \"vacuum_defer_cleanup_age\" in file \"/d/postgresql.conf\" line 3\nFATAL:  configuration file \"/d/postgresql.conf\" contains errors";
        assert_eq!(
            rejected_setting(unknown).as_deref(),
            Some("vacuum_defer_cleanup_age")
        );
        let bad = "LOG:  invalid value for parameter \"wal_level\": \"archive\"\nHINT:  Available values: minimal, replica, logical.";
        assert_eq!(rejected_setting(bad).as_deref(), Some("wal_level"));
        assert_eq!(rejected_setting("FATAL:  could not access directory"), None);
    }

    #[test]
    fn port_replaces_the_definition_in_effect() {
        let dir = Path::new("/n");
        let mut files = vec![
            ConfFile {
                new: dir.join("postgresql.conf"),
                lines: vec!["port = 5432".into(), "x = 1".into()],
                settings: true,
            },
            ConfFile {
                new: dir.join("postgresql.auto.conf"),
                lines: vec!["port = 5440".into()],
                settings: true,
            },
        ];
        set_port(&mut files, dir, 5433);
        assert_eq!(files[0].lines[0], "port = 5432");
        assert!(files[1].lines[0].starts_with("port = 5433\t# pgleap: was port = 5440"));
        let mut files = vec![ConfFile {
            new: dir.join("postgresql.conf"),
            lines: vec!["#port = 5432".into()],
            settings: true,
        }];
        set_port(&mut files, dir, 5433);
        assert_eq!(files[0].lines.last().unwrap(), "port = 5433\t# pgleap");
    }
}
