//! A consistent file-level copy of a running server: its files copied (with reflinks where
//! the filesystem shares extents) between `pg_backup_start` and `pg_backup_stop` on one
//! session, the WAL written meanwhile copied after the stop, and the backup label written
//! into the copy, from which the copy's first start recovers to a consistent state.
//!
//! The server is only read: a non-exclusive backup changes nothing on disk (it forces a
//! checkpoint, as any backup does), and the temporary replication slot that keeps the
//! backup's WAL from being recycled vanishes with the session.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::exec::copytree::{Copied, Part, copy_tree};
use tokio_postgres::Client;

use crate::inspect::pgerr::pg_error;

/// What to copy: the data directory, its WAL directory, and each tablespace's version
/// directory with where it goes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Copy {
    #[arg(long)]
    pub(crate) from: PathBuf,
    #[arg(long)]
    pub(crate) to: PathBuf,
    /// `pg_wal` resolved (it may live apart).
    #[arg(long)]
    pub(crate) waldir: PathBuf,
    /// `SOURCE=DEST` per tablespace version directory.
    #[arg(long = "tablespace")]
    pub(crate) tablespaces: Vec<String>,
}

impl Copy {
    pub(crate) fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--from".to_string(),
            self.from.display().to_string(),
            "--to".into(),
            self.to.display().to_string(),
            "--waldir".into(),
            self.waldir.display().to_string(),
        ];
        for t in &self.tablespaces {
            a.push("--tablespace".into());
            a.push(t.clone());
        }
        a
    }

    fn copy_data(&self) -> Result<Copied> {
        let mut done = copy_tree(&self.from, &self.to, Part::Data)?;
        for t in &self.tablespaces {
            let (src, dst) = t.split_once('=').unwrap_or((t, t));
            done.add(copy_tree(Path::new(src), Path::new(dst), Part::All)?);
        }
        // pg_control last, as pg_basebackup sends it: the label says where replay starts.
        done.add(copy_tree(&self.from, &self.to, Part::Control)?);
        Ok(done)
    }
}

/// The copy, bracketed by a non-exclusive backup on one session.
pub(crate) async fn backup_copy(client: &Client, copy: &Copy) -> Result<Copied> {
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(|e| pg_error("querying the server", &e))?
        .get(0);
    // Without a slot, a checkpoint during a long copy could recycle WAL the copy needs.
    // Best effort: with max_replication_slots = 0 the copy relies on wal_keep_size.
    let slot = format!("pgleap_rehearse_{}", std::process::id());
    if let Err(e) = client
        .execute(
            "SELECT pg_catalog.pg_create_physical_replication_slot($1, true, true)",
            &[&slot],
        )
        .await
    {
        tracing::warn!("no temporary replication slot for the rehearsal's copy: {e}");
    }
    // 15: pg_start_backup/pg_stop_backup became pg_backup_start/pg_backup_stop, and the
    // exclusive mode went away.
    let label = "pgleap rehearse";
    let start = if version >= 150_000 {
        "SELECT pg_catalog.pg_backup_start($1, true)::text"
    } else {
        "SELECT pg_catalog.pg_start_backup($1, true, false)::text"
    };
    client
        .query_one(start, &[&label])
        .await
        .map_err(|e| pg_error("starting the backup", &e))?;
    let copied = tokio::task::block_in_place(|| copy.copy_data());
    let stop = if version >= 150_000 {
        "SELECT labelfile FROM pg_catalog.pg_backup_stop(false)"
    } else {
        "SELECT labelfile FROM pg_catalog.pg_stop_backup(false, false)"
    };
    // Ended even when the copy failed: the session's end would abort it anyway.
    let row = client
        .query_one(stop, &[])
        .await
        .map_err(|e| pg_error("ending the backup", &e))?;
    let mut copied = copied?;
    let labelfile: String = row.get(0);
    // The WAL from the backup's start to its end, now complete on disk.
    let wal = tokio::task::block_in_place(|| {
        copy_tree(&copy.waldir, &copy.to.join("pg_wal"), Part::All)
    })?;
    copied.add(wal);
    let path = copy.to.join("backup_label");
    std::fs::write(&path, labelfile).map_err(|e| Error::io("cannot write", &path, e))?;
    Ok(copied)
}
