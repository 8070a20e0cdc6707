//! Inspecting a data directory without changing it: `PG_VERSION`, `pg_controldata`, owner,
//! whether a live postmaster serves it, tablespaces, and where its configuration lives.
//!
//! Invariant: nothing here writes to disk or starts a server.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Finding;
use crate::exec::ownerfs::{Follow, read_regular_text};
use crate::exec::postmaster::{self, Liveness, Postmaster};
use crate::exec::process::{Opts, Owner, Runner};
use crate::inspect::install::Install;

/// The facts of `pg_controldata` pgleap acts on.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct ControlData {
    pub(crate) state: String,
    pub(crate) checksums: bool,
    pub(crate) wal_segment_bytes: u64,
    pub(crate) block_size: u64,
    pub(crate) catalog_version: String,
    /// "Latest checkpoint location": moves whenever a server on the directory checkpoints,
    /// its shutdown included.
    pub(crate) checkpoint: String,
    /// "Latest checkpoint's NextXID" as one 64-bit number (epoch << 32 | xid): after a clean
    /// shutdown, the next transaction id the cluster would assign.
    pub(crate) next_xid: Option<u64>,
}

impl ControlData {
    pub(crate) fn parse(text: &str) -> Option<ControlData> {
        let fields: BTreeMap<&str, &str> = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        Some(ControlData {
            state: (*fields.get("Database cluster state")?).to_string(),
            checksums: fields
                .get("Data page checksum version")
                .is_some_and(|v| *v != "0"),
            wal_segment_bytes: fields.get("Bytes per WAL segment")?.parse().ok()?,
            block_size: fields.get("Database block size")?.parse().ok()?,
            catalog_version: (*fields.get("Catalog version number")?).to_string(),
            checkpoint: fields
                .get("Latest checkpoint location")
                .map_or_else(String::new, |v| (*v).to_string()),
            next_xid: fields
                .get("Latest checkpoint's NextXID")
                .and_then(|v| parse_full_xid(v)),
        })
    }

    /// True when the last shutdown was clean, so pg_upgrade will accept the cluster.
    pub(crate) fn cleanly_shut_down(&self) -> bool {
        self.state == "shut down" || self.state == "shut down in recovery"
    }
}

/// `epoch:xid` (pg_controldata's NextXID) as one 64-bit transaction id.
fn parse_full_xid(v: &str) -> Option<u64> {
    let (epoch, xid) = v.split_once(':')?;
    Some((epoch.trim().parse::<u64>().ok()? << 32) | xid.trim().parse::<u64>().ok()?)
}

/// Runs `pg_controldata` of `install` on any data directory (the new cluster's, say).
pub(crate) fn control_data_of(
    runner: &Runner,
    install: &Install,
    datadir: &Path,
) -> crate::error::Result<ControlData> {
    run_control_data(runner, install, datadir, "pg_controldata")
}

fn run_control_data(
    runner: &Runner,
    install: &Install,
    datadir: &Path,
    log_name: &'static str,
) -> crate::error::Result<ControlData> {
    let out = runner.run(
        &install.pg_controldata(),
        &[datadir.as_os_str()],
        &Opts {
            log_name: Some(log_name),
            ..Opts::default()
        },
    )?;
    ControlData::parse(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
        crate::error::Error::ControlDataUnreadable {
            datadir: datadir.to_path_buf(),
        }
    })
}

/// One tablespace: the symlink in `pg_tblspc` and where it points.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Tablespace {
    pub(crate) oid: String,
    pub(crate) location: PathBuf,
}

/// A data directory as found on disk.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Cluster {
    pub(crate) datadir: PathBuf,
    /// Where its postgresql.conf lives: the data directory, or Debian's
    /// `/etc/postgresql/N/NAME` (set by the caller that knows the layout).
    pub(crate) confdir: PathBuf,
    pub(crate) major: u32,
    pub(crate) owner: Owner,
    pub(crate) liveness: Liveness,
    pub(crate) tablespaces: Vec<Tablespace>,
}

impl Cluster {
    /// Reads what can be read without any PostgreSQL program: refuses with a finding
    /// when the directory is missing, unreadable, or not a data directory.
    pub(crate) fn inspect(datadir: &Path) -> Result<Cluster, Finding> {
        let fix = "Pass --old-datadir with the directory that holds PG_VERSION (for example /var/lib/postgresql/15/main).";
        let meta = match std::fs::metadata(datadir) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Finding::error(
                    "old-datadir-missing",
                    format!("{} does not exist", datadir.display()),
                    fix,
                ));
            }
            Err(e) => {
                return Err(Finding::error(
                    "old-datadir-unreadable",
                    format!("cannot read {}: {e}", datadir.display()),
                    "Run pgleap as root or as the data directory's owner.",
                ));
            }
        };
        if !meta.is_dir() {
            return Err(Finding::error(
                "old-datadir-missing",
                format!("{} is not a directory", datadir.display()),
                fix,
            ));
        }
        let version_file = datadir.join("PG_VERSION");
        let text = match read_regular_text(&version_file, Follow::No, PG_VERSION_LIMIT) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Finding::error(
                    "not-a-datadir",
                    format!(
                        "{} is not a PostgreSQL data directory (no PG_VERSION)",
                        datadir.display()
                    ),
                    fix_naming_data_dirs_below(datadir).unwrap_or_else(|| fix.to_string()),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(Finding::error(
                    "not-a-datadir",
                    format!(
                        "{} is not a PostgreSQL data directory: its PG_VERSION is not what initdb writes ({e})",
                        datadir.display()
                    ),
                    fix,
                ));
            }
            Err(e) => {
                return Err(Finding::error(
                    "old-datadir-unreadable",
                    format!("cannot read {}: {e}", version_file.display()),
                    format!(
                        "Run pgleap as root or as the owner of {} (uid {}).",
                        datadir.display(),
                        meta.uid()
                    ),
                ));
            }
        };
        let major = parse_pg_version(&text).ok_or_else(|| {
            Finding::error(
                "not-a-datadir",
                format!(
                    "{} holds {:?}, not a PostgreSQL major version",
                    version_file.display(),
                    text.trim()
                ),
                fix,
            )
        })?;
        if let postmaster::PidFile::NotRegular(what) = postmaster::pid_file(datadir) {
            let pid_file = datadir.join("postmaster.pid");
            return Err(Finding::error(
                "pid-file-not-regular",
                format!(
                    "{} is not what PostgreSQL writes there: {what}",
                    pid_file.display()
                ),
                format!(
                    "PostgreSQL writes a regular file there while a server runs and removes it when the server stops; a server would hang or refuse to start on this one. Check that no server runs on {} (ps -u {}), remove {} as the cluster owner, then run pgleap again.",
                    datadir.display(),
                    meta.uid(),
                    pid_file.display()
                ),
            ));
        }
        Ok(Cluster {
            datadir: datadir.to_path_buf(),
            confdir: datadir.to_path_buf(),
            major,
            owner: Owner::from_uid(meta.uid(), meta.gid()),
            liveness: postmaster::liveness(datadir),
            tablespaces: tablespaces(datadir),
        })
    }

    pub(crate) fn is_running(&self) -> bool {
        matches!(self.liveness, Liveness::Running(_))
    }

    pub(crate) fn postmaster(&self) -> Option<&Postmaster> {
        match &self.liveness {
            Liveness::Running(p) => Some(p),
            _ => None,
        }
    }

    /// Runs the old installation's `pg_controldata`.
    pub(crate) fn control_data(
        &self,
        runner: &Runner,
        install: &Install,
    ) -> crate::error::Result<ControlData> {
        run_control_data(runner, install, &self.datadir, "pg_controldata-old")
    }

    /// [`Cluster::control_data`] for the preflight: a control file that pg_controldata cannot
    /// read or whose checksum fails, or whose catalog is another major's than `PG_VERSION`
    /// says, is refused with the fix rather than failing later in pg_ctl or pg_upgrade.
    pub(crate) fn control_data_checked(
        &self,
        runner: &Runner,
        install: &Install,
    ) -> crate::error::Result<Result<ControlData, Finding>> {
        let out = runner.run_unchecked(
            &install.pg_controldata(),
            &[self.datadir.as_os_str()],
            &Opts {
                log_name: Some("pg_controldata-old"),
                ..Opts::default()
            },
        )?;
        let (stdout, stderr) = (out.stdout(), out.stderr());
        let control = self.datadir.join("global/pg_control");
        let untrusted = |says: &str| {
            Finding::error(
                "old-control-unreadable",
                format!(
                    "{} cannot be trusted: pg_controldata says: {}",
                    control.display(),
                    says.trim()
                ),
                "Restore global/pg_control from a backup of this cluster (pg_resetwal can rebuild one as a last resort, at the risk of losing data); pgleap upgrades only a cluster whose control file is sound",
            )
        };
        // A failed checksum is only a warning to pg_controldata, which then prints garbage.
        let warning = stdout
            .lines()
            .chain(stderr.lines())
            .find(|l| l.contains("CRC") || l.contains("byte ordering mismatch"));
        if let Some(w) = warning {
            return Ok(Err(untrusted(w)));
        }
        let parsed = ControlData::parse(&stdout).filter(|_| out.status.success());
        let Some(data) = parsed else {
            let says = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no usable output");
            return Ok(Err(untrusted(
                says.trim_start_matches("pg_controldata: error: "),
            )));
        };
        if let Some(major) = major_of_catalog(&data.catalog_version).filter(|m| *m != self.major) {
            return Ok(Err(Finding::error(
                "old-version-mismatch",
                format!(
                    "{}/PG_VERSION says {}, but global/pg_control holds catalog version {}, which is PostgreSQL {major}'s",
                    self.datadir.display(),
                    self.major,
                    data.catalog_version
                ),
                format!(
                    "Put the cluster's real major in PG_VERSION (here probably {major}, with --old-bindir of PostgreSQL {major}), or pass --old-datadir with the right directory; a directory mixed from two clusters cannot be upgraded"
                ),
            )));
        }
        Ok(Ok(data))
    }

    /// Asks the old server binary for a setting (`postgres -C name`), with the real config
    /// (read from the configuration directory, which names the data directory).
    pub(crate) fn setting(
        &self,
        runner: &Runner,
        install: &Install,
        name: &str,
    ) -> crate::error::Result<String> {
        let out = runner.run(
            &install.postgres(),
            &[
                "-D".as_ref(),
                self.confdir.as_os_str(),
                "-C".as_ref(),
                name.as_ref(),
            ],
            &Opts {
                log_name: Some("postgres-C"),
                ..Opts::default()
            },
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// The catalog version of each released major (`CATALOG_VERSION_NO`), fixed at its release.
const CATALOG_VERSIONS: [(u32, &str); 9] = [
    (10, "201707211"),
    (11, "201809051"),
    (12, "201909212"),
    (13, "202007201"),
    (14, "202107181"),
    (15, "202209061"),
    (16, "202307071"),
    (17, "202406281"),
    (18, "202506291"),
];

/// The released major a catalog version belongs to; `None` for others (betas, newer majors).
pub(crate) fn major_of_catalog(catalog_version: &str) -> Option<u32> {
    CATALOG_VERSIONS
        .iter()
        .find(|(_, v)| *v == catalog_version)
        .map(|(m, _)| *m)
}

/// The most a `PG_VERSION` holds (one short line), with room to spare.
const PG_VERSION_LIMIT: u64 = 4096;

/// The major `DATADIR/PG_VERSION` names, when it is a regular file (read without following a
/// link or blocking on a FIFO: the data directory is the owner's) that names one.
pub(crate) fn pg_version_of(datadir: &Path) -> Option<u32> {
    read_regular_text(&datadir.join("PG_VERSION"), Follow::No, PG_VERSION_LIMIT)
        .ok()
        .and_then(|t| parse_pg_version(&t))
}

pub(crate) fn parse_pg_version(text: &str) -> Option<u32> {
    let t = text.trim();
    // 9.6 and older had two-part majors; pgleap only deals with 10+, so "9.6" is rejected
    // later as too old rather than here as garbage.
    let head = t.split('.').next()?;
    head.parse().ok()
}

/// For a directory that is not a data directory: the data directories one or two levels
/// below it (a volume or version directory given instead of the data directory itself, e.g.
/// `/var/lib/postgresql` for `/var/lib/postgresql/15/main`), as a fix naming them.
fn fix_naming_data_dirs_below(dir: &Path) -> Option<String> {
    let subdirs = |d: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(d).map_or_else(
            |_| Vec::new(),
            |rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.is_dir() && !p.is_symlink())
                    .collect()
            },
        )
    };
    // global/ tells a data directory from a database directory (base/<oid> has PG_VERSION too).
    let is_datadir = |d: &Path| d.join("PG_VERSION").is_file() && d.join("global").is_dir();
    let mut found = Vec::new();
    for child in subdirs(dir) {
        if is_datadir(&child) {
            found.push(child);
        } else {
            found.extend(subdirs(&child).into_iter().filter(|g| is_datadir(g)));
        }
    }
    found.sort();
    match found.as_slice() {
        [] => None,
        [one] => Some(format!(
            "Pass --old-datadir {} (the data directory found below it)",
            one.display()
        )),
        many => Some(format!(
            "Pass --old-datadir with one of the data directories found below it: {}",
            many.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn tablespaces(datadir: &Path) -> Vec<Tablespace> {
    let Ok(entries) = std::fs::read_dir(datadir.join("pg_tblspc")) else {
        return Vec::new();
    };
    let mut out: Vec<Tablespace> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let location = std::fs::read_link(e.path()).ok()?;
            Some(Tablespace {
                oid: e.file_name().to_string_lossy().into_owned(),
                location,
            })
        })
        .collect();
    out.sort_by(|a, b| a.oid.cmp(&b.oid));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTROLDATA: &str = "pg_control version number:            1300
Catalog version number:               202307071
Database system identifier:           7300000000000000000
Database cluster state:               shut down
Database block size:                  8192
Bytes per WAL segment:                16777216
Data page checksum version:           1
Latest checkpoint location:           0/1A2B3C8
Latest checkpoint's NextXID:          1:760
";

    #[test]
    fn parses_controldata() {
        let c = ControlData::parse(CONTROLDATA).unwrap();
        assert_eq!(c.state, "shut down");
        assert!(c.checksums);
        assert_eq!(c.wal_segment_bytes, 16 * 1024 * 1024);
        assert_eq!(c.block_size, 8192);
        assert_eq!(c.catalog_version, "202307071");
        assert_eq!(c.checkpoint, "0/1A2B3C8");
        assert_eq!(c.next_xid, Some((1 << 32) + 760));
        assert!(c.cleanly_shut_down());
    }

    #[test]
    fn controldata_in_production_is_not_clean() {
        let text = CONTROLDATA
            .replace("shut down", "in production")
            .replace("version:           1", "version:           0");
        let c = ControlData::parse(&text).unwrap();
        assert!(!c.cleanly_shut_down());
        assert!(!c.checksums);
    }

    #[test]
    fn catalog_versions_name_their_major() {
        assert_eq!(major_of_catalog("202307071"), Some(16));
        assert_eq!(major_of_catalog("202506291"), Some(18));
        // A beta or development catalog is nobody's release.
        assert_eq!(major_of_catalog("202504091"), None);
    }

    #[test]
    fn pg_version_parses_majors() {
        assert_eq!(parse_pg_version("15\n"), Some(15));
        assert_eq!(parse_pg_version("9.6\n"), Some(9));
        assert_eq!(parse_pg_version("banana"), None);
    }

    #[test]
    fn names_data_directories_below_a_parent() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(fix_naming_data_dirs_below(root.path()), None);
        let main = root.path().join("15/main");
        std::fs::create_dir_all(main.join("global")).unwrap();
        std::fs::create_dir_all(main.join("base/1")).unwrap();
        std::fs::write(main.join("PG_VERSION"), "15\n").unwrap();
        std::fs::write(main.join("base/1/PG_VERSION"), "15\n").unwrap();
        let fix = fix_naming_data_dirs_below(root.path()).unwrap();
        assert!(
            fix.starts_with(&format!("Pass --old-datadir {} (", main.display())),
            "{fix}"
        );
        // From the data directory's parent; a database directory is no data directory.
        assert!(fix_naming_data_dirs_below(&root.path().join("15")).is_some());
        assert_eq!(fix_naming_data_dirs_below(&main.join("base")), None);
    }
}
