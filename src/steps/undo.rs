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
use crate::exec::postmaster::{self, Liveness};
use crate::exec::server;
use crate::plan::Mode;
use crate::plan::prepare::Prepared;
use crate::state::journal::{Journal, State};
use crate::steps::servers::{self, Which};

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
        return Err(f.into());
    }
    let mut notes = undo_new(p, j, discard)?;
    // Before the old server comes back: it may start at boot again.
    notes.extend(servers::restore_boot(p)?);
    let old = &p.plan.old.datadir;
    let running = matches!(postmaster::liveness(old), Liveness::Running(_));
    if j.record.old_was_running && !running {
        let log = server::logfile(log_dir, "old");
        let how = servers::start(p, Which::Old, &log)?;
        notes.push(
            if p.plan.host.old.start == crate::host::service::Manager::PgCtl {
                format!("started the old server again (log: {})", log.display())
            } else {
                format!("started the old server again ({how})")
            },
        );
    } else if j.record.old_was_running {
        notes.push("the old server is still running".into());
    } else {
        notes.push("the old cluster is stopped, as it was before the upgrade".into());
    }
    j.set_state(State::RolledBack)?;
    Ok(notes)
}

/// Undoes the new cluster and pg_upgrade's change to the old one, without starting the old
/// server: stops servers pgleap or pg_upgrade left running, restores `pg_control`, and
/// discards the new data directory and the new major's tablespace subdirectories.
pub(crate) fn undo_new(p: &Prepared, j: &Journal, discard: Discard) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let new = &p.plan.new.datadir;
    if matches!(postmaster::liveness(new), Liveness::Running(_)) {
        // Went live through its service manager, or was started fenced with pg_ctl.
        let live = j.record.old_was_running
            && !p.plan.leave_stopped
            && (j.record.state >= State::NewStarted
                || j.record.running.as_deref() == Some("start-new"));
        if live {
            if let Some(how) = servers::stop(p, Which::New)? {
                notes.push(format!("stopped the new server ({how})"));
            }
        } else {
            server::stop(&p.runner, &p.new.bindir, new)?;
            notes.push("stopped the new server".into());
        }
    }
    let old = &p.plan.old.datadir;
    // From stop-old on, a server on the old directory is one pg_upgrade started (or the
    // old one coming back): stop it before touching pg_control.
    let window =
        j.record.state >= State::OldStopped || j.record.running.as_deref() == Some("stop-old");
    if window && matches!(postmaster::liveness(old), Liveness::Running(_)) {
        server::stop(&p.runner, &p.old.bindir, old)?;
        notes.push("stopped a server left running on the old data directory".into());
    }
    if let Some(n) = restore_control(old)? {
        notes.push(n);
    }
    let stamp = crate::state::journal::now();
    let new_prefix = format!("PG_{}_", p.plan.new.major);
    for t in &p.plan.tablespaces {
        let Ok(rd) = std::fs::read_dir(t) else {
            continue;
        };
        for e in rd.filter_map(std::result::Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&new_prefix) && !name.contains(".rolled-back-") {
                notes.push(discard_path(&e.path(), discard, stamp)?);
            }
        }
    }
    if new.exists() {
        notes.push(discard_path(new, discard, stamp)?);
    }
    if let Some(wal) = p.plan.new.waldir.as_ref().filter(|w| w.exists()) {
        notes.push(discard_path(wal, discard, stamp)?);
    }
    if let Some(confdir) = p.plan.new.confdir.as_ref().filter(|c| c.exists()) {
        notes.push(discard_confdir(confdir, new, discard, stamp)?);
    }
    Ok(notes)
}

/// Debian's new configuration directory. Moved aside, it goes beside the moved-aside data
/// directory rather than staying in /etc/postgresql/N/, where postgresql-common would list
/// it as a cluster.
fn discard_confdir(confdir: &Path, new: &Path, discard: Discard, stamp: u64) -> Result<String> {
    let note = match discard {
        Discard::Remove => {
            std::fs::remove_dir_all(confdir).map_err(|e| Error::io("cannot remove", confdir, e))?;
            format!("removed {}", confdir.display())
        }
        Discard::MoveAside => {
            let mut to = aside(new, stamp).into_os_string();
            to.push(".config");
            let to = PathBuf::from(to);
            move_dir(confdir, &to)?;
            format!("moved {} to {}", confdir.display(), to.display())
        }
    };
    // /etc/postgresql/17 when it held only this cluster.
    if let Some(parent) = confdir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    Ok(note)
}

/// `rename`, or copy and remove across filesystems (/etc and /var often differ).
fn move_dir(from: &Path, to: &Path) -> Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => {
            copy_tree(from, to)?;
            std::fs::remove_dir_all(from).map_err(|e| Error::io("cannot remove", from, e))
        }
        Err(e) => Err(Error::io("cannot move aside", from, e)),
    }
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.map_err(|source| Error::Walk {
            path: from.to_path_buf(),
            source,
        })?;
        let rel = entry.path().strip_prefix(from).unwrap_or(entry.path());
        let target = to.join(rel);
        let meta = entry.metadata().map_err(|source| Error::Walk {
            path: entry.path().to_path_buf(),
            source,
        })?;
        if meta.is_dir() {
            std::fs::create_dir_all(&target)
                .map_err(|e| Error::io("cannot create directory", &target, e))?;
        } else {
            std::fs::copy(entry.path(), &target)
                .map_err(|e| Error::io("cannot copy", entry.path(), e))?;
        }
        let _ = nix::unistd::chown(&target, Some(meta.uid().into()), Some(meta.gid().into()));
    }
    Ok(())
}

/// Link mode: pg_upgrade disables the old cluster by renaming `global/pg_control`. While the
/// new cluster never started, the old data files are unchanged and renaming back restores it.
pub(crate) fn restore_control(old: &Path) -> Result<Option<String>> {
    let control = old.join("global/pg_control");
    let renamed = old.join("global/pg_control.old");
    if renamed.exists() && !control.exists() {
        std::fs::rename(&renamed, &control)
            .map_err(|e| Error::io("cannot restore pg_control", &renamed, e))?;
        return Ok(Some(
            "restored global/pg_control from pg_control.old".into(),
        ));
    }
    Ok(None)
}

fn discard_path(path: &Path, discard: Discard, stamp: u64) -> Result<String> {
    match discard {
        Discard::Remove => {
            std::fs::remove_dir_all(path).map_err(|e| Error::io("cannot remove", path, e))?;
            Ok(format!("removed {}", path.display()))
        }
        Discard::MoveAside => {
            let to = aside(path, stamp);
            std::fs::rename(path, &to).map_err(|e| Error::io("cannot move aside", path, e))?;
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
