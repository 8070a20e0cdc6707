//! Before the window: `initdb` of the new data directory with the old cluster's options
//! (superuser, encoding, locale, checksums, WAL segment size).

use std::path::Path;

use crate::error::{Error, Result};
use crate::exec::process::Opts;
use crate::plan::prepare::Prepared;

use super::create_owned_dir;

/// `initdb` with the old cluster's options.
pub(crate) fn initdb(p: &Prepared, datadir: &Path) -> Result<()> {
    let opts = p.plan.initdb.as_ref().ok_or(Error::InitdbOptionsUnknown)?;
    create_owned_dir(datadir, p.runner.owner())?;
    let mut args = vec!["-D".to_string(), datadir.display().to_string()];
    args.extend(opts.args(p.new.major));
    if let Some(wal) = &p.plan.new.waldir {
        // Beside the old cluster's WAL directory, on the volume chosen for WAL.
        create_owned_dir(wal, p.runner.owner())?;
        args.push(format!("--waldir={}", wal.display()));
    }
    // The new cluster's files are replaced by pg_upgrade; no need to fsync them twice.
    args.push("--no-sync".into());
    p.runner.run(
        &p.new.initdb(),
        &args,
        &Opts {
            log_name: Some("initdb"),
            ..Opts::default()
        },
    )?;
    Ok(())
}
