//! `pgleap finalize`: once the new cluster is healthy, remove the old data directory and the
//! old major's tablespace subdirectories, and say how much space that freed.
//!
//! Invariant: nothing is removed unless the journal says `done` and the new cluster answers
//! a query with the new major; without `--yes` it asks on a terminal and refuses without one.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
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
use crate::ui::report::Ui;

pub(crate) fn execute(args: &ConfirmArgs) -> Result<()> {
    let ui = Ui { json: args.json };
    let (_lock, mut j) = super::locked_journal(&args.target)?;
    let plan = j.record.plan.clone();
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
    let p = Prepared::from_plan(plan.clone())?;
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
    let targets = old_paths(&p);
    let freed = freed_bytes(&targets);
    if !args.yes {
        confirm(&targets, freed)?;
    }
    for t in &targets {
        std::fs::remove_dir_all(t).map_err(|e| Error::io("cannot remove", t, e))?;
        ui.line(&format!("  removed {}", t.display()));
    }
    j.set_state(State::Finalized)?;
    ui.line(&format!(
        "finalized: freed {}; the upgrade to PostgreSQL {} is complete.",
        human(freed),
        plan.new.major
    ));
    ui.json(&json!({ "ok": true, "removed": targets, "freed_bytes": freed }));
    Ok(())
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

/// The old data directory, its configuration directory when apart (Debian's
/// /etc/postgresql/N/NAME, as pg_dropcluster removes it), and the old major's subdirectory
/// of each tablespace.
fn old_paths(p: &Prepared) -> Vec<PathBuf> {
    let mut out = vec![p.plan.old.datadir.clone()];
    out.extend(p.plan.old.confdir.iter().filter(|c| c.exists()).cloned());
    let prefix = format!("PG_{}_", p.plan.old.major);
    for t in &p.plan.tablespaces {
        if let Ok(rd) = std::fs::read_dir(t) {
            out.extend(
                rd.filter_map(std::result::Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                    .map(|e| e.path()),
            );
        }
    }
    out
}

/// Bytes freed by removing `paths`: files hard-linked into the new cluster (link mode) stay.
fn freed_bytes(paths: &[PathBuf]) -> u64 {
    paths
        .iter()
        .flat_map(|p| {
            walkdir::WalkDir::new(p)
                .into_iter()
                .filter_map(std::result::Result::ok)
        })
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file() && m.nlink() == 1)
        .map(|m| m.len())
        .sum()
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
    eprint!(
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
