//! The durable record of one upgrade: where it stands, written before and after every step.
//!
//! `journal.json` lives in the upgrade's work directory beside the new data directory and is
//! replaced atomically (write a temp file, fsync, rename, fsync the directory), so a crash
//! leaves either the old or the new record, never a torn one. An exclusive `flock` on `lock`
//! keeps two pgleap runs from interleaving; the kernel drops it when a run dies, so a crash
//! never leaves a lock that blocks the next run.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::exec::ownerfs;
use crate::exec::process::Owner;
use crate::inspect::checkpoint::CheckpointReport;
use crate::plan::Plan;
use crate::state::identity::Identity;

pub(crate) const FILE: &str = "journal.json";

/// Where an upgrade stands. Each state is reached when the step of the same name finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum State {
    Planned,
    NewInitialized,
    ConfigCarried,
    Checked,
    OldStopped,
    Upgraded,
    NewStarted,
    ExtensionsUpdated,
    CollationsRepaired,
    Analyzed,
    Done,
    RolledBack,
    Finalized,
}

impl State {
    pub(crate) fn name(self) -> &'static str {
        match self {
            State::Planned => "planned",
            State::NewInitialized => "new-initialized",
            State::ConfigCarried => "config-carried",
            State::Checked => "checked",
            State::OldStopped => "old-stopped",
            State::Upgraded => "upgraded",
            State::NewStarted => "new-started",
            State::ExtensionsUpdated => "extensions-updated",
            State::CollationsRepaired => "collations-repaired",
            State::Analyzed => "analyzed",
            State::Done => "done",
            State::RolledBack => "rolled-back",
            State::Finalized => "finalized",
        }
    }

    pub(crate) fn terminal(self) -> bool {
        matches!(self, State::RolledBack | State::Finalized)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StepRecord {
    pub(crate) name: String,
    pub(crate) seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) format: u32,
    pub(crate) state: State,
    /// The step under way when the record was written; set means it did not finish.
    pub(crate) running: Option<String>,
    pub(crate) plan: Plan,
    /// Whether the old server was running when the upgrade began: rollback restores that,
    /// and the new cluster is left in the same state.
    pub(crate) old_was_running: bool,
    /// Set once the new cluster has started in link or swap mode: from then on the old
    /// cluster cannot be brought back.
    pub(crate) point_of_no_return: bool,
    pub(crate) steps: Vec<StepRecord>,
    pub(crate) downtime_seconds: Option<f64>,
    /// The CHECKPOINTs run while the old server still served, right before the stop.
    #[serde(default)]
    pub(crate) pre_stop_checkpoint: Option<CheckpointReport>,
    /// How long the old server took to shut down (its shutdown checkpoint, mostly).
    #[serde(default)]
    pub(crate) shutdown_seconds: Option<f64>,
    /// How long each phase of the real pg_upgrade run took (from its output).
    #[serde(default)]
    pub(crate) pg_upgrade_phases: Vec<crate::exec::phases::PhaseTime>,
    /// What ANALYZE did after the window, with when each stage covered every relation.
    #[serde(default)]
    pub(crate) analyze: Option<crate::inspect::analyze::AnalyzeReport>,
    /// When stop-old began (ms since the epoch): downtime is measured from here, across a
    /// resume if need be.
    #[serde(default)]
    pub(crate) window_started_ms: Option<u64>,
    /// The new cluster's latest checkpoint location when pg_upgrade finished: a server that
    /// ran on it since has moved it (see `crossing`).
    #[serde(default)]
    pub(crate) new_checkpoint: Option<String>,
    /// The new cluster's next transaction id once pgleap's own work on it was done: writes
    /// by clients since then are what a rollback would discard (see `crossing`).
    #[serde(default)]
    pub(crate) new_next_xid: Option<u64>,
    /// The old cluster's pg_hba.conf while it is fenced before the stop (see `steps::fence`):
    /// set before the fenced file is written, cleared once the original is back.
    #[serde(default)]
    pub(crate) hba_fence: Option<crate::config::hba::HbaFence>,
    /// What the upgrade did to replication items beyond the plan (slots dropped before the
    /// stop, subscriptions resumed after the start).
    #[serde(default)]
    pub(crate) replication: crate::preflight::replication::Outcome,
    /// The old cluster's latest checkpoint location once pgleap stopped it (its shutdown
    /// checkpoint): a standby caught up with it has the same one after its own stop.
    #[serde(default)]
    pub(crate) old_checkpoint: Option<String>,
    /// Set when the upgrade paused before the new primary's first start for the standbys'
    /// rsync (`--standbys rebuild-later`, link mode): the next `pgleap upgrade` starts it.
    #[serde(default)]
    pub(crate) paused_for_standbys: bool,
    /// When that pause began and ended (see `state::pause`).
    #[serde(default)]
    pub(crate) pause: Option<crate::state::pause::Pause>,
    pub(crate) started_at: u64,
    pub(crate) updated_at: u64,
    /// What proves which directories are this upgrade's (see `state::identity`).
    #[serde(default)]
    pub(crate) identity: Identity,
}

/// A journal on disk.
#[derive(Debug)]
pub(crate) struct Journal {
    dir: PathBuf,
    /// Who writes the journal: the owner of the work directory (never root when pgleap is
    /// root), whatever the record says.
    owner: Owner,
    pub(crate) record: Record,
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Journal {
    pub(crate) fn create(plan: &Plan, old_was_running: bool) -> Result<Journal> {
        let record = Record {
            format: 1,
            state: State::Planned,
            running: None,
            plan: plan.clone(),
            old_was_running,
            point_of_no_return: false,
            steps: Vec::new(),
            downtime_seconds: None,
            pre_stop_checkpoint: None,
            shutdown_seconds: None,
            analyze: None,
            pg_upgrade_phases: Vec::new(),
            window_started_ms: None,
            new_checkpoint: None,
            new_next_xid: None,
            hba_fence: None,
            replication: crate::preflight::replication::Outcome::default(),
            old_checkpoint: None,
            paused_for_standbys: false,
            pause: None,
            started_at: now(),
            updated_at: now(),
            identity: Identity::default(),
        };
        let mut j = Journal {
            dir: plan.work_dir.clone(),
            owner: plan.owner.clone(),
            record,
        };
        j.write()?;
        Ok(j)
    }

    /// Reads the journal in `work_dir`, if there is one. Links are not followed: the work
    /// directory and everything in it is the owner's to plant.
    pub(crate) fn load(work_dir: &Path) -> Result<Option<Journal>> {
        let path = work_dir.join(FILE);
        let text = match read_nofollow(&path) {
            Ok(t) => t,
            // A work directory below a file (a mistaken --new-datadir) holds no journal
            // either; the preflight then says what is wrong with the path.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(None);
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                return Err(Error::Planted {
                    path,
                    what: "is a symbolic link".into(),
                });
            }
            Err(e) => return Err(Error::io("cannot read the journal", &path, e)),
        };
        let owner = work_dir_owner(work_dir)?;
        let record: Record =
            serde_json::from_str(&text).map_err(|source| Error::JournalDamaged {
                path: path.clone(),
                source,
            })?;
        Ok(Some(Journal {
            dir: work_dir.to_path_buf(),
            owner,
            record,
        }))
    }

    /// The user the journal's files belong to.
    pub(crate) fn owner(&self) -> &Owner {
        &self.owner
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Records that `step` is starting.
    pub(crate) fn begin(&mut self, step: &str) -> Result<()> {
        self.record.running = Some(step.to_string());
        self.write()
    }

    /// Records that `step` finished and the upgrade reached `state`.
    pub(crate) fn finish(&mut self, step: &str, state: State, seconds: f64) -> Result<()> {
        self.record.running = None;
        self.record.state = state;
        self.record.steps.push(StepRecord {
            name: step.to_string(),
            seconds,
        });
        self.write()
    }

    pub(crate) fn set_state(&mut self, state: State) -> Result<()> {
        self.record.running = None;
        self.record.state = state;
        self.write()
    }

    /// Moves a finished journal out of the way so a new upgrade can start.
    pub(crate) fn archive(&self) -> Result<()> {
        let to = self.dir.join(format!(
            "journal-{}-{}.json",
            self.record.state.name(),
            now()
        ));
        ownerfs::rename_as(&self.owner, &self.path(), &to)
    }

    /// Atomic replace (temp file, fsync, rename, fsync the directory), done as the owner:
    /// the work directory is the owner's.
    pub(crate) fn write(&mut self) -> Result<()> {
        self.record.updated_at = now();
        let text = serde_json::to_string_pretty(&self.record).map_err(Error::JournalEncode)?;
        ownerfs::write(&self.owner, &self.path(), text.as_bytes(), 0o600)
    }
}

/// Reads a file of the work directory: a regular file, without following a link or blocking
/// on a FIFO planted in its place.
pub(crate) fn read_nofollow(path: &Path) -> std::io::Result<String> {
    use crate::exec::ownerfs::{Follow, READ_LIMIT, read_regular_text};
    read_regular_text(path, Follow::No, READ_LIMIT)
}

pub(crate) fn open_nofollow(path: &Path, write: bool) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        // A FIFO planted in the file's place must not block the open.
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
}

/// The owner of a work directory: its own owner, which must be a real directory and, when
/// pgleap is root, not root's (pgleap makes work directories for the cluster owner).
fn work_dir_owner(work_dir: &Path) -> Result<Owner> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::symlink_metadata(work_dir)
        .map_err(|e| Error::io("cannot read the work directory", work_dir, e))?;
    if m.file_type().is_symlink() {
        return Err(Error::Planted {
            path: work_dir.to_path_buf(),
            what: "is a symbolic link".into(),
        });
    }
    if m.uid() == 0 && nix::unistd::geteuid().is_root() {
        return Err(Error::Planted {
            path: work_dir.to_path_buf(),
            what: "belongs to root, not to the cluster owner".into(),
        });
    }
    Ok(Owner::from_uid(m.uid(), m.gid()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_ordered_like_the_steps() {
        assert!(State::Planned < State::Checked);
        assert!(State::OldStopped < State::Upgraded);
        assert!(State::Upgraded < State::NewStarted);
        assert!(State::Analyzed < State::Done);
        assert!(State::RolledBack.terminal());
        assert!(!State::Done.terminal());
    }
}
