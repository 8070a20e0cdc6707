//! Findings: what the preflight saw, each an error (refuse) or a warning, with the fix to apply.
//!
//! Invariant: the preflight reads and never writes; every check that can refuse produces a
//! `Finding` rather than an early return, so the user sees all problems at once.

use serde::Serialize;

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

    pub(crate) fn has_errors(&self) -> bool {
        self.0.iter().any(Finding::is_error)
    }

    /// Refuses when any finding is an error.
    pub(crate) fn into_result(self) -> crate::error::Result<Findings> {
        if self.has_errors() {
            Err(crate::error::Error::Refused { findings: self.0 })
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
