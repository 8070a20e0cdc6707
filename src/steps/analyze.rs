//! After the window: ANALYZE while clients are served (18: only what pg_upgrade did not
//! carry). A failure is a warning with the command to run.

use std::path::Path;

use crate::error::{Error, Finding, Result};
use crate::inspect::db;
use crate::state::journal::State;

use super::extensions::superuser;
use super::run::Run;

/// ANALYZE while clients are served; a failure is a warning with the command to run.
pub(crate) fn analyze(run: &mut Run<'_>, socket: &Path) -> Result<()> {
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
    let result = run.step("analyze", State::Analyzed, what, |r| {
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
