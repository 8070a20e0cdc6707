//! A PostgreSQL installation as a value: its bindir, its major (asked from `pg_ctl -V`),
//! and where its libraries and extension files live.
//!
//! Invariant: an `Install` is only built after its programs were found and its major verified.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::error::Finding;
use crate::exec::process::{Opts, Owner, Runner};
use crate::host::root::under;

#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Install {
    pub(crate) bindir: PathBuf,
    pub(crate) major: u32,
    /// Full version as the binaries report it, e.g. "17.11".
    pub(crate) version: String,
    pub(crate) pkglibdir: PathBuf,
    pub(crate) sharedir: PathBuf,
}

/// Which side of the upgrade an installation serves; decides the programs it must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Old,
    New,
}

impl Role {
    fn required(self) -> &'static [&'static str] {
        match self {
            Role::Old => &["postgres", "pg_ctl", "pg_controldata"],
            // pg_upgrade drives these from the new bindir.
            Role::New => &[
                "initdb",
                "pg_ctl",
                "postgres",
                "pg_upgrade",
                "pg_controldata",
                "pg_dump",
                "pg_dumpall",
                "pg_restore",
                "pg_resetwal",
                "psql",
            ],
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Role::Old => "--old-bindir",
            Role::New => "--new-bindir",
        }
    }
}

impl Install {
    pub(crate) fn program(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }
    pub(crate) fn initdb(&self) -> PathBuf {
        self.program("initdb")
    }
    pub(crate) fn postgres(&self) -> PathBuf {
        self.program("postgres")
    }
    pub(crate) fn pg_upgrade(&self) -> PathBuf {
        self.program("pg_upgrade")
    }
    pub(crate) fn pg_controldata(&self) -> PathBuf {
        self.program("pg_controldata")
    }
    pub(crate) fn psql(&self) -> PathBuf {
        self.program("psql")
    }

    /// Probes a bindir: the programs `role` needs must exist and `pg_ctl -V` must answer.
    pub(crate) fn probe(runner: &Runner, bindir: &Path, role: Role) -> Result<Install, Finding> {
        let flag = role.flag();
        if !bindir.is_dir() {
            return Err(Finding::error(
                "bindir-missing",
                format!("{} is not a directory", bindir.display()),
                format!("Pass {flag} with the bin directory of a PostgreSQL installation."),
            ));
        }
        if let Some((path, who)) = writable_by_others(bindir, role.required()) {
            return Err(Finding::error(
                "bindir-writable",
                format!(
                    "{} is writable by {who} ({}): pgleap runs as root and would run programs that user can replace",
                    bindir.display(),
                    path.display()
                ),
                "Install PostgreSQL where only root can write (as packages do), or run pgleap as the cluster owner",
            ));
        }
        let missing: Vec<&str> = role
            .required()
            .iter()
            .copied()
            .filter(|p| !is_executable(&bindir.join(p)))
            .collect();
        if !missing.is_empty() {
            return Err(Finding::error(
                "bindir-incomplete",
                format!("{} lacks {}", bindir.display(), missing.join(", ")),
                format!(
                    "Install the full server package for that major (on Debian postgresql-N, on RHEL postgresqlN-server), or pass {flag}."
                ),
            ));
        }
        let pg_ctl = bindir.join("pg_ctl");
        let out = runner
            .run_unchecked(
                &pg_ctl,
                &["-V"],
                &Opts {
                    log_name: Some("pg_ctl-version"),
                    ..Opts::default()
                },
            )
            .map_err(|e| {
                Finding::error("bindir-broken", e.to_string(), format!("Check {flag}."))
            })?;
        let text = out.stdout();
        let Some((major, version)) = parse_version(&text) else {
            return Err(Finding::error(
                "bindir-broken",
                format!(
                    "{} -V printed no PostgreSQL version: {}",
                    pg_ctl.display(),
                    text.trim()
                ),
                format!(
                    "Check that {} holds a working PostgreSQL installation.",
                    bindir.display()
                ),
            ));
        };
        let (pkglibdir, sharedir) = locate_dirs(runner, bindir, major);
        Ok(Install {
            bindir: bindir.to_path_buf(),
            major,
            version,
            pkglibdir,
            sharedir,
        })
    }
}

/// Bindirs where distributions put a given major, in the order they are tried: below
/// `root` (`--root`, normally `/`), then PATH.
pub(crate) fn candidate_bindirs(root: &Path, major: u32) -> Vec<PathBuf> {
    let mut out = distribution_bindirs(root, major).to_vec();
    if let Some(path) = std::env::var_os("PATH") {
        out.extend(std::env::split_paths(&path));
    }
    out
}

fn distribution_bindirs(root: &Path, major: u32) -> [PathBuf; 2] {
    [
        under(root, &format!("usr/lib/postgresql/{major}/bin")), // Debian, Ubuntu
        under(root, &format!("usr/pgsql-{major}/bin")),          // RHEL, PGDG
    ]
}

/// Finds the bindir for a major: the first candidate holding `pg_ctl` of that major.
pub(crate) fn find_for_major(
    runner: &Runner,
    root: &Path,
    major: u32,
    role: Role,
) -> Result<Install, Finding> {
    let mut seen = Vec::new();
    for dir in candidate_bindirs(root, major) {
        if !is_executable(&dir.join("pg_ctl")) {
            continue;
        }
        match Install::probe(runner, &dir, role) {
            Ok(i) if i.major == major => return Ok(i),
            Ok(i) => seen.push(format!("{} ({})", dir.display(), i.major)),
            Err(_) => seen.push(format!("{} (incomplete)", dir.display())),
        }
    }
    let flag = role.flag();
    let also = if seen.is_empty() {
        String::new()
    } else {
        format!(" (found only: {})", seen.join(", "))
    };
    let [debian, rhel] = distribution_bindirs(root, major);
    Err(Finding::error(
        "bindir-not-found",
        format!(
            "no PostgreSQL {major} installation found in {}, {} or PATH{also}",
            debian.display(),
            rhel.display()
        ),
        format!("Install PostgreSQL {major}, or pass {flag} with its bin directory."),
    ))
}

/// Parses `pg_ctl (PostgreSQL) 17.11` (also `16beta2`, `14.23 (Debian 14.23-1)`).
pub(crate) fn parse_version(text: &str) -> Option<(u32, String)> {
    let line = text.lines().find(|l| l.contains("(PostgreSQL)"))?;
    let version = line
        .split("(PostgreSQL)")
        .nth(1)?
        .split_whitespace()
        .next()?
        .to_string();
    let digits: String = version.chars().take_while(char::is_ascii_digit).collect();
    let major: u32 = digits.parse().ok()?;
    Some((major, version))
}

fn locate_dirs(runner: &Runner, bindir: &Path, major: u32) -> (PathBuf, PathBuf) {
    let pg_config = bindir.join("pg_config");
    if is_executable(&pg_config) {
        if let Ok(out) = runner.run_unchecked(
            &pg_config,
            &["--pkglibdir", "--sharedir"],
            &Opts {
                log_name: Some("pg_config"),
                ..Opts::default()
            },
        ) {
            let text = out.stdout();
            let lines: Vec<&str> = text.lines().collect();
            if out.status.success() && lines.len() == 2 {
                return (PathBuf::from(lines[0]), PathBuf::from(lines[1]));
            }
        }
    }
    let prefix = bindir.parent().unwrap_or(bindir);
    let libs = [
        prefix.join("lib/postgresql"),
        prefix.join("lib"),
        PathBuf::from(format!("/usr/lib/postgresql/{major}/lib")),
    ];
    let shares = [
        prefix.join("share/postgresql"),
        prefix.join("share"),
        PathBuf::from(format!("/usr/share/postgresql/{major}")),
    ];
    let lib = libs
        .iter()
        .find(|d| d.join("plpgsql.so").exists())
        .unwrap_or(&libs[1])
        .clone();
    let share = shares
        .iter()
        .find(|d| d.join("extension/plpgsql.control").exists())
        .unwrap_or(&shares[1])
        .clone();
    (lib, share)
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// When pgleap runs as root: the first directory of `bindir` (resolved), or of one of its
/// `programs`, that a user other than root can change, and who.
fn writable_by_others(bindir: &Path, programs: &[&str]) -> Option<(PathBuf, String)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let canonical = std::fs::canonicalize(bindir).ok()?;
    let mut paths: Vec<PathBuf> = canonical.ancestors().map(Path::to_path_buf).collect();
    for p in programs {
        if let Ok(c) = std::fs::canonicalize(bindir.join(p)) {
            paths.extend(c.ancestors().map(Path::to_path_buf));
        }
    }
    paths.into_iter().find_map(|p| {
        let m = std::fs::metadata(&p).ok()?;
        let sticky = m.is_dir() && m.mode() & 0o1000 != 0 && p != canonical;
        if m.uid() != 0 {
            let who = Owner::from_uid(m.uid(), m.gid()).name;
            Some((p, who))
        } else if m.mode() & 0o022 != 0 && !sticky {
            Some((p, "its group or other users".into()))
        } else {
            None
        }
    })
}

/// Whether the host's apt knows a package named `name` (false without apt): lets a hint name
/// a package only when it exists.
pub(crate) fn apt_knows(runner: &Runner, name: &str) -> bool {
    let apt_cache = std::path::Path::new("/usr/bin/apt-cache");
    if !apt_cache.exists() {
        return false;
    }
    runner
        .run_unchecked(
            apt_cache,
            &["show", "--no-all-versions", name],
            &Opts {
                log_name: Some("apt-cache"),
                ..Opts::default()
            },
        )
        .is_ok_and(|out| out.status.success() && !out.stdout().trim().is_empty())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A PostgreSQL 17 installation under `/pg`, for tests that only read its paths.
    pub(crate) fn sample() -> Install {
        Install {
            bindir: "/pg/bin".into(),
            major: 17,
            version: "17.11".into(),
            pkglibdir: "/pg/lib".into(),
            sharedir: "/pg/share".into(),
        }
    }

    #[test]
    fn parses_versions_of_every_shape() {
        assert_eq!(
            parse_version("pg_ctl (PostgreSQL) 17.11\n"),
            Some((17, "17.11".into()))
        );
        assert_eq!(
            parse_version("pg_ctl (PostgreSQL) 14.23 (Debian 14.23-1.pgdg120+1)"),
            Some((14, "14.23".into()))
        );
        assert_eq!(
            parse_version("postgres (PostgreSQL) 18beta2"),
            Some((18, "18beta2".into()))
        );
        assert_eq!(parse_version("bash: pg_ctl: not found"), None);
    }
}
