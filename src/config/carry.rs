//! Copying and adapting the old cluster's configuration files into the new cluster.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::config::CarryReport;
use crate::config::files::{
    ConfFile, Dirs, carry_other, comment_out, create_dirs_owned, file_mode, read_as_owner,
    set_mode, write_owned,
};
use crate::config::outside::{read_outside, refuse_unknown_outside};
use crate::config::parse::{Setting, is_directive, parse_line, rewrite_path, rewrite_version_word};
use crate::config::validate::{valid_settings, validate};
use crate::error::Result;
use crate::exec::process::{Owner, Runner};
use crate::host::layout::Layout;
use crate::inspect::install::Install;

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

/// Copies and adapts the configuration; returns what it did.
pub(crate) fn carry(
    runner: &Runner,
    dirs: &Dirs<'_>,
    layout: &Layout,
    new: &Install,
    port: u16,
    command_line: &[(String, String)],
) -> Result<CarryReport> {
    let mut report = CarryReport::default();
    let versions = layout.settings_major().map(|v| (v, new.major));
    let mut files: Vec<ConfFile> = Vec::new();
    let mut found = Found {
        queue: first_files(layout, dirs),
        created_dirs: Vec::new(),
    };
    let mut seen = BTreeSet::new();
    let mut outside: Vec<(PathBuf, Vec<String>)> = Vec::new();
    while let Some((old, settings)) = found.queue.pop() {
        if !seen.insert(old.clone()) || !old.is_file() {
            continue;
        }
        let Some(target) = dirs.map(&old) else {
            if settings {
                outside.push(read_outside(&old)?);
            }
            report.shared_outside.push(old);
            continue;
        };
        if old.extension().is_some_and(|e| e == "conf") {
            let text = read_as_owner(&old, runner.owner())?;
            let file = rewrite_conf(
                (&old, &text),
                &target,
                settings,
                dirs,
                versions,
                &mut found,
                &mut report,
            );
            files.push(file);
        } else {
            carry_other(&old, &target, runner.owner(), dirs)?;
        }
        report.copied.push(PathBuf::from(dirs.show(&target)));
    }
    let auto = dirs.new_data.join("postgresql.auto.conf");
    report.command_line = carry_command_line(&mut files, &auto, command_line);
    let valid = valid_settings(runner, new, dirs.new_data, setting_names(&files, &outside))?;
    refuse_unknown_outside(&outside, &valid, new.major)?;
    comment_unknown(&mut files, &valid, new.major, dirs, &mut report);
    set_port(
        &mut files,
        &dirs.new_conf.join("postgresql.conf"),
        &dirs.new_data.join("postgresql.auto.conf"),
        port,
    );
    for (old, new_dir) in &found.created_dirs {
        create_dirs_owned(new_dir, runner.owner(), dirs)?;
        set_mode(
            new_dir,
            file_mode(old).unwrap_or(dirs.dir_mode(new_dir)),
            runner.owner(),
        )?;
    }
    for f in &files {
        write_owned(&f.new, &f.lines, runner.owner(), f.mode, dirs)?;
    }
    if dirs.separate() {
        remove_initdb_config(dirs, runner.owner())?;
    }
    validate(runner, new, dirs, &mut files, &outside, &mut report)?;
    Ok(report)
}

/// The setting names the carried files and the settings files outside set.
fn setting_names(files: &[ConfFile], outside: &[(PathBuf, Vec<String>)]) -> BTreeSet<String> {
    files
        .iter()
        .filter(|f| f.settings)
        .map(|f| &f.lines)
        .chain(outside.iter().map(|(_, lines)| lines))
        .flat_map(|lines| lines.iter().filter_map(|l| parse_line(l)))
        .map(|s| s.name)
        .collect()
}

/// What reading the files discovers: files still to read (`true`: they hold settings),
/// popped from the end, and include directories to create (old, new).
struct Found {
    queue: Vec<(PathBuf, bool)>,
    created_dirs: Vec<(PathBuf, PathBuf)>,
}

/// The files every cluster may have, in the order they are read: settings files last,
/// their includes after them.
fn first_files(layout: &Layout, dirs: &Dirs<'_>) -> Vec<(PathBuf, bool)> {
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
    queue
}

/// One `.conf` file read and rewritten for the new cluster: paths naming the old
/// directories, and (`versions`: old and new major of a postgresql-common cluster) the
/// major in versioned settings. Files it includes or names are queued in `found`.
fn rewrite_conf(
    (old, text): (&Path, &str),
    target: &Path,
    settings: bool,
    dirs: &Dirs<'_>,
    versions: Option<(u32, u32)>,
    found: &mut Found,
    report: &mut CarryReport,
) -> ConfFile {
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
                found.queue.push((referenced, includes));
            }
            include_dir_kept(s, dir, dirs, found);
        }
        // pg_hba.conf and pg_ident.conf: the files their lines include or list (`@file`).
        for s in crate::config::hba::references(line)
            .iter()
            .filter(|_| !settings)
        {
            for referenced in referenced_files(s, dir, dirs.old_data) {
                found.queue.push((referenced, false));
            }
            include_dir_kept(s, dir, dirs, found);
        }
        let mut rewritten = line.to_string();
        for (o, n) in dirs.pairs() {
            rewritten = rewrite_path(
                &rewritten,
                &o.display().to_string(),
                &n.display().to_string(),
            );
        }
        if let (Some(s), Some((om, nm))) = (&setting, versions) {
            if VERSIONED_SETTINGS.contains(&s.name.as_str()) {
                rewritten = rewrite_version_word(&rewritten, om, nm);
            }
        }
        if rewritten != line {
            report
                .rewritten
                .push(format!("{}: {}", dirs.show(target), rewritten.trim()));
        }
        lines.push(rewritten);
    }
    ConfFile {
        new: target.to_path_buf(),
        lines,
        settings,
        mode: file_mode(old),
    }
}

/// An include directory, even empty, exists in the new cluster too (Debian's conf.d).
fn include_dir_kept(s: &Setting, dir: &Path, dirs: &Dirs<'_>, found: &mut Found) {
    if s.name == "include_dir" {
        let d = resolve_in(&s.value, dir);
        if let (true, Some(n)) = (d.is_dir(), dirs.map(&d)) {
            found.created_dirs.push((d, n));
        }
    }
}

/// Comments out settings the new major does not know (custom `x.y` settings and include
/// directives are kept).
fn comment_unknown(
    files: &mut [ConfFile],
    valid: &BTreeSet<String>,
    new_major: u32,
    dirs: &Dirs<'_>,
    report: &mut CarryReport,
) {
    for f in files.iter_mut().filter(|f| f.settings) {
        for i in 0..f.lines.len() {
            if let Some(s) = parse_line(&f.lines[i]) {
                let custom = s.name.contains('.');
                if !custom && !is_directive(&s.name) && !valid.contains(&s.name) {
                    comment_out(
                        &mut f.lines,
                        i,
                        &format!("PostgreSQL {new_major} has no setting {}", s.name),
                    );
                    report
                        .commented
                        .push(format!("{} ({})", s.name, dirs.show(&f.new)));
                }
            }
        }
    }
}

/// With the configuration kept outside the data directory (Debian), initdb's own
/// postgresql.conf, pg_hba.conf and pg_ident.conf in the new data directory would only
/// mislead: the old data directory has none, and neither will the new one.
fn remove_initdb_config(dirs: &Dirs<'_>, owner: &Owner) -> Result<()> {
    for (f, _) in CONF_FILES {
        let stale = dirs.new_data.join(f);
        if !dirs.old_data.join(f).exists() && stale.is_file() {
            crate::exec::ownerfs::remove_file_as(owner, &stale)?;
        }
    }
    Ok(())
}

fn resolve_in(value: &str, base: &Path) -> PathBuf {
    let p = Path::new(value);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    // `hba.d/../x.conf` is `x.conf` (lexically: the files carried are mapped by prefix).
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// Files a setting points at that live in the old data directory and must come along.
fn referenced_files(s: &Setting, conf_dir: &Path, old_datadir: &Path) -> Vec<PathBuf> {
    let resolve = resolve_in;
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
/// Appends the settings the old server got on its command line to the new
/// postgresql.auto.conf, which like the command line wins over postgresql.conf: the new server
/// then runs as the old one did. Returns them as `name = value`.
fn carry_command_line(
    files: &mut Vec<ConfFile>,
    auto: &Path,
    settings: &[(String, String)],
) -> Vec<String> {
    if settings.is_empty() {
        return Vec::new();
    }
    if !files.iter().any(|f| f.new == auto) {
        files.push(ConfFile {
            new: auto.to_path_buf(),
            lines: Vec::new(),
            settings: true,
            mode: None,
        });
    }
    let Some(f) = files.iter_mut().find(|f| f.new == auto) else {
        return Vec::new();
    };
    f.lines.push(
        "# pgleap: from the old server's command line (postmaster.opts), which overrode the configuration files"
            .into(),
    );
    settings
        .iter()
        .map(|(name, value)| {
            let line = format!("{name} = '{}'", value.replace('\'', "''"));
            f.lines.push(line.clone());
            line
        })
        .collect()
}

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
}
