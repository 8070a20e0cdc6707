//! `pgleap finalize`: once the new cluster is healthy, remove the old data directory, the
//! old major's tablespace subdirectories and WAL directory, and say how much space that freed
//! (what is removed, and what must stay, is decided in `removal`).
//!
//! Invariant: nothing is removed unless the journal says `done` and the new cluster answers
//! a query with the new major; without `--yes` it asks on a terminal and refuses without one.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::cli::ConfirmArgs;
use crate::error::Finding;
use crate::error::{Error, Result};
use crate::exec::postmaster::{self, Liveness};
use crate::exec::server::{self, Fence};
use crate::inspect::db;
use crate::inspect::space::human;
use crate::plan::prepare::Prepared;
use crate::state::journal::State;
use crate::steps::removal;
use crate::ui::report::Ui;

pub(crate) fn execute(args: &ConfirmArgs) -> Result<()> {
    let ui = Ui { json: args.json };
    let (_lock, mut j) = super::locked_journal(&args.target)?;
    match j.record.state {
        State::Finalized => {
            ui.line("already finalized.");
            ui.json(
                &json!({ "ok": true, "state": j.record.state, "removed": [], "freed_bytes": 0 }),
            );
            return Ok(());
        }
        State::Done => {}
        s => {
            return Err(Error::from(Finding::error(
                "not-done",
                format!("the upgrade is not finished (state: {})", s.name()),
                "Finish it with pgleap upgrade (or undo it with pgleap rollback) first",
            )));
        }
    }
    let plan = super::verified_plan(
        &args.target,
        args.stop_command.as_deref(),
        args.start_command.as_deref(),
        &mut j,
    )?;
    let p = Prepared::from_plan(plan.clone())?;
    provably_done_with(&p, &j)?;
    healthy(&p).map_err(|e| {
        Error::from(Finding::error(
            "new-unhealthy",
            format!(
                "the new cluster at {} is not healthy: {e}",
                plan.new.datadir.display()
            ),
            "Make it start and answer queries before removing the old cluster (see its log)",
        ))
    })?;
    let removal = removal::plan(&plan)?;
    let kept = removal.kept_inside();
    let freed = removal.freed_bytes();
    let mut targets = removal.targets.clone();
    targets.extend(removal.links.iter().cloned());
    if !args.yes {
        confirm(&targets, freed)?;
    }
    let owner = p.runner.owner();
    for (i, t) in removal.targets.iter().enumerate() {
        removal.remove(owner, t).map_err(|e| Error::PartlyRemoved {
            source: Box::new(e),
            removed: removal.targets[..i].to_vec(),
        })?;
        ui.line(&format!("  removed {}", t.display()));
    }
    removal.remove_links(owner)?;
    for l in &removal.links {
        ui.line(&format!("  removed the symlink {}", l.display()));
    }
    for k in &kept {
        ui.line(&format!(
            "  kept {}: the new cluster uses it (it lies inside the old cluster's directory)",
            k.display()
        ));
    }
    j.set_state(State::Finalized)?;
    ui.line(&format!(
        "finalized: freed {}; the upgrade to PostgreSQL {} is complete.",
        human(freed),
        plan.new.major
    ));
    ui.json(&json!({ "ok": true, "removed": targets, "kept": kept, "freed_bytes": freed }));
    Ok(())
}

/// Refuses unless removing the old cluster is provably safe: no server runs on it, it has
/// not started since pg_upgrade, both clusters are the ones the journal was bound to, the
/// paths to remove are the old cluster's own (from the host, not the journal) and neither
/// data directory lies inside the other.
fn provably_done_with(p: &Prepared, j: &crate::state::journal::Journal) -> Result<()> {
    let (old, new) = (&p.plan.old.datadir, &p.plan.new.datadir);
    if let Liveness::Running(pm) = postmaster::liveness(old) {
        return Err(refuse(
            "old-running",
            format!(
                "a server is running on {} (pid {}): finalize would delete its files under it",
                old.display(),
                pm.pid
            ),
            "Stop it (and move any writes it took to the new cluster) before finalize",
        ));
    }
    let id = &j.record.identity;
    if id.old_control_mtime.is_some()
        && crate::state::identity::control_mtime(old) != id.old_control_mtime
    {
        return Err(refuse(
            "old-started",
            format!(
                "{} was started after the upgrade (its global/pg_control changed since pg_upgrade finished): it may hold writes the new cluster lacks",
                old.display()
            ),
            "Check what was written to it; once sure it holds nothing you need, remove it yourself",
        ));
    }
    crate::state::identity::prove_old(id, old)?;
    crate::state::identity::prove_new(id, new, true)?;
    let (co, cn) = (
        std::fs::canonicalize(old).unwrap_or_else(|_| old.clone()),
        std::fs::canonicalize(new).unwrap_or_else(|_| new.clone()),
    );
    if cn.starts_with(&co) || co.starts_with(&cn) {
        return Err(refuse(
            "overlap",
            format!(
                "the new data directory {} and the old one {} overlap ({} and {})",
                new.display(),
                old.display(),
                cn.display(),
                co.display()
            ),
            "Remove what you no longer need by hand",
        ));
    }
    let on_disk: Vec<&Path> = p
        .cluster
        .tablespaces
        .iter()
        .map(|t| t.location.as_path())
        .collect();
    let foreign: Vec<String> = p
        .plan
        .tablespaces
        .iter()
        .filter(|t| !on_disk.contains(&t.as_path()))
        .map(|t| t.display().to_string())
        .collect();
    let confdir = p
        .plan
        .old
        .confdir
        .iter()
        .filter(|c| Some(c.as_path()) != p.plan.layout.confdir())
        .map(|c| c.display().to_string());
    let foreign: Vec<String> = foreign.into_iter().chain(confdir).collect();
    if !foreign.is_empty() {
        return Err(refuse(
            "journal-paths",
            format!(
                "the journal names paths that are not the old cluster's: {}",
                foreign.join(", ")
            ),
            "Find out who changed the journal; nothing was removed",
        ));
    }
    Ok(())
}

fn refuse(code: &'static str, message: String, fix: &str) -> Error {
    Error::from(Finding::error(code, message, fix))
}

/// The new cluster answers a query with the new major, started fenced if it is down.
fn healthy(p: &Prepared) -> Result<()> {
    let new = &p.plan.new.datadir;
    let users = vec![
        p.plan
            .initdb
            .as_ref()
            .map_or_else(|| p.runner.owner().name.clone(), |o| o.superuser.clone()),
        p.runner.owner().name.clone(),
    ];
    let version: u32 = if let Liveness::Running(pm) = postmaster::liveness(new) {
        let socket = pm.socket_dir.unwrap_or_else(|| PathBuf::from("/tmp"));
        db::call(
            &p.runner,
            &["ping"],
            &db::Target::new(&socket, pm.port.unwrap_or(p.plan.new.port), users),
        )?
    } else {
        let fence = Fence::new(p.runner.owner())?;
        let log = server::logfile(&p.plan.work_dir.join("logs"), "new-health");
        server::start(
            &p.runner,
            &p.new.bindir,
            &p.plan.new.conf_dir(),
            Some((&fence, p.plan.new.port)),
            &log,
        )?;
        let v = db::call(
            &p.runner,
            &["ping"],
            &db::Target::new(fence.socket_dir(), p.plan.new.port, users),
        );
        server::stop(&p.runner, &p.new.bindir, new)?;
        v?
    };
    if version / 10000 != p.plan.new.major {
        return Err(Error::WrongServerVersion {
            version,
            expected: p.plan.new.major,
        });
    }
    Ok(())
}

fn confirm(targets: &[PathBuf], freed: u64) -> Result<()> {
    let list: Vec<String> = targets.iter().map(|t| t.display().to_string()).collect();
    if !std::io::stdin().is_terminal() {
        return Err(Error::from(Finding::error(
            "confirm",
            format!(
                "finalize would delete {} ({})",
                list.join(", "),
                human(freed)
            ),
            "Run it on a terminal to confirm, or pass --yes",
        )));
    }
    let _ = write!(
        std::io::stderr(),
        "Delete {} and free {}? This cannot be undone. Type yes: ",
        list.join(", "),
        human(freed)
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::io("cannot read the answer", Path::new("/dev/stdin"), e))?;
    if answer.trim() == "yes" {
        Ok(())
    } else {
        Err(Error::from(Finding::error(
            "not-confirmed",
            "finalize was not confirmed",
            "Nothing was removed; run it again and type yes, or pass --yes",
        )))
    }
}
