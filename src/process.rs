//! One runner for every external program: explicit paths, a clean environment, the cluster
//! owner's identity, and output captured into the upgrade's log directory.
//!
//! Invariant: when pgleap runs as root, no child ever runs as root.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Result};

/// Variables every child keeps: credentials and time zone, and nss_wrapper's, which give a
/// uid without a passwd entry (Kubernetes, OpenShift) the user name that initdb and
/// pg_upgrade insist on looking up (as the official postgres image does for its initdb).
const PASS_THROUGH: [&str; 7] = [
    "PGPASSWORD",
    "PGPASSFILE",
    "TZ",
    "PGTZ",
    "LD_PRELOAD",
    "NSS_WRAPPER_PASSWD",
    "NSS_WRAPPER_GROUP",
];

/// The operating-system user that owns a data directory and runs its programs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Owner {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) name: String,
    pub(crate) home: PathBuf,
}

impl Owner {
    pub(crate) fn from_uid(uid: u32, gid: u32) -> Owner {
        match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
            Ok(Some(u)) => Owner {
                uid,
                gid,
                name: u.name,
                home: u.dir,
            },
            // Arbitrary UIDs (Kubernetes, OpenShift) have no passwd entry.
            _ => Owner {
                uid,
                gid,
                name: uid.to_string(),
                home: PathBuf::from("/tmp"),
            },
        }
    }

    /// True when programs must switch to this owner (pgleap itself runs as root).
    pub(crate) fn needs_switch(&self) -> bool {
        nix::unistd::geteuid().is_root() && self.uid != 0
    }
}

/// Runs programs as one owner, logging into one directory.
#[derive(Debug)]
pub(crate) struct Runner {
    owner: Owner,
    log_dir: Option<PathBuf>,
    counter: AtomicUsize,
}

/// Options for one invocation.
#[derive(Debug, Default)]
pub(crate) struct Opts<'a> {
    /// Working directory (defaults to the owner's home or `/`).
    pub(crate) cwd: Option<&'a Path>,
    /// Extra environment variables.
    pub(crate) env: Vec<(&'a str, String)>,
    /// Log file name stem; defaults to the program's file name.
    pub(crate) log_name: Option<&'a str>,
}

impl Runner {
    pub(crate) fn new(owner: Owner, log_dir: Option<PathBuf>) -> Runner {
        Runner {
            owner,
            log_dir,
            counter: AtomicUsize::new(0),
        }
    }

    pub(crate) fn owner(&self) -> &Owner {
        &self.owner
    }

    pub(crate) fn log_dir(&self) -> Option<&Path> {
        self.log_dir.as_deref()
    }

    pub(crate) fn set_log_dir(&mut self, dir: PathBuf) {
        self.log_dir = Some(dir);
    }

    /// Builds the command with identity and environment applied, without running it.
    pub(crate) fn command<S: AsRef<OsStr>>(
        &self,
        program: &Path,
        args: &[S],
        opts: &Opts<'_>,
    ) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args);
        cmd.env_clear();
        cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin");
        cmd.env("HOME", &self.owner.home);
        cmd.env("USER", &self.owner.name);
        cmd.env("LOGNAME", &self.owner.name);
        // Programs' messages are parsed and quoted: keep them in English.
        cmd.env("LC_MESSAGES", "C");
        cmd.env("LANG", "C");
        for key in PASS_THROUGH {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            }
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let cwd = opts.cwd.map_or_else(
            || {
                if self.owner.home.is_dir() && !self.owner.needs_switch() {
                    self.owner.home.clone()
                } else {
                    PathBuf::from("/")
                }
            },
            Path::to_path_buf,
        );
        cmd.current_dir(cwd);
        if self.owner.needs_switch() {
            cmd.uid(self.owner.uid).gid(self.owner.gid);
        }
        cmd.stdin(Stdio::null());
        // Own process group: a terminal's Ctrl-C reaches pgleap only, which decides when to
        // stop (see interrupt.rs) instead of pg_upgrade dying midway.
        cmd.process_group(0);
        // A child must not outlive pgleap: a pg_upgrade still running after pgleap was
        // killed would race the resume or rollback that the released lock now allows.
        // (Servers started by pg_ctl are its grandchildren and are not affected.)
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        cmd
    }

    /// Runs a program to completion; a non-zero exit becomes [`Error::Command`].
    pub(crate) fn run<S: AsRef<OsStr>>(
        &self,
        program: &Path,
        args: &[S],
        opts: &Opts<'_>,
    ) -> Result<Output> {
        let output = self.run_unchecked(program, args, opts)?;
        if output.status.success() {
            Ok(output.output)
        } else {
            Err(failure(program, args, &output))
        }
    }

    /// Runs a program and returns its output whatever its exit status.
    pub(crate) fn run_unchecked<S: AsRef<OsStr>>(
        &self,
        program: &Path,
        args: &[S],
        opts: &Opts<'_>,
    ) -> Result<Logged> {
        let rendered = render(program, args);
        tracing::debug!(command = %rendered, "running");
        let mut cmd = self.command(program, args, opts);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let could_not_run = |e| {
            Error::io(
                format!("could not run {}", program_name(program)),
                program,
                e,
            )
        };
        let child = cmd.spawn().map_err(could_not_run)?;
        crate::interrupt::set_child(child.id());
        let output = child.wait_with_output();
        crate::interrupt::clear_child();
        let output = output.map_err(could_not_run)?;
        let log = self.write_log(program, opts.log_name, &rendered, &output);
        Ok(Logged {
            status: output.status,
            output,
            log,
        })
    }

    fn write_log(
        &self,
        program: &Path,
        name: Option<&str>,
        rendered: &str,
        output: &Output,
    ) -> Option<PathBuf> {
        let dir = self.log_dir.as_ref()?;
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let stem = name.map_or_else(|| program_name(program), str::to_string);
        let path = dir.join(format!("{:03}-{}-{stem}.log", n, std::process::id()));
        let mut text = format!("$ {rendered}\n");
        let _ = writeln!(text, "exit: {}", output.status);
        text.push_str("--- stdout ---\n");
        text.push_str(&String::from_utf8_lossy(&output.stdout));
        text.push_str("\n--- stderr ---\n");
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        let written = std::fs::File::create(&path).and_then(|mut f| f.write_all(text.as_bytes()));
        match written {
            Ok(()) => Some(path),
            Err(e) => {
                tracing::warn!("could not write log {}: {e}", path.display());
                None
            }
        }
    }
}

/// A finished program's output plus where its log went.
#[derive(Debug)]
pub(crate) struct Logged {
    pub(crate) status: std::process::ExitStatus,
    pub(crate) output: Output,
    pub(crate) log: Option<PathBuf>,
}

impl Logged {
    pub(crate) fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    pub(crate) fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
}

/// Turns a failed run into an error quoting the program's own last lines.
pub(crate) fn failure<S: AsRef<OsStr>>(program: &Path, args: &[S], out: &Logged) -> Error {
    let mut text = String::from_utf8_lossy(&out.output.stderr).into_owned();
    if text.trim().is_empty() {
        text = String::from_utf8_lossy(&out.output.stdout).into_owned();
    }
    Error::Command {
        program: program_name(program),
        command: render(program, args),
        status: out.status.to_string(),
        stderr_tail: last_lines(&text, 15),
        log: out.log.clone(),
    }
}

pub(crate) fn program_name(program: &Path) -> String {
    program.file_name().map_or_else(
        || program.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

pub(crate) fn render<S: AsRef<OsStr>>(program: &Path, args: &[S]) -> String {
    let mut out = shell_quote(&program.to_string_lossy());
    for a in args {
        out.push(' ');
        out.push_str(&shell_quote(&a.as_ref().to_string_lossy()));
    }
    out
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

pub(crate) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(
            render(
                Path::new("/usr/bin/initdb"),
                &["-D", "/data/17", "--locale=C", "it's"]
            ),
            "/usr/bin/initdb -D /data/17 --locale=C 'it'\\''s'"
        );
    }

    #[test]
    fn last_lines_skips_blanks() {
        assert_eq!(last_lines("a\n\nb\nc\n\n", 2), "b\nc");
    }
}
