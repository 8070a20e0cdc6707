//! Putting the old cluster back as it was found. Used by `pgleap rollback`, by the automatic
//! rollback when a step fails before the point of no return, and by resume (which first
//! undoes a step that was interrupted midway, then redoes it).
//!
//! Invariant: the old data directory is only touched to undo what pg_upgrade did to it
//! (link mode renames `global/pg_control` to `pg_control.old`); the new cluster's files are
//! moved aside, or removed only when the user said `--yes`.

use std::path::{Path, PathBuf};

use crate::error::Finding;
use crate::error::{Error, Result};
use crate::exec::ownerfs;
use crate::exec::postmaster::{self, Liveness};
use crate::exec::process::Owner;
use crate::exec::server;
use crate::plan::Mode;
use crate::plan::prepare::Prepared;
use crate::state::identity;
use crate::state::journal::{Journal, State};
use crate::steps::order::{ORDER, touched};
use crate::steps::servers::{self, Which};
use crate::steps::step::Undoing;

/// What happens to the new cluster's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Discard {
    /// Rename to `<name>.rolled-back-<time>`, for inspection.
    MoveAside,
    Remove,
}

/// Why rollback is impossible, or `None` when it is possible.
pub(crate) fn impossible(j: &Journal) -> Option<Finding> {
    let r = &j.record;
    let mode = r.plan.mode.name();
    if r.state == State::Finalized {
        return Some(Finding::error(
            "finalized",
            "the upgrade was finalized: the old data directory has been removed",
            "Restore the old cluster from a backup if you need it",
        ));
    }
    if r.point_of_no_return {
        return Some(Finding::error(
            "point-of-no-return",
            format!(
                "the new cluster has started after a --{mode} upgrade: it shares its data files with the old cluster and has changed them, so the old cluster cannot be brought back"
            ),
            "To go back to the old major, restore a backup taken before the upgrade, or dump the new cluster (pg_dumpall) and restore it into a fresh cluster of the old major",
        ));
    }
    let swap_started = r.plan.mode == Mode::Swap
        && (r.state >= State::Upgraded || r.running.as_deref() == Some("pg_upgrade"));
    if swap_started && r.state < State::RolledBack {
        return Some(Finding::error(
            "swap-started",
            "pg_upgrade --swap has moved the old cluster's files into the new one; the old cluster cannot be restored",
            "Resume the upgrade with pgleap upgrade, or restore a backup",
        ));
    }
    None
}

/// Undoes everything the upgrade did, leaving the old cluster as it was (running again if it
/// was running) and the journal in `rolled-back`. Returns notes on what was done.
///
/// The old cluster comes first: each step that finished or was interrupted is undone, newest
/// first (servers stopped, `pg_control` restored, boot restored), the old server started if
/// it was running, the journal marked; only then is the new cluster discarded, and a failure
/// there (a mount point inside it, EXDEV, EBUSY) becomes a note, never a down old server.
pub(crate) fn roll_back(
    p: &Prepared,
    j: &mut Journal,
    discard: Discard,
    log_dir: &Path,
) -> Result<Vec<String>> {
    let shares_files = !p.plan.mode.old_survives_start() && p.plan.mode != Mode::Swap;
    if shares_files
        && !j.record.point_of_no_return
        && j.record.state >= State::Upgraded
        && j.record.state < State::RolledBack
        && crate::steps::crossing::new_has_run(p, j)?
    {
        // pgleap died while starting it, or someone else started it: its files are changed.
        j.record.point_of_no_return = true;
        j.write()?;
    }
    if let Some(f) = impossible(j) {
        return Err(Error::Refused { findings: vec![f] });
    }
    // Proofs first: a refusal here has changed nothing.
    let targets = Targets::proven(p, j)?;
    let mut notes = undo_steps(p, j)?;
    notes.extend(crate::steps::fence::lift(p, j)?);
    notes.push(restart_old(p, j, log_dir)?);
    notes.extend(crate::ui::replication::rollback_notes(
        &p.plan,
        &j.record.replication.dropped,
    ));
    // A full disk may keep the journal from being written until the new cluster is gone:
    // then it is written again once that space is free.
    let marked = j.set_state(State::RolledBack);
    for (path, result) in targets.discard(p, j, discard) {
        notes.push(result.unwrap_or_else(|e| {
            format!(
                "could not {} {}: {e}; the old cluster is back, remove it yourself",
                discard.verb(),
                path.display()
            )
        }));
    }
    if let Err(e) = marked {
        j.set_state(State::RolledBack).map_err(|_| e)?;
    }
    Ok(notes)
}

/// Walks the order backwards, undoing each step that finished or was interrupted.
fn undo_steps(p: &Prepared, j: &Journal) -> Result<Vec<String>> {
    let mut u = Undoing {
        p,
        j,
        notes: Vec::new(),
    };
    for step in ORDER.iter().rev() {
        if touched(*step, j) {
            step.undo(&mut u)?;
        }
    }
    Ok(u.notes)
}

fn restart_old(p: &Prepared, j: &Journal, log_dir: &Path) -> Result<String> {
    let old = &p.plan.old.datadir;
    let running = matches!(postmaster::liveness(old), Liveness::Running(_));
    if j.record.old_was_running && !running {
        let log = server::logfile(log_dir, "old");
        let how = servers::start(p, Which::Old, &log)?;
        Ok(
            if p.plan.host.old.start == crate::host::service::Manager::PgCtl {
                format!("started the old server again (log: {})", log.display())
            } else {
                format!("started the old server again ({how})")
            },
        )
    } else if j.record.old_was_running {
        Ok("the old server is still running".into())
    } else {
        Ok("the old cluster is stopped, as it was before the upgrade".into())
    }
}

/// Undoes the new cluster and pg_upgrade's change to the old one, without starting the old
/// server: undoes each step that finished or was interrupted (stopping servers pgleap or
/// pg_upgrade left running, restoring `pg_control`), then discards the new data directory
/// and the new major's tablespace subdirectories, each only once it has proved to be this
/// upgrade's.
pub(crate) fn undo_new(p: &Prepared, j: &Journal, discard: Discard) -> Result<Vec<String>> {
    let targets = Targets::proven(p, j)?;
    let mut notes = undo_steps(p, j)?;
    for (_, result) in targets.discard(p, j, discard) {
        notes.push(result?);
    }
    Ok(notes)
}

/// What a rollback may discard, each proven to be this upgrade's.
struct Targets {
    new: Option<PathBuf>,
    /// The new cluster's own WAL directory (`initdb --waldir`), proven by the new data
    /// directory's `pg_wal` link pointing at it.
    waldir: Option<PathBuf>,
    tablespaces: Vec<PathBuf>,
    confdir: Option<PathBuf>,
}

impl Targets {
    fn proven(p: &Prepared, j: &Journal) -> Result<Targets> {
        let id = &j.record.identity;
        let new = &p.plan.new.datadir;
        let new = if std::fs::symlink_metadata(new).is_ok() {
            let initialized = j.record.state >= State::NewInitialized;
            identity::prove_new(id, new, initialized)?;
            Some(new.clone())
        } else {
            None
        };
        // Locations from the old cluster's own pg_tblspc links, not from the journal.
        let locations: Vec<PathBuf> = p
            .cluster
            .tablespaces
            .iter()
            .map(|t| t.location.clone())
            .collect();
        let tablespaces = identity::new_tablespace_dirs(id, p.plan.new.major, &locations)
            .into_iter()
            .filter(|d| std::fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()))
            .collect();
        let confdir = p.plan.new.confdir.clone().filter(|c| c.exists());
        if let Some(c) = &confdir {
            // Debian's /etc/postgresql/<new major>/<name>, and nothing else.
            let expected = p
                .plan
                .host
                .root
                .join(format!("etc/postgresql/{}", p.plan.new.major));
            if c.parent() != Some(expected.as_path()) || c.is_symlink() {
                return Err(Error::Refused {
                    findings: vec![Finding::error(
                        "identity",
                        format!(
                            "{} is not a configuration directory of PostgreSQL {} ({}/NAME); pgleap removes only what it can prove it made",
                            c.display(),
                            p.plan.new.major,
                            expected.display()
                        ),
                        "Find out who changed the journal",
                    )],
                });
            }
        }
        let waldir = p.plan.new.waldir.clone().filter(|w| {
            new.as_ref().is_some_and(|n| {
                std::fs::read_link(n.join("pg_wal")).is_ok_and(|l| {
                    crate::inspect::paths::canonical(&l) == crate::inspect::paths::canonical(w)
                })
            })
        });
        Ok(Targets {
            new,
            waldir,
            tablespaces,
            confdir,
        })
    }

    /// Discards every target, returning each one's note or error.
    fn discard(
        &self,
        p: &Prepared,
        j: &Journal,
        discard: Discard,
    ) -> Vec<(PathBuf, Result<String>)> {
        let owner = p.runner.owner();
        let stamp = crate::state::journal::now();
        let mut out = Vec::new();
        for t in &self.tablespaces {
            out.push((t.clone(), discard_path(owner, t, discard, stamp)));
        }
        if let Some(new) = &self.new {
            let linked = p.plan.mode == Mode::Link
                && (j.record.state >= State::Upgraded
                    || j.record.running.as_deref() == Some("pg_upgrade"));
            let result = if linked && discard == Discard::MoveAside {
                disable_linked(owner, new).and_then(|note| {
                    discard_path(owner, new, discard, stamp).map(|n| format!("{n}; {note}"))
                })
            } else {
                discard_path(owner, new, discard, stamp)
            };
            out.push((new.clone(), result));
        }
        if let Some(wal) = &self.waldir {
            out.push((wal.clone(), discard_path(owner, wal, discard, stamp)));
        }
        if let Some(confdir) = &self.confdir {
            let new = &p.plan.new.datadir;
            out.push((
                confdir.clone(),
                discard_confdir(owner, confdir, new, discard, stamp),
            ));
        }
        out
    }
}

impl Discard {
    fn verb(self) -> &'static str {
        match self {
            Discard::MoveAside => "move aside",
            Discard::Remove => "remove",
        }
    }
}

/// Link mode: the new cluster's data files are hard links into the restored old cluster.
/// Kept for inspection, it must not be startable: its control file is renamed first.
fn disable_linked(owner: &Owner, new: &Path) -> Result<String> {
    let control = new.join("global/pg_control");
    if !control.exists() {
        return Ok(String::new());
    }
    let disabled = new.join("global/pg_control.disabled");
    ownerfs::rename_as(owner, &control, &disabled)?;
    Ok("its global/pg_control was renamed to pg_control.disabled: its data files are hard links into the old cluster, and starting it would change the old cluster's files".into())
}

/// Debian's new configuration directory. Moved aside, it goes beside the moved-aside data
/// directory rather than staying in /etc/postgresql/N/, where postgresql-common would list
/// it as a cluster.
fn discard_confdir(
    owner: &Owner,
    confdir: &Path,
    new: &Path,
    discard: Discard,
    stamp: u64,
) -> Result<String> {
    let note = match discard {
        Discard::Remove => {
            ownerfs::remove_tree_as(owner, confdir)?;
            format!("removed {}", confdir.display())
        }
        Discard::MoveAside => {
            let mut to = aside(new, stamp).into_os_string();
            to.push(".config");
            let to = PathBuf::from(to);
            ownerfs::move_tree_as(owner, confdir, &to)?;
            format!("moved {} to {}", confdir.display(), to.display())
        }
    };
    // /etc/postgresql/17 when it held only this cluster (root's directory: root removes
    // it, and only when empty).
    if let Some(parent) = confdir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    Ok(note)
}

fn discard_path(owner: &Owner, path: &Path, discard: Discard, stamp: u64) -> Result<String> {
    match discard {
        Discard::Remove => {
            ownerfs::remove_tree_where(owner, path)?;
            Ok(format!("removed {}", path.display()))
        }
        Discard::MoveAside => {
            let to = aside(path, stamp);
            ownerfs::rename_where(owner, path, &to)?;
            Ok(format!("moved {} to {}", path.display(), to.display()))
        }
    }
}

pub(crate) fn aside(path: &Path, stamp: u64) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "data".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!("{name}.rolled-back-{stamp}"))
}
