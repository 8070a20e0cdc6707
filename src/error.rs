//! Every way pgleap can fail, each carrying the paths and versions involved and a fix.
//!
//! The exit code is decided here, once: 1 failed while running, 2 usage, 3 refused by preflight.

use std::path::PathBuf;

use crate::preflight::Finding;

/// Exit codes documented in `--help` and the README.
pub(crate) const EXIT_FAILED: u8 = 1;
pub(crate) const EXIT_USAGE: u8 = 2;
pub(crate) const EXIT_REFUSED: u8 = 3;

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

    #[error("{0}")]
    Other(String),
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

fn tail_block(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        let indented: Vec<String> = tail.lines().map(|l| format!("  | {l}")).collect();
        format!(":\n{}", indented.join("\n"))
    }
}

impl Error {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Error::Refused { .. } | Error::RefusedAfterCleanup { .. } => EXIT_REFUSED,
            Error::Interrupted { .. } => crate::exec::interrupt::EXIT_INTERRUPTED,
            Error::Step { source, .. } if matches!(**source, Error::Interrupted { .. }) => {
                crate::exec::interrupt::EXIT_INTERRUPTED
            }
            Error::Step { source, .. } if matches!(**source, Error::Refused { .. }) => EXIT_REFUSED,
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
