//! After the window: ANALYZE while clients are served (18: only what pg_upgrade did not
//! carry). A failure is a warning with the command to run.

use std::path::Path;

use crate::error::{Error, Finding, Result};
use crate::inspect::db;
use crate::state::journal::State;

use super::step::{Phase, Run, Step, Undoing, superuser};

pub(crate) struct Analyze;

impl Step for Analyze {
    fn name(&self) -> &'static str {
        "analyze"
    }
    fn reaches(&self) -> State {
        State::Analyzed
    }
    fn phase(&self) -> Phase {
        Phase::After
    }
    fn writes_new(&self) -> bool {
        true
    }

    fn run(&self, run: &mut Run<'_>) -> Result<()> {
        let socket = run.new_server()?;
        analyze(self, run, &socket)
    }

    /// Nothing outside the new cluster: its statistics are discarded with it.
    fn undo(&self, _u: &mut Undoing<'_>) -> Result<()> {
        Ok(())
    }
}

/// ANALYZE while clients are served; a failure is a warning with the command to run.
fn analyze(step: &Analyze, run: &mut Run<'_>, socket: &Path) -> Result<()> {
    let p = run.p;
    if !p.plan.analyze {
        return run.journal.set_state(State::Analyzed);
    }
    // 18: pg_upgrade carries optimizer statistics; only what it did not carry is missing.
    let missing_only = p.new.major >= 18;
    let what = if missing_only {
        "relations without statistics in stages (minimal statistics first), then every relation"
    } else {
        "all relations, in stages (minimal statistics first)"
    };
    let target = db::Target::new(
        socket,
        p.plan.new.port,
        vec![superuser(p), p.runner.owner().name.clone()],
    );
    let jobs = p.plan.jobs.to_string();
    // Parallel over relations across every database, at most --jobs sessions at once.
    let mut req = vec!["analyze", "--jobs", jobs.as_str(), "--stages"];
    if missing_only {
        req.push("--missing-only");
    }
    let progress = crate::ui::progress::Progress::new("analyze");
    let on_output = |line: &str| {
        if let Some(rest) = line.strip_prefix("analyze ") {
            if rest.contains(" done after ") {
                progress.milestone(rest);
            } else {
                progress.detail(rest);
            }
        }
    };
    let result = run.step(step, what, |r| {
        let answer = db::call_with_progress::<db::AnalyzeReport>(
            &r.p.runner,
            &req,
            &target,
            Some(&on_output),
        );
        progress.finish();
        answer
    });
    match result {
        Ok(a) => {
            run.ui.line(&format!(
                "      analyzed {} relations in {} databases{}",
                a.relations,
                a.databases,
                stage_times(&a.stage_seconds)
            ));
            // For pgleap status, later.
            run.journal.record.analyze = Some(a.clone());
            run.journal.write()?;
            run.analyzed = Some(a);
            Ok(())
        }
        Err(e @ Error::Interrupted { .. }) => Err(e),
        Err(e) => {
            run.warnings.push(Finding::warning(
                "analyze-failed",
                format!("ANALYZE failed: {e}"),
                if missing_only {
                    "Run it yourself: vacuumdb --all --analyze-in-stages --missing-stats-only, then vacuumdb --all --analyze-only".to_string()
                } else {
                    "Run it yourself: vacuumdb --all --analyze-in-stages".to_string()
                },
            ));
            run.journal.set_state(State::Analyzed)
        }
    }
}

/// "; minimal statistics everywhere after 1.2s, medium after 2.0s, full after 4.1s".
pub(crate) fn stage_times(seconds: &[f64]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for (n, t) in seconds.iter().enumerate() {
        let what = crate::inspect::analyze::stage_meaning(n, seconds.len());
        let what = if n == 0 {
            what
        } else {
            what.trim_end_matches(" everywhere")
                .trim_end_matches(" statistics")
        };
        let _ = write!(
            s,
            "{}{what} after {t:.1}s",
            if n == 0 { ": " } else { ", " }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn stage_times_say_when_each_stage_covered_everything() {
        assert_eq!(
            super::stage_times(&[1.25, 2.0, 4.1]),
            ": minimal statistics everywhere after 1.2s, medium after 2.0s, full after 4.1s"
        );
        assert_eq!(
            super::stage_times(&[3.0]),
            ": full statistics everywhere after 3.0s"
        );
        assert_eq!(super::stage_times(&[]), "");
    }
}
