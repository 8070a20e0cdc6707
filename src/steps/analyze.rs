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
        "relations without statistics, in stages"
    } else {
        "all relations, in stages (minimal statistics first)"
    };
    let target = db::Target::new(
        socket,
        p.plan.new.port,
        vec![superuser(p), p.runner.owner().name.clone()],
    );
    let jobs = p.plan.jobs.to_string();
    let mut req = vec!["analyze", "--jobs", jobs.as_str(), "--stages"];
    if missing_only {
        req.push("--missing-only");
    }
    let progress = crate::ui::progress::Progress::new("analyze");
    let on_output = |line: &str| {
        if let Some(rest) = line.strip_prefix("analyze ") {
            progress.detail(rest);
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
                "      analyzed {} relations in {} databases",
                a.relations, a.databases
            ));
            run.analyzed = Some(a);
            Ok(())
        }
        Err(e @ Error::Interrupted { .. }) => Err(e),
        Err(e) => {
            run.warnings.push(Finding::warning(
                "analyze-failed",
                format!("ANALYZE failed: {e}"),
                format!(
                    "Run it yourself: vacuumdb --all --analyze-in-stages{}",
                    if missing_only {
                        " --missing-stats-only"
                    } else {
                        ""
                    }
                ),
            ));
            run.journal.set_state(State::Analyzed)
        }
    }
}
