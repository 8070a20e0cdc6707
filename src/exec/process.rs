//! One runner for every external program: explicit paths, a clean environment, the cluster
//! owner's identity, and output captured into the upgrade's log directory.
//!
//! Invariant: when pgleap runs as root, no child runs as root, except what manages the
//! system on the user's behalf (`systemctl`, the user's own start and stop hooks), marked
//! `Opts::as_invoker`.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Result};
pub(crate) use crate::exec::user::Owner;

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

/// The variables of [`PASS_THROUGH`] that a child gets. `LD_PRELOAD` only when it loads
/// nss_wrapper alone and nss_wrapper is configured: any other library would run its code in
/// every program, including those run as root (service managers, hooks).
fn pass_through(
    get: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Vec<(&'static str, std::ffi::OsString)> {
    let nss_wrapper = get("NSS_WRAPPER_PASSWD").is_some();
    PASS_THROUGH
        .iter()
        .filter_map(|k| get(k).map(|v| (*k, v)))
        .filter(|(k, v)| {
            *k != "LD_PRELOAD"
                || (nss_wrapper
                    && v.to_string_lossy()
                        .split([' ', ':'])
                        .filter(|l| !l.is_empty())
                        .all(|l| {
                            Path::new(l)
                                .file_name()
                                .is_some_and(|n| n.to_string_lossy().starts_with("libnss_wrapper"))
                        }))
        })
        .collect()
}

/// Runs programs as one owner, logging into one directory.
#[derive(Debug)]
pub(crate) struct Runner {
    owner: Owner,
    log_dir: Option<PathBuf>,
    counter: AtomicUsize,
}

/// Options for one invocation.
#[derive(Default)]
pub(crate) struct Opts<'a> {
    /// Working directory (defaults to the owner's home or `/`).
    pub(crate) cwd: Option<&'a Path>,
    /// Extra environment variables.
    pub(crate) env: Vec<(&'a str, String)>,
    /// Log file name stem; defaults to the program's file name.
    pub(crate) log_name: Option<&'a str>,
    /// Called with each line of output as it is produced (a line still being written is
    /// passed as it grows): progress displays follow long programs with it.
    pub(crate) on_output: Option<&'a (dyn Fn(&str) + Sync)>,
    /// Run as pgleap's own user instead of the cluster owner: only for service managers and
    /// the user's hooks.
    pub(crate) as_invoker: bool,
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
        let switch = self.owner.needs_switch() && !opts.as_invoker;
        let mut cmd = Command::new(program);
        cmd.args(args);
        self.set_env(&mut cmd, opts);
        let cwd = opts.cwd.map_or_else(
            || {
                if self.owner.home.is_dir() && !switch {
                    self.owner.home.clone()
                } else {
                    PathBuf::from("/")
                }
            },
            Path::to_path_buf,
        );
        cmd.current_dir(cwd);
        if switch {
            crate::exec::user::switch(&mut cmd, &self.owner);
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

    /// A clean environment: the owner's identity (or the invoker's, for hooks and service
    /// managers), English messages, the pass-through variables and the caller's own.
    fn set_env(&self, cmd: &mut Command, opts: &Opts<'_>) {
        cmd.env_clear();
        if opts.as_invoker {
            // Hooks call runuser, sv or supervisorctl, which live in sbin.
            cmd.env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            );
            for key in ["HOME", "USER", "LOGNAME"] {
                if let Some(v) = std::env::var_os(key) {
                    cmd.env(key, v);
                }
            }
        } else {
            cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin");
            cmd.env("HOME", &self.owner.home);
            cmd.env("USER", &self.owner.name);
            cmd.env("LOGNAME", &self.owner.name);
        }
        // Programs' messages are parsed and quoted: keep them in English.
        cmd.env("LC_MESSAGES", "C");
        cmd.env("LANG", "C");
        for (key, v) in pass_through(|k| std::env::var_os(k)) {
            cmd.env(key, v);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
    }

    /// Runs a program whose children may outlive it (a server it starts) with its output in a
    /// file rather than a pipe, which a lingering server would hold open.
    pub(crate) fn run_detached<S: AsRef<std::ffi::OsStr>>(
        &self,
        program: &Path,
        args: &[S],
        opts: &Opts<'_>,
    ) -> Result<()> {
        let out = tempfile::NamedTempFile::new()
            .map_err(|e| Error::io("cannot create a temporary file", std::env::temp_dir(), e))?;
        let file = |f: &tempfile::NamedTempFile| {
            f.reopen()
                .map_err(|e| Error::io("cannot open", f.path(), e))
        };
        self.refuse_root(program, opts)?;
        let mut cmd = self.command(program, args, opts);
        cmd.stdout(file(&out)?).stderr(file(&out)?);
        let rendered = render(program, args);
        tracing::debug!(command = %rendered, "running");
        let could_not_run = |e| {
            Error::io(
                format!("could not run {}", program_name(program)),
                program,
                e,
            )
        };
        let mut child = cmd.spawn().map_err(could_not_run)?;
        crate::exec::interrupt::set_child(child.id());
        let status = child.wait();
        crate::exec::interrupt::clear_child();
        let status = status.map_err(could_not_run)?;
        let text = std::fs::read_to_string(out.path()).unwrap_or_default();
        let log = self.log_text(opts.log_name.unwrap_or("service"), &rendered, status, &text);
        if status.success() {
            Ok(())
        } else {
            Err(Error::Command {
                program: program_name(program),
                command: rendered,
                status: status.to_string(),
                stderr_tail: last_lines(&text, 15),
                log,
            })
        }
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
        self.refuse_root(program, opts)?;
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
        crate::exec::interrupt::set_child(child.id());
        let output = match opts.on_output {
            None => child.wait_with_output(),
            Some(f) => wait_streaming(child, f),
        };
        crate::exec::interrupt::clear_child();
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
        let stem = name.map_or_else(|| program_name(program), str::to_string);
        let mut body = String::from("--- stdout ---\n");
        body.push_str(&String::from_utf8_lossy(&output.stdout));
        body.push_str("\n--- stderr ---\n");
        body.push_str(&String::from_utf8_lossy(&output.stderr));
        self.log_text(&stem, rendered, output.status, &body)
    }

    /// Only service managers and the user's hooks run as root: whatever owner this runner
    /// was given, a PostgreSQL program never does.
    fn refuse_root(&self, program: &Path, opts: &Opts<'_>) -> Result<()> {
        if !opts.as_invoker && nix::unistd::geteuid().is_root() && self.owner.uid == 0 {
            return Err(Error::RunAsRoot {
                program: program_name(program),
            });
        }
        Ok(())
    }

    /// Writes the log of one finished run: the command, its exit status and `body`.
    pub(crate) fn log_text(
        &self,
        stem: &str,
        rendered: &str,
        status: std::process::ExitStatus,
        body: &str,
    ) -> Option<PathBuf> {
        let dir = self.log_dir.as_ref()?;
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let path = dir.join(format!("{:03}-{}-{stem}.log", n, std::process::id()));
        let mut text = format!("$ {rendered}\n");
        let _ = writeln!(text, "exit: {status}");
        text.push_str(body);
        // The log directory is the owner's: its files are written as the owner.
        match crate::exec::ownerfs::write(&self.owner, &path, text.as_bytes(), 0o600) {
            Ok(()) => Some(path),
            Err(e) => {
                tracing::warn!("could not write log {}: {e}", path.display());
                None
            }
        }
    }
}

/// Waits for `child` while passing its output, as it comes, to `on_output`.
fn wait_streaming(
    mut child: std::process::Child,
    on_output: &(dyn Fn(&str) + Sync),
) -> std::io::Result<Output> {
    fn pump(mut from: impl std::io::Read, on_output: &(dyn Fn(&str) + Sync)) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 8192];
        // Where the line being written starts in `all`.
        let mut line_start = 0;
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            // Every line completed by this read, in order (phase timings need each one),
            // then the line being written, if any; a line may thus be passed twice.
            let pass = |bytes: &[u8]| {
                let line = String::from_utf8_lossy(bytes);
                if !line.trim().is_empty() {
                    on_output(line.trim_end());
                }
            };
            if let Some(i) = all[line_start..].iter().rposition(|&b| b == b'\n') {
                let end = line_start + i + 1;
                all[line_start..end - 1]
                    .split(|&b| b == b'\n')
                    .for_each(pass);
                line_start = end;
            }
            // A line without end: only its latest part.
            line_start = line_start.max(all.len().saturating_sub(4096));
            pass(&all[line_start..]);
            if all.len() > 1 << 20 {
                // Long outputs: keep the memory bounded; the tail is what errors quote.
                let cut = all.len() - (1 << 19);
                all.drain(..cut);
                line_start = line_start.saturating_sub(cut);
            }
        }
        all
    }
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (out, err) = std::thread::scope(|s| {
        let o = s.spawn(|| stdout.map(|r| pump(r, on_output)).unwrap_or_default());
        let e = s.spawn(|| stderr.map(|r| pump(r, on_output)).unwrap_or_default());
        (o.join().unwrap_or_default(), e.join().unwrap_or_default())
    });
    let status = child.wait()?;
    Ok(Output {
        status,
        stdout: out,
        stderr: err,
    })
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
    fn ld_preload_passes_only_for_nss_wrapper() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let keys = |v: Vec<(&'static str, std::ffi::OsString)>| {
            v.into_iter().map(|(k, _)| k).collect::<Vec<_>>()
        };
        let wrapped = env(&[
            ("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so"),
            ("NSS_WRAPPER_PASSWD", "/tmp/passwd"),
        ]);
        assert_eq!(
            keys(pass_through(wrapped)),
            ["LD_PRELOAD", "NSS_WRAPPER_PASSWD"]
        );
        let other = env(&[
            ("LD_PRELOAD", "/tmp/evil.so /usr/lib/libnss_wrapper.so"),
            ("NSS_WRAPPER_PASSWD", "/tmp/passwd"),
        ]);
        assert_eq!(keys(pass_through(other)), ["NSS_WRAPPER_PASSWD"]);
        let alone = env(&[("LD_PRELOAD", "/usr/lib/libnss_wrapper.so"), ("TZ", "UTC")]);
        assert_eq!(keys(pass_through(alone)), ["TZ"]);
    }

    #[test]
    fn last_lines_skips_blanks() {
        assert_eq!(last_lines("a\n\nb\nc\n\n", 2), "b\nc");
    }
}
