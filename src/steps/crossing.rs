//! What happened to the new cluster after pg_upgrade: whether a server ever ran on it (in
//! link and swap mode, the point of no return) and how many transactions clients ran on it
//! (what a rollback would discard).
//!
//! Invariant: judged from the new data directory itself (its `postmaster.pid` and
//! `pg_control`, or the live server) against what the journal recorded when pg_upgrade
//! finished and when pgleap's own work on the new cluster ended, never from the journal's
//! intentions alone.

use std::path::PathBuf;

use crate::error::{Finding, Result};
use crate::exec::postmaster::{self, Liveness};
use crate::exec::server;
use crate::inspect::{cluster, db};
use crate::plan::prepare::Prepared;
use crate::state::journal::{Journal, State};

/// True when a server has run on the new data directory since pg_upgrade finished: its
/// `postmaster.pid` exists, `pg_control` no longer says "shut down", or its latest checkpoint
/// moved from where pg_upgrade left it. A start that failed before the postmaster got going
/// (a port in use) leaves none of these.
pub(crate) fn new_has_run(p: &Prepared, j: &Journal) -> Result<bool> {
    let new = &p.plan.new.datadir;
    if new.join("postmaster.pid").exists() {
        return Ok(true);
    }
    if !new.join("global/pg_control").exists() {
        return Ok(false);
    }
    let c = cluster::control_data_of(&p.runner, &p.new, new)?;
    let moved = j
        .record
        .new_checkpoint
        .as_ref()
        .is_some_and(|at| *at != c.checkpoint);
    Ok(!c.cleanly_shut_down() || moved)
}

/// Where pg_upgrade left the new cluster's latest checkpoint (journaled with its end).
pub(crate) fn new_checkpoint(p: &Prepared) -> Result<String> {
    Ok(cluster::control_data_of(&p.runner, &p.new, &p.plan.new.datadir)?.checkpoint)
}

fn users(p: &Prepared) -> Vec<String> {
    let owner = p.runner.owner().name.clone();
    let su = p
        .plan
        .initdb
        .as_ref()
        .map_or_else(|| owner.clone(), |o| o.superuser.clone());
    vec![su, owner]
}

/// The new cluster's next transaction id: asked of its server when one runs, else read from
/// `pg_control` after a clean shutdown; `None` when it cannot be known (not shut down
/// cleanly).
pub(crate) fn next_xid(p: &Prepared) -> Result<Option<u64>> {
    let new = &p.plan.new.datadir;
    if let Liveness::Running(pm) = postmaster::liveness(new) {
        let socket = pm.socket_dir.unwrap_or_else(|| PathBuf::from("/tmp"));
        let target = db::Target::new(&socket, pm.port.unwrap_or(p.plan.new.port), users(p));
        return db::call::<u64>(&p.runner, &["next-xid"], &target).map(Some);
    }
    let c = cluster::control_data_of(&p.runner, &p.new, new)?;
    Ok(c.next_xid.filter(|_| c.cleanly_shut_down()))
}

/// A refusal when clients have run transactions on the new cluster since pgleap finished
/// with it (copying modes keep the old cluster, so rollback is possible but discards them).
/// `None` when nothing would be lost, when the new cluster never went live, or when the
/// journal predates the record.
pub(crate) fn lost_writes(p: &Prepared, j: &Journal) -> Result<Option<Finding>> {
    let Some(base) = j.record.new_next_xid else {
        return Ok(None);
    };
    let fix = "Keep the new cluster, or save what was written to it first (pg_dump); pass --discard-new-writes to roll back anyway and lose it";
    let Some(now) = next_xid(p)? else {
        return Ok(Some(Finding::error(
            "new-writes-unknown",
            format!(
                "the new cluster at {} was not shut down cleanly, so pgleap cannot tell how many transactions were written to it since the upgrade; rolling back discards them",
                p.plan.new.datadir.display()
            ),
            fix,
        )));
    };
    let n = now.saturating_sub(base);
    if n == 0 || only_pgleap_wrote(p, j) {
        return Ok(None);
    }
    // A step of pgleap's own that was interrupted wrote too (ANALYZE updates statistics).
    let own = match j.record.running.as_deref() {
        Some(s @ ("update-extensions" | "analyze")) => {
            format!(", counting those of pgleap's own interrupted {s} step")
        }
        _ => String::new(),
    };
    Ok(Some(Finding::error(
        "new-writes",
        format!(
            "the new cluster at {} has run {n} writing transaction{} since the upgrade finished (next transaction id {now}, was {base}{own}); rolling back would lose {}",
            p.plan.new.datadir.display(),
            if n == 1 { "" } else { "s" },
            if n == 1 { "it" } else { "them" }
        ),
        fix,
    )))
}

/// True when every transaction on the new cluster since pgleap last counted them must be
/// pgleap's own: pgleap was stopped inside its own work on the new cluster (extension
/// updates, collation repairs, ANALYZE) before handing it over, and the server still runs
/// fenced as pgleap started it: no TCP listener, its socket in a private directory of
/// pgleap's that only the owner can reach. A server that is down proves nothing (somebody
/// may have started it with its real settings in between), nor does a live start.
fn only_pgleap_wrote(p: &Prepared, j: &Journal) -> bool {
    let own_step = matches!(
        j.record.running.as_deref(),
        Some("update-extensions" | "collations" | "analyze")
    );
    let new = &p.plan.new.datadir;
    let fenced = match postmaster::liveness(new) {
        Liveness::Running(pm) => {
            pm.socket_dir.as_deref().is_some_and(server::is_fence_dir)
                && postmaster::tcp_closed(new)
        }
        _ => false,
    };
    own_step && j.record.state < State::Done && fenced
}
