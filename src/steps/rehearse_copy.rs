//! A rehearsal's scratch area and the copy of the old cluster in it.
//!
//! The scratch area (default: `.pgleap-rehearse-<name>` beside the old data directory) is
//! created for the cluster's owner and everything in it is written by the owner: the copy,
//! its tablespaces (`tblspc/<oid>`, linked from the copy's `pg_tblspc`), the upgraded copy,
//! logs and the journal of the upgrade run on it. A `rehearsal.json` in it is the proof
//! that a later rehearsal may remove what an interrupted one left.
//!
//! Invariant: the old cluster is only read. A running server is copied with pg_basebackup
//! or between pg_backup_start and pg_backup_stop; a stopped one file by file. The copy holds
//! no link back into the old cluster, and its configuration stops it from archiving WAL or
//! writing the old server's external pid file.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Finding, Result};
use crate::exec::copytree::{Copied, Part};
use crate::exec::ownerfs;
use crate::exec::postmaster::Liveness;
use crate::exec::process::{Opts, Owner};
use crate::inspect::backup::Copy;
use crate::inspect::db;
use crate::inspect::space;
use crate::plan::prepare::Prepared;

/// The file that marks a directory as a rehearsal's scratch area.
const MARKER: &str = "rehearsal.json";

/// How the copy is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Method {
    /// Running server, scratch on the data directory's reflink-capable filesystem.
    ReflinkBackup,
    /// Running server: `pg_basebackup -X stream -c fast` over the owner's socket.
    BaseBackup,
    /// Stopped server: file by file, reflinks where possible.
    FileCopy,
}

impl Method {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Method::ReflinkBackup => {
                "reflinked files between pg_backup_start and pg_backup_stop (the server keeps serving)"
            }
            Method::BaseBackup => "pg_basebackup -X stream -c fast (the server keeps serving)",
            Method::FileCopy => "file copy of the stopped cluster (reflinks where possible)",
        }
    }
}

/// The scratch area; removed (servers in it stopped first) when dropped unless kept.
#[derive(Debug)]
pub(crate) struct Scratch {
    pub(crate) dir: PathBuf,
    owner: Owner,
    pub(crate) keep: bool,
}

impl Scratch {
    pub(crate) fn old(&self) -> PathBuf {
        self.dir.join("old")
    }
    pub(crate) fn new_datadir(&self) -> PathBuf {
        self.dir.join("new")
    }
    pub(crate) fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
    fn tablespace(&self, oid: &str) -> PathBuf {
        self.dir.join("tblspc").join(oid)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        stop_servers(&self.dir, &self.owner);
        if !self.keep {
            if let Err(e) = ownerfs::remove_tree_where(&self.owner, &self.dir) {
                tracing::warn!("could not remove {}: {e}", self.dir.display());
            }
        }
    }
}

fn stop_servers(dir: &Path, owner: &Owner) {
    for d in ["old", "new"] {
        crate::exec::server::stop_any(&dir.join(d), owner, true);
    }
}

/// The default scratch area: beside the old data directory, on its filesystem (where
/// reflinks can make the copy nearly free), never inside it.
pub(crate) fn default_scratch(old_datadir: &Path) -> PathBuf {
    let name = old_datadir
        .file_name()
        .map_or_else(|| "cluster".into(), |n| n.to_string_lossy().into_owned());
    old_datadir
        .parent()
        .unwrap_or(Path::new("/"))
        .join(format!(".pgleap-rehearse-{name}"))
}

/// Removes what an earlier rehearsal left in `dir` (only a directory holding its marker);
/// refuses a directory that is not a rehearsal's. Returns a note when something was removed.
pub(crate) fn clean_leftovers(dir: &Path, owner: &Owner) -> Result<Option<String>> {
    if std::fs::symlink_metadata(dir).is_err() {
        return Ok(None);
    }
    if std::fs::symlink_metadata(dir.join(MARKER)).is_err() {
        return Err(Error::Refused {
            findings: vec![Finding::error(
                "rehearse-scratch-exists",
                format!(
                    "{} exists and is not a rehearsal's scratch area (it has no {MARKER})",
                    dir.display()
                ),
                "Remove it, or pass --scratch with a directory that does not exist yet",
            )],
        });
    }
    stop_servers(dir, owner);
    ownerfs::remove_tree_where(owner, dir)?;
    Ok(Some(format!(
        "removed what an earlier rehearsal left in {}",
        dir.display()
    )))
}

/// Bytes the copy takes on the scratch filesystem. With `reflinks`, files on the scratch
/// area's own filesystem share their extents and cost nothing; the others (a tablespace or
/// WAL directory on another filesystem) are copied.
pub(crate) fn copy_bytes(p: &Prepared, scratch_device: u64, reflinks: bool) -> u64 {
    let cost = |dir: &Path| {
        if reflinks && space::device_of(dir) == scratch_device {
            0
        } else {
            space::dir_bytes(dir)
        }
    };
    let mut bytes = cost(&p.plan.old.datadir);
    if let Some(w) = &p.plan.old.waldir {
        bytes += cost(w);
    }
    for (_, dir) in version_dirs(p) {
        bytes += cost(&dir);
    }
    bytes
}

/// Each tablespace's oid and its directory of the old major (`PG_<major>_<catversion>`).
fn version_dirs(p: &Prepared) -> Vec<(String, PathBuf)> {
    let prefix = format!("PG_{}_", p.plan.old.major);
    p.cluster
        .tablespaces
        .iter()
        .filter_map(|t| {
            let rd = std::fs::read_dir(&t.location).ok()?;
            let dir = rd
                .filter_map(std::result::Result::ok)
                .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))?;
            Some((t.oid.clone(), dir.path()))
        })
        .collect()
}

/// Creates the scratch area with its marker.
pub(crate) fn create(dir: &Path, p: &Prepared, keep: bool) -> Result<Scratch> {
    let owner = p.runner.owner().clone();
    crate::steps::create_owned_dir(dir, &owner)?;
    let scratch = Scratch {
        dir: dir.to_path_buf(),
        owner: owner.clone(),
        keep,
    };
    let marker = serde_json::json!({
        "rehearsal_of": p.plan.old.datadir,
        "started_at": crate::state::journal::now(),
    });
    ownerfs::write(
        &owner,
        &dir.join(MARKER),
        marker.to_string().as_bytes(),
        0o600,
    )?;
    for d in [scratch.logs(), dir.join("tblspc")] {
        ownerfs::mkdir(&owner, &d, 0o700)?;
    }
    Ok(scratch)
}

/// Makes the copy in `scratch/old` by `method`.
pub(crate) fn make_copy(
    p: &Prepared,
    scratch: &Scratch,
    method: Method,
    max_rate: Option<&str>,
) -> Result<Copied> {
    let owner = p.runner.owner();
    let copy = scratch.old();
    let tablespaces = version_dirs(p);
    if method == Method::BaseBackup {
        return base_backup(p, scratch, &tablespaces, max_rate);
    }
    ownerfs::mkdir(owner, &copy, 0o700)?;
    let mut pairs = Vec::new();
    for (oid, src) in &tablespaces {
        let dst = scratch
            .tablespace(oid)
            .join(src.file_name().unwrap_or_default());
        ownerfs::mkdir(owner, &scratch.tablespace(oid), 0o700)?;
        ownerfs::mkdir(owner, &dst, 0o700)?;
        pairs.push(format!("{}={}", src.display(), dst.display()));
    }
    let waldir = p
        .plan
        .old
        .waldir
        .clone()
        .unwrap_or_else(|| p.plan.old.datadir.join("pg_wal"));
    let spec = Copy {
        from: p.plan.old.datadir.clone(),
        to: copy.clone(),
        waldir: waldir.clone(),
        tablespaces: pairs.clone(),
    };
    let copied = if method == Method::ReflinkBackup {
        let target = live_target(p)?;
        let args: Vec<String> = spec.args();
        let mut request: Vec<&str> = vec!["backup-copy"];
        request.extend(args.iter().map(String::as_str));
        db::call::<Copied>(&p.runner, &request, &target)?
    } else {
        let mut done = ownerfs::copy_tree_as(owner, &spec.from, &copy, Part::Data)?;
        for pair in &pairs {
            let (src, dst) = pair.split_once('=').unwrap_or((pair, pair));
            done.add(ownerfs::copy_tree_as(
                owner,
                Path::new(src),
                Path::new(dst),
                Part::All,
            )?);
        }
        done.add(ownerfs::copy_tree_as(
            owner,
            &spec.from,
            &copy,
            Part::Control,
        )?);
        done.add(ownerfs::copy_tree_as(
            owner,
            &waldir,
            &copy.join("pg_wal"),
            Part::All,
        )?);
        done
    };
    for (oid, _) in &tablespaces {
        let link = copy.join("pg_tblspc").join(oid);
        ownerfs::symlink_as(owner, &scratch.tablespace(oid), &link)?;
    }
    Ok(copied)
}

/// The live old server's socket, port and roles to try.
pub(crate) fn live_target(p: &Prepared) -> Result<db::Target> {
    let Liveness::Running(pm) = crate::exec::postmaster::liveness(&p.plan.old.datadir) else {
        return Err(Error::Database {
            what: format!(
                "cannot reach the old server of {}",
                p.plan.old.datadir.display()
            ),
            detail: "it stopped during the rehearsal".into(),
        });
    };
    let socket = pm.socket_dir.clone().ok_or_else(|| Error::Refused {
        findings: vec![Finding::error(
            "no-socket",
            "the old server listens on no Unix socket",
            "Set unix_socket_directories so that pgleap can connect as the owner",
        )],
    })?;
    let users = vec![
        crate::steps::step::superuser(p),
        p.runner.owner().name.clone(),
    ];
    Ok(db::Target::new(
        &socket,
        pm.port.unwrap_or(p.plan.old.port),
        users,
    ))
}

/// `pg_basebackup` of the old major over the owner's socket, tablespaces mapped into the
/// scratch area.
fn base_backup(
    p: &Prepared,
    scratch: &Scratch,
    tablespaces: &[(String, PathBuf)],
    max_rate: Option<&str>,
) -> Result<Copied> {
    let target = live_target(p)?;
    let mut args = vec![
        "-D".to_string(),
        scratch.old().display().to_string(),
        "-h".into(),
        target.socket_dir.display().to_string(),
        "-p".into(),
        target.port.to_string(),
        "-U".into(),
        target.users[0].clone(),
        "-X".into(),
        "stream".into(),
        "-c".into(),
        "fast".into(),
        "--no-password".into(),
    ];
    if let Some(r) = max_rate {
        args.push(format!("--max-rate={r}"));
    }
    for (oid, dir) in tablespaces {
        let location = dir.parent().unwrap_or(dir);
        args.push(format!(
            "--tablespace-mapping={}={}",
            location.display(),
            scratch.tablespace(oid).display()
        ));
    }
    p.runner.run(
        &p.old.bindir.join("pg_basebackup"),
        &args,
        &Opts {
            log_name: Some("pg_basebackup"),
            ..Opts::default()
        },
    )?;
    let bytes = space::dir_bytes(&scratch.old())
        + tablespaces
            .iter()
            .map(|(oid, _)| space::dir_bytes(&scratch.tablespace(oid)))
            .sum::<u64>();
    Ok(Copied {
        files: 0,
        bytes,
        reflinked: 0,
    })
}

/// Settings of a configuration kept outside the data directory that point at the original
/// cluster's files: commented out in the copy's own configuration.
const POINTS_BACK: [&str; 5] = [
    "data_directory",
    "hba_file",
    "ident_file",
    "external_pid_file",
    "stats_temp_directory",
];

fn without_points_back(text: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(text);
    let mut out = String::new();
    for l in text.lines() {
        match crate::config::parse::parse_line(l) {
            Some(s) if POINTS_BACK.contains(&s.name.as_str()) => {
                out.push('#');
                out.push_str(l);
                out.push_str("\t# pgleap rehearse: points at the original cluster\n");
            }
            _ => {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out.into_bytes()
}

/// For a cluster configured outside its data directory (postgresql-common's
/// `/etc/postgresql/N/NAME`): its postgresql.conf, pg_hba.conf, pg_ident.conf and
/// `conf.d/*.conf` copied into the copy, without the settings that point back at the
/// original cluster, so that the copy is a data directory holding its own configuration.
pub(crate) fn bring_config(p: &Prepared, copy: &Path) -> Result<()> {
    let Some(confdir) = &p.plan.old.confdir else {
        return Ok(());
    };
    let owner = p.runner.owner();
    for f in ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"] {
        let from = confdir.join(f);
        if from.is_file() {
            let bytes = ownerfs::read_where(owner, &from)?;
            ownerfs::write(owner, &copy.join(f), &without_points_back(&bytes), 0o600)?;
        }
    }
    let confd = confdir.join("conf.d");
    let Ok(entries) = std::fs::read_dir(&confd) else {
        return Ok(());
    };
    ownerfs::mkdir(owner, &copy.join("conf.d"), 0o700)?;
    for e in entries.filter_map(std::result::Result::ok) {
        let name = e.file_name();
        let is_conf = name.to_string_lossy().ends_with(".conf");
        if is_conf && e.file_type().is_ok_and(|t| t.is_file()) {
            let bytes = ownerfs::read_where(owner, &e.path())?;
            let to = copy.join("conf.d").join(&name);
            ownerfs::write(owner, &to, &without_points_back(&bytes), 0o600)?;
        }
    }
    Ok(())
}

/// Refuses to go on unless the copy's server would run on the copy itself: what
/// `postgres -C data_directory` says of it.
pub(crate) fn check_points_at_copy(p: &Prepared, copy: &Path) -> Result<()> {
    let out = p.runner.run(
        &p.old.bindir.join("postgres"),
        &[
            "-D".to_string(),
            copy.display().to_string(),
            "-C".into(),
            "data_directory".into(),
        ],
        &Opts {
            log_name: Some("postgres-C-data_directory"),
            ..Opts::default()
        },
    )?;
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let same = std::fs::canonicalize(&said).ok() == std::fs::canonicalize(copy).ok();
    if same {
        return Ok(());
    }
    Err(Error::Database {
        what: format!("the copy in {} is not self-contained", copy.display()),
        detail: format!(
            "its configuration names {said} as the data directory; pgleap stopped before starting a server on it"
        ),
    })
}

/// Settings appended to the copy's `postgresql.auto.conf` (which wins over
/// `postgresql.conf`): the copy must not archive into the old cluster's archive nor write
/// its external pid file.
pub(crate) fn isolate_config(p: &Prepared, copy: &Path) -> Result<()> {
    let owner = p.runner.owner();
    let path = copy.join("postgresql.auto.conf");
    let mut text = ownerfs::read(owner, &path).unwrap_or_default();
    text.extend_from_slice(
        b"\n# pgleap rehearse: this copy must not touch what the original cluster uses\narchive_mode = 'off'\nexternal_pid_file = ''\n",
    );
    ownerfs::write(owner, &path, &text, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_keeps_no_setting_that_points_back() {
        let conf = b"data_directory = '/var/lib/postgresql/15/main'\nhba_file='/etc/postgresql/15/main/pg_hba.conf'\nport = 5432\n  external_pid_file = '/run/postgresql/15-main.pid'\t# pid\ninclude_dir = 'conf.d'\n";
        let out = String::from_utf8(without_points_back(conf)).unwrap();
        let active: Vec<&str> = out
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect();
        assert_eq!(active, ["port = 5432", "include_dir = 'conf.d'"], "{out}");
        assert!(out.contains("#data_directory = '/var/lib/postgresql/15/main'\t# pgleap rehearse"));
    }
}
