//! Every way pgleap can fail, each carrying the paths and versions involved and a fix.
//!
//! The exit code is decided here, once: 1 failed while running, 2 usage, 3 refused by preflight.
//! A refusal carries `Finding`s: what a check saw, each an error (refuse) or a warning, with
//! the fix to apply.

use std::path::PathBuf;

use serde::Serialize;

/// Exit codes documented in `--help` and the README.
pub(crate) const EXIT_FAILED: u8 = 1;
pub(crate) const EXIT_USAGE: u8 = 2;
pub(crate) const EXIT_REFUSED: u8 = 3;
/// Exit code after an interrupt (128 + SIGINT, as shells report it).
pub(crate) const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The preflight found one or more errors; nothing on disk was changed.
    #[error("{}", refused_message(findings))]
    Refused { findings: Vec<Finding> },

    /// A refusal that came after pgleap had prepared the new cluster (pg_upgrade --check):
    /// the old cluster is untouched and `note` says what was cleaned up and kept.
    #[error("{}", refused_after_message(findings, note))]
    RefusedAfterCleanup {
        findings: Vec<Finding>,
        note: String,
    },

    /// An external program failed.
    #[error(
        "{program} failed ({status}){}\n  command: {command}{}",
        tail_block(stderr_tail),
        log.as_ref().map(|l| format!("\n  log: {}", l.display())).unwrap_or_default()
    )]
    Command {
        program: String,
        command: String,
        status: String,
        stderr_tail: String,
        log: Option<PathBuf>,
    },

    /// SIGINT or SIGTERM stopped the upgrade at a step boundary.
    #[error("interrupted by a signal before {before}")]
    Interrupted { before: String },

    #[error("{context}: {path}: {source}")]
    Io {
        context: String,
        path: PathBuf,
        source: std::io::Error,
    },

    /// A step failed; `state` says where the cluster stands and `next` what to run.
    #[error("{step} failed: {source}\n  state: {state}\n  next: {next}")]
    Step {
        step: String,
        state: String,
        next: String,
        source: Box<Error>,
    },

    /// A service manager or hook said it started a server, but none came up.
    #[error(
        "{how} returned, but no server runs on {} a minute later; see the server log of that service",
        datadir.display()
    )]
    ServerDidNotStart { how: String, datadir: PathBuf },

    /// A server started by a service manager or hook died before accepting connections.
    #[error(
        "the server started by {how} on {} stopped before accepting connections; see its log",
        datadir.display()
    )]
    ServerStoppedStarting { how: String, datadir: PathBuf },

    /// A rehearsal ran, but its upgraded copy differs from the copy (or its smoke queries
    /// failed): the report lists what.
    #[error("the rehearsal found {what}; the report lists them")]
    RehearsalFailed { what: String },

    /// A rehearsal stopped before its report: the old cluster was not touched.
    #[error(
        "the rehearsal stopped{}: {source}\nThe old cluster was not touched. {}",
        step.as_ref().map(|s| format!(" ({s} on the copy)")).unwrap_or_default(),
        if *kept {
            format!("The copy, its logs and its journal are kept in {} for a look; the next pgleap rehearse removes them.", scratch.display())
        } else {
            format!("{} was removed.", scratch.display())
        }
    )]
    RehearsalStopped {
        step: Option<String>,
        scratch: PathBuf,
        kept: bool,
        source: Box<Error>,
    },

    /// A `--stop-command` returned but the server kept running.
    #[error(
        "the stop command returned, but the {side} server at {} is still running a minute later",
        datadir.display()
    )]
    StopCommandIneffective {
        side: &'static str,
        datadir: PathBuf,
    },

    /// The old server stopped without a clean shutdown checkpoint.
    #[error("the old cluster did not shut down cleanly (pg_control state: {state})")]
    UncleanShutdown { datadir: PathBuf, state: String },

    /// `pg_controldata` printed something pgleap cannot read.
    #[error("could not parse pg_controldata output for {}", datadir.display())]
    ControlDataUnreadable { datadir: PathBuf },

    /// A single-user backend did not say who the bootstrap superuser is.
    #[error("postgres --single did not name the bootstrap superuser ({status}): {stderr_tail}")]
    BootstrapSuperuserUnknown {
        datadir: PathBuf,
        status: String,
        stderr_tail: String,
    },

    /// The plan lacks the old catalog's facts (a resumed plan made before they were read).
    #[error("the old cluster's initdb options are unknown")]
    InitdbOptionsUnknown,

    #[error("the old cluster's superuser is unknown")]
    SuperuserUnknown,

    /// The new server still rejects the carried configuration after commenting out what it
    /// named.
    #[error("the carried configuration still fails validation after 50 fixes")]
    ConfigNotAccepted { confdir: PathBuf },

    /// The new server answered with another major than the plan's.
    #[error("it answers as version {version}, not PostgreSQL {expected}")]
    WrongServerVersion { version: u32, expected: u32 },

    #[error("the journal {} is damaged: {source}", path.display())]
    JournalDamaged {
        path: PathBuf,
        source: serde_json::Error,
    },

    #[error("cannot encode the journal: {0}")]
    JournalEncode(serde_json::Error),

    #[error("systemctl is not installed")]
    SystemctlMissing,

    /// pgleap could not run itself as the cluster owner.
    #[error("cannot run pgleap {request} as the cluster owner: {source}")]
    OwnerRun {
        request: String,
        source: std::io::Error,
    },

    /// File work done as the cluster owner failed (see `exec::ownerfs`).
    #[error("as {owner}: {reason}")]
    AsOwner { owner: String, reason: String },

    /// Something the owner can plant stands where pgleap works: refused, naming it.
    #[error("{} {what}; pgleap does not follow it. Remove it and run pgleap again.", path.display())]
    Planted { path: PathBuf, what: String },

    /// A PostgreSQL program was about to run as root.
    #[error("refusing to run {program} as root: the cluster owner is uid 0")]
    RunAsRoot { program: String },

    /// A configuration file that is not text.
    #[error("{} is not UTF-8 text", path.display())]
    NotText { path: PathBuf },

    /// finalize stopped midway: what it removed before the failure.
    #[error("{source}\n  removed before that: {}", list_or_nothing(removed))]
    PartlyRemoved {
        source: Box<Error>,
        removed: Vec<PathBuf>,
    },

    #[error("cannot read {}: {source}", path.display())]
    Walk {
        path: PathBuf,
        source: walkdir::Error,
    },

    /// The `__db` helper's answer could not be read.
    #[error("could not parse the answer of pgleap __db {request}: {source}")]
    DbAnswer {
        request: String,
        source: serde_json::Error,
    },

    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),

    #[error("cannot encode the answer: {0}")]
    DbEncode(serde_json::Error),

    /// A database request failed; `detail` is the server's message.
    #[error("{what}: {detail}")]
    Database { what: String, detail: String },

    #[error("no role to connect as")]
    NoRole,

    #[error("an ANALYZE worker failed: {0}")]
    Worker(String),
}

fn refused_message(findings: &[Finding]) -> String {
    let errors: Vec<&Finding> = findings.iter().filter(|f| f.is_error()).collect();
    let mut out = String::from("refused:");
    if let [only] = errors.as_slice() {
        out.push(' ');
        out.push_str(&only.render());
    } else {
        for f in errors {
            out.push_str("\n  - ");
            out.push_str(&f.render().replace('\n', "\n    "));
        }
    }
    out.push_str("\nNothing was changed.");
    out
}

fn refused_after_message(findings: &[Finding], note: &str) -> String {
    let full = refused_message(findings);
    let body = full.strip_suffix("\nNothing was changed.").unwrap_or(&full);
    format!("{body}\n{note}")
}

fn list_or_nothing(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        "nothing".into()
    } else {
        let all: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        all.join(", ")
    }
}

fn tail_block(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        let indented: Vec<String> = tail.lines().map(|l| format!("  | {l}")).collect();
        format!(":\n{}", indented.join("\n"))
    }
}

/// A single finding that refuses on its own.
impl From<Finding> for Error {
    fn from(f: Finding) -> Error {
        Error::Refused { findings: vec![f] }
    }
}

impl Error {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Error::Refused { .. } | Error::RefusedAfterCleanup { .. } => EXIT_REFUSED,
            Error::Interrupted { .. } => EXIT_INTERRUPTED,
            Error::Step { source, .. } if matches!(**source, Error::Interrupted { .. }) => {
                EXIT_INTERRUPTED
            }
            Error::Step { source, .. } if matches!(**source, Error::Refused { .. }) => EXIT_REFUSED,
            Error::RehearsalStopped { source, .. } => source.exit_code(),
            _ => EXIT_FAILED,
        }
    }

    pub(crate) fn io(
        context: impl Into<String>,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            context: context.into(),
            path: path.into(),
            source,
        }
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Finding {
    pub(crate) severity: Severity,
    /// Stable identifier for scripts reading `--json`.
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) fix: String,
}

impl Finding {
    pub(crate) fn error(
        code: &'static str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            severity: Severity::Error,
            code,
            message: message.into(),
            fix: fix.into(),
        }
    }

    pub(crate) fn warning(
        code: &'static str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            severity: Severity::Warning,
            code,
            message: message.into(),
            fix: fix.into(),
        }
    }

    pub(crate) fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `message. fix` — the one-line form used in refusals.
    pub(crate) fn render(&self) -> String {
        if self.fix.is_empty() {
            self.message.clone()
        } else {
            format!("{}. {}", self.message.trim_end_matches('.'), self.fix)
        }
    }
}

/// Findings gathered by the checks, in the order they ran.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(transparent)]
pub(crate) struct Findings(pub(crate) Vec<Finding>);

impl Findings {
    pub(crate) fn push(&mut self, f: Finding) {
        self.0.push(f);
    }

    pub(crate) fn extend(&mut self, fs: impl IntoIterator<Item = Finding>) {
        self.0.extend(fs);
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.0.iter().any(Finding::is_error)
    }

    /// Refuses when any finding is an error.
    pub(crate) fn into_result(self) -> Result<Findings> {
        if self.has_errors() {
            Err(Error::Refused { findings: self.0 })
        } else {
            Ok(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_joins_message_and_fix() {
        let f = Finding::error(
            "x",
            "/data/17 exists and is not empty (3 entries).",
            "Remove it or pass --new-datadir.",
        );
        assert_eq!(
            f.render(),
            "/data/17 exists and is not empty (3 entries). Remove it or pass --new-datadir."
        );
    }

    #[test]
    fn warnings_do_not_refuse() {
        let mut fs = Findings::default();
        fs.push(Finding::warning("w", "careful", ""));
        assert!(fs.clone().into_result().is_ok());
        fs.push(Finding::error("e", "no", "fix it"));
        assert!(fs.into_result().is_err());
    }
}
