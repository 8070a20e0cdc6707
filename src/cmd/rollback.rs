//! `pgleap rollback`: go back to the old cluster while that is possible, refusing to discard
//! what clients wrote to the new cluster unless told to (`--discard-new-writes`).

use serde_json::json;

use crate::cli::RollbackArgs;
use crate::error::Result;
use crate::plan::prepare::Prepared;
use crate::state::journal::State;
use crate::steps::undo::{self, Discard};
use crate::ui::report::Ui;

pub(crate) fn execute(rargs: &RollbackArgs) -> Result<()> {
    let args = &rargs.confirm;
    let ui = Ui { json: args.json };
    let (_lock, mut j) = super::locked_journal(&args.target)?;
    if j.record.state == State::RolledBack {
        ui.line("already rolled back: the old cluster is back.");
        ui.json(&json!({ "ok": true, "state": j.record.state, "notes": [] }));
        return Ok(());
    }
    if let Some(f) = undo::impossible(&j) {
        return Err(f.into());
    }
    let plan = super::verified_plan(
        &args.target,
        args.stop_command.as_deref(),
        args.start_command.as_deref(),
        &mut j,
    )?;
    let p = Prepared::from_plan(plan)?;
    if !rargs.discard_new_writes {
        if let Some(f) = crate::steps::crossing::lost_writes(&p, &j)? {
            return Err(f.into());
        }
    }
    let discard = if args.yes {
        Discard::Remove
    } else {
        Discard::MoveAside
    };
    let paused = j.record.paused_for_standbys && j.record.state < State::NewStarted;
    let mut notes = undo::roll_back(&p, &mut j, discard, &p.plan.work_dir.join("logs"))?;
    if paused {
        notes.push("the upgrade was paused for the standbys' rsync: a standby rsynced from the upgraded primary meanwhile no longer matches the old one; rebuild it from a base backup of the old primary".into());
    }
    for n in &notes {
        ui.line(&format!("  {n}"));
    }
    ui.line(&format!(
        "rolled back: {} is the cluster again.",
        p.plan.old.datadir.display()
    ));
    ui.json(&json!({ "ok": true, "state": j.record.state, "notes": notes }));
    Ok(())
}
