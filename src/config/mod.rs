//! Carrying the old cluster's configuration into the new data directory.
//!
//! postgresql.conf, postgresql.auto.conf, pg_hba.conf, pg_ident.conf, included files that live
//! inside the old data or configuration directory, and SSL files are copied; for Debian, the
//! configuration directory `/etc/postgresql/N/NAME` goes to `/etc/postgresql/NEW/NAME` with
//! start.conf, pg_ctl.conf, environment and conf.d. Paths naming the old directories are
//! rewritten, and so is the major in postgresql-common's versioned values (external_pid_file,
//! cluster_name); settings the new server rejects are commented out with a note,
//! learning the valid set from the new server itself (`postgres --describe-config`, then
//! `postgres -C` until it accepts the files). The old files are only read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::exec::process::{Opts, Owner, Runner};
use crate::host::layout::Layout;
use crate::inspect::install::Install;

pub(crate) mod parse;

use self::parse::{Setting, parse_line, rejected_setting, rewrite_path, rewrite_version_word};

/// Files copied when present, relative to the configuration directory (the data directory
/// unless the layout keeps configuration elsewhere, as Debian does); `true`: holds settings.
const CONF_FILES: [(&str, bool); 3] = [
    ("postgresql.conf", true),
    ("pg_hba.conf", false),
    ("pg_ident.conf", false),
];

/// Files copied when present that always live in the data directory.
const DATA_FILES: [(&str, bool); 5] = [
    ("postgresql.auto.conf", true),
    ("server.crt", false),
    ("server.key", false),
    ("root.crt", false),
    ("root.crl", false),
];

/// Settings whose values name the cluster's major version outside any carried path:
/// postgresql-common's `external_pid_file = '/var/run/postgresql/15-main.pid'` and
/// `cluster_name = '15/main'` (`stats_temp_directory`, gone in 15, is commented out anyway).
const VERSIONED_SETTINGS: [&str; 3] = ["external_pid_file", "cluster_name", "stats_temp_directory"];

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
    /// The old file's permission bits.
    mode: Option<u32>,
}

/// The directories configuration is carried between. `old_conf` is where the old server
/// reads postgresql.conf: the data directory, or Debian's `/etc/postgresql/N/NAME`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dirs<'a> {
    pub(crate) old_data: &'a Path,
    pub(crate) old_conf: &'a Path,
    pub(crate) new_data: &'a Path,
    pub(crate) new_conf: &'a Path,
}

impl Dirs<'_> {
    /// The (old, new) directory pairs, the longer old path first so that a configuration
    /// directory inside the data directory maps by its own pair.
    fn pairs(&self) -> Vec<(&Path, &Path)> {
        let mut pairs = vec![
            (self.old_conf, self.new_conf),
            (self.old_data, self.new_data),
        ];
        pairs.sort_by_key(|(o, _)| std::cmp::Reverse(o.as_os_str().len()));
        pairs.dedup_by_key(|(o, _)| *o);
        pairs
    }

    /// Where a file of the old cluster goes; `None` for files outside both directories
    /// (shared with other clusters, like Debian's snakeoil certificate).
    pub(crate) fn map(&self, old: &Path) -> Option<PathBuf> {
        self.pairs()
            .into_iter()
            .find_map(|(o, n)| old.strip_prefix(o).ok().map(|rel| n.join(rel)))
    }

    fn separate(&self) -> bool {
        self.old_conf != self.old_data
    }

    /// A new path for messages: relative to the new data directory, or absolute.
    fn show(&self, new: &Path) -> String {
        display_rel(new, self.new_data)
    }

    /// Directories created for the new cluster: 0700 in the data directory (PostgreSQL
    /// insists), 0755 elsewhere like the rest of /etc.
    fn dir_mode(&self, dir: &Path) -> u32 {
        if dir.starts_with(self.new_data) {
            0o700
        } else {
            0o755
        }
    }
}

/// Copies and adapts the configuration; returns what it did.
pub(crate) fn carry(
    runner: &Runner,
    dirs: &Dirs<'_>,
    layout: &Layout,
    new: &Install,
    port: u16,
) -> Result<CarryReport> {
    let mut report = CarryReport::default();
    let old_major = match layout {
        Layout::Debian { version, .. } => Some(*version),
        _ => None,
    };
    let mut files: Vec<ConfFile> = Vec::new();
    let mut created_dirs: Vec<(PathBuf, PathBuf)> = Vec::new();
    // Popped from the end: settings files are read last, their includes after them.
    let mut queue: Vec<(PathBuf, bool)> = layout
        .extra_config_files()
        .iter()
        .map(|f| (dirs.old_conf.join(f), false))
        .collect();
    queue.extend(
        DATA_FILES
            .iter()
            .rev()
            .map(|(f, st)| (dirs.old_data.join(f), *st)),
    );
    queue.extend(
        CONF_FILES
            .iter()
            .rev()
            .map(|(f, st)| (dirs.old_conf.join(f), *st)),
    );
    let mut seen = BTreeSet::new();
    while let Some((old, settings)) = queue.pop() {
        if !seen.insert(old.clone()) || !old.is_file() {
            continue;
        }
        let Some(target) = dirs.map(&old) else {
            report.shared_outside.push(old);
            continue;
        };
        let is_conf = old.extension().is_some_and(|e| e == "conf");
        if is_conf {
            let text =
                std::fs::read_to_string(&old).map_err(|e| Error::io("cannot read", &old, e))?;
            let dir = old.parent().unwrap_or(dirs.old_conf);
            let mut lines = Vec::new();
            for line in text.lines() {
                let setting = parse_line(line).filter(|_| settings);
                if let Some(s) = &setting {
                    let includes = matches!(
                        s.name.as_str(),
                        "include" | "include_if_exists" | "include_dir"
                    );
                    for referenced in referenced_files(s, dir, dirs.old_data) {
                        queue.push((referenced, includes));
                    }
                    if s.name == "include_dir" {
                        // An empty include directory must exist too (Debian's conf.d).
                        let d = resolve_in(&s.value, dir);
                        if let (true, Some(n)) = (d.is_dir(), dirs.map(&d)) {
                            created_dirs.push((d, n));
                        }
                    }
                }
                let mut rewritten = line.to_string();
                for (o, n) in dirs.pairs() {
                    rewritten = rewrite_path(
                        &rewritten,
                        &o.display().to_string(),
                        &n.display().to_string(),
                    );
                }
                if let (Some(s), Some(om)) = (&setting, old_major) {
                    if VERSIONED_SETTINGS.contains(&s.name.as_str()) {
                        rewritten = rewrite_version_word(&rewritten, om, new.major);
                    }
                }
                if rewritten != line {
                    report
                        .rewritten
                        .push(format!("{}: {}", dirs.show(&target), rewritten.trim()));
                }
                lines.push(rewritten);
            }
            files.push(ConfFile {
                new: target.clone(),
                lines,
                settings,
                mode: file_mode(&old),
            });
        } else {
            copy_owned(&old, &target, runner.owner(), dirs)?;
        }
        report.copied.push(PathBuf::from(dirs.show(&target)));
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
                    report
                        .commented
                        .push(format!("{} ({})", s.name, dirs.show(&f.new)));
                }
            }
        }
    }
    set_port(
        &mut files,
        &dirs.new_conf.join("postgresql.conf"),
        &dirs.new_data.join("postgresql.auto.conf"),
        port,
    );
    for (old, new_dir) in &created_dirs {
        create_dirs_owned(new_dir, runner.owner(), dirs)?;
        set_mode(new_dir, file_mode(old).unwrap_or(dirs.dir_mode(new_dir)))?;
    }
    for f in &files {
        write_owned(&f.new, &f.lines, runner.owner(), f.mode, dirs)?;
    }
    if dirs.separate() {
        remove_initdb_config(dirs)?;
    }
    validate(runner, new, dirs, &mut files, &mut report)?;
    Ok(report)
}

/// With the configuration kept outside the data directory (Debian), initdb's own
/// postgresql.conf, pg_hba.conf and pg_ident.conf in the new data directory would only
/// mislead: the old data directory has none, and neither will the new one.
fn remove_initdb_config(dirs: &Dirs<'_>) -> Result<()> {
    for (f, _) in CONF_FILES {
        let stale = dirs.new_data.join(f);
        if !dirs.old_data.join(f).exists() && stale.is_file() {
            std::fs::remove_file(&stale).map_err(|e| Error::io("cannot remove", &stale, e))?;
        }
    }
    Ok(())
}

fn file_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

fn resolve_in(value: &str, base: &Path) -> PathBuf {
    let p = Path::new(value);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
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
/// appends one to postgresql.conf (`main`). postgresql.auto.conf (`auto`) is read last and
/// wins; then postgresql.conf.
fn set_port(files: &mut [ConfFile], main: &Path, auto: &Path, port: u16) {
    for path in [auto, main] {
        if let Some(f) = files.iter_mut().find(|f| f.new == path) {
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
    Err(Error::Other(
        "the carried configuration still fails validation after 50 fixes".into(),
    ))
}

/// Writes a carried file owned by the cluster owner, with the old file's mode (0600 when
/// unknown): Debian's postgresql.conf stays world-readable for pg_lsclusters.
fn write_owned(
    path: &Path,
    lines: &[String],
    owner: &Owner,
    mode: Option<u32>,
    dirs: &Dirs<'_>,
) -> Result<()> {
    if let Some(parent) = path.parent() {
        create_dirs_owned(parent, owner, dirs)?;
    }
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).map_err(|e| Error::io("cannot write", path, e))?;
    set_mode(path, mode.unwrap_or(0o600))?;
    crate::exec::server::chown(path, owner)
}

fn copy_owned(from: &Path, to: &Path, owner: &Owner, dirs: &Dirs<'_>) -> Result<()> {
    if let Some(parent) = to.parent() {
        create_dirs_owned(parent, owner, dirs)?;
    }
    std::fs::copy(from, to).map_err(|e| Error::io("cannot copy", from, e))?;
    crate::exec::server::chown(to, owner)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("cannot chmod", path, e))
}

fn create_dirs_owned(dir: &Path, owner: &Owner, dirs: &Dirs<'_>) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs_owned(parent, owner, dirs)?;
    }
    std::fs::create_dir(dir).map_err(|e| Error::io("cannot create directory", dir, e))?;
    set_mode(dir, dirs.dir_mode(dir))?;
    crate::exec::server::chown(dir, owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_replaces_the_definition_in_effect() {
        let dir = Path::new("/n");
        let (main, auto) = (
            dir.join("postgresql.conf"),
            dir.join("postgresql.auto.conf"),
        );
        let mut files = vec![
            ConfFile {
                new: main.clone(),
                lines: vec!["port = 5432".into(), "x = 1".into()],
                settings: true,
                mode: None,
            },
            ConfFile {
                new: auto.clone(),
                lines: vec!["port = 5440".into()],
                settings: true,
                mode: None,
            },
        ];
        set_port(&mut files, &main, &auto, 5433);
        assert_eq!(files[0].lines[0], "port = 5432");
        assert!(files[1].lines[0].starts_with("port = 5433\t# pgleap: was port = 5440"));
        let mut files = vec![ConfFile {
            new: main.clone(),
            lines: vec!["#port = 5432".into()],
            settings: true,
            mode: None,
        }];
        set_port(&mut files, &main, &auto, 5433);
        assert_eq!(files[0].lines.last().unwrap(), "port = 5433\t# pgleap");
    }

    #[test]
    fn debian_port_goes_to_the_configuration_directory() {
        // Debian: postgresql.conf in /etc, postgresql.auto.conf in the data directory.
        let main = Path::new("/etc/postgresql/17/main/postgresql.conf");
        let auto = Path::new("/var/lib/postgresql/17/main/postgresql.auto.conf");
        let mut files = vec![ConfFile {
            new: main.to_path_buf(),
            lines: vec!["port = 5432\t\t\t\t# (change requires restart)".into()],
            settings: true,
            mode: Some(0o644),
        }];
        set_port(&mut files, main, auto, 5432);
        assert_eq!(
            files[0].lines[0],
            "port = 5432\t\t\t\t# (change requires restart)"
        );
    }

    #[test]
    fn dirs_map_configuration_and_data_separately() {
        let dirs = Dirs {
            old_data: Path::new("/var/lib/postgresql/15/main"),
            old_conf: Path::new("/etc/postgresql/15/main"),
            new_data: Path::new("/var/lib/postgresql/17/main"),
            new_conf: Path::new("/etc/postgresql/17/main"),
        };
        assert_eq!(
            dirs.map(Path::new("/etc/postgresql/15/main/conf.d/a.conf")),
            Some(PathBuf::from("/etc/postgresql/17/main/conf.d/a.conf"))
        );
        assert_eq!(
            dirs.map(Path::new(
                "/var/lib/postgresql/15/main/postgresql.auto.conf"
            )),
            Some(PathBuf::from(
                "/var/lib/postgresql/17/main/postgresql.auto.conf"
            ))
        );
        assert_eq!(dirs.map(Path::new("/etc/ssl/certs/snakeoil.pem")), None);
        assert_eq!(
            dirs.dir_mode(Path::new("/etc/postgresql/17/main/conf.d")),
            0o755
        );
        assert_eq!(
            dirs.dir_mode(Path::new("/var/lib/postgresql/17/main/x")),
            0o700
        );
        // A configuration directory inside the data directory maps by its own pair.
        let nested = Dirs {
            old_data: Path::new("/d/15"),
            old_conf: Path::new("/d/15/etc"),
            new_data: Path::new("/d/17"),
            new_conf: Path::new("/e/17"),
        };
        assert_eq!(
            nested.map(Path::new("/d/15/etc/postgresql.conf")),
            Some(PathBuf::from("/e/17/postgresql.conf"))
        );
    }
}
