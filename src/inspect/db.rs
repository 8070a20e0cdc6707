//! Talking to a server over its Unix socket with tokio-postgres.
//!
//! Connections run as the cluster owner so that `peer` authentication in the user's own
//! pg_hba.conf works: when pgleap runs as root it re-executes itself as the owner with the
//! hidden `__db` subcommand, which prints one JSON document on stdout.

use std::io::Write as _;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::exec::process::{Opts, Runner};
use crate::inspect::pgerr::pg_error;
use crate::inspect::session::{CONNECTIONS, connect, connect_any};

pub(crate) use crate::inspect::session::Target;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Request {
    /// Print the catalog facts pgleap needs (JSON).
    Catalog {
        #[command(flatten)]
        target: Target,
    },
    /// Answer a query: the server's version number (JSON).
    Ping {
        #[command(flatten)]
        target: Target,
    },
    /// The next transaction id the server would assign (JSON), without assigning one.
    NextXid {
        #[command(flatten)]
        target: Target,
    },
    /// The cluster-wide replication facts: walsenders and slots (JSON).
    Slots {
        #[command(flatten)]
        target: Target,
    },
    /// The fence before a 17+ old cluster stops: its hba file and the errors the server finds
    /// in it, its rules with the `--role`s each admits, client sessions terminated
    /// (`--terminate`), the replication facts (JSON).
    FencePoll {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        terminate: bool,
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// Drop replication slots by name, ending the walsender of one in use (JSON: each slot
    /// and its error, if any).
    DropSlots {
        #[command(flatten)]
        target: Target,
        #[arg(long = "slot")]
        slots: Vec<String>,
    },
    /// Complete the current WAL segment and wait until it is archived or fails to be (JSON,
    /// see `inspect::archive`); nothing when archiving is off.
    ArchiveProbe {
        #[command(flatten)]
        target: Target,
    },
    /// CHECKPOINTs until little is left to flush, so that a shutdown right after has little
    /// left to write (JSON: each round).
    Checkpoint {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
    /// ANALYZE every database, in parallel, optionally in stages and only what lacks statistics.
    Analyze {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        #[arg(long)]
        stages: bool,
        #[arg(long)]
        missing_only: bool,
    },
    /// A rehearsal's proof of preservation: every database's tables, sequences, large
    /// objects and extensions (JSON, see `inspect::proof`).
    Proof {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1)]
        jobs: usize,
    },
    /// What a shutdown checkpoint would write (JSON, see `inspect::proof`).
    Pressure {
        #[command(flatten)]
        target: Target,
    },
    /// Copy the data directory between pg_backup_start and pg_backup_stop (see
    /// `inspect::backup`).
    BackupCopy {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        copy: crate::inspect::backup::Copy,
    },
    /// The versions the server's libraries give each `provider:locale` (JSON).
    CollationVersions {
        #[command(flatten)]
        target: Target,
        #[arg(long = "locale")]
        locales: Vec<String>,
    },
    /// Rebuild the indexes that sort by a drifted collation, then refresh the recorded
    /// versions (JSON report); `--dry-run` only says what would be done.
    Reindex {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        #[arg(long)]
        dry_run: bool,
        /// Refresh the recorded versions instead of rebuilding.
        #[arg(long)]
        refresh: bool,
        /// Indexes whose rebuild failed, as JSON `[[database, index], ...]`: their
        /// collations keep their recorded version.
        #[arg(long, default_value = "[]")]
        failed: String,
        /// Collations judged drifted before the upgrade, as JSON `[[database, collation],
        /// ...]` (`default` for a database's own).
        #[arg(long, default_value = "[]")]
        drifted: String,
    },
    /// Of the locales given, those this process cannot open (JSON); no server involved.
    Locales {
        #[arg(long = "locale")]
        locales: Vec<String>,
    },
}

pub(crate) use crate::inspect::analyze::AnalyzeReport;

/// Runs a request as the runner's owner (re-executing pgleap) and parses its JSON answer.
pub(crate) fn call<T: serde::de::DeserializeOwned>(
    runner: &Runner,
    request: &[&str],
    target: &Target,
) -> Result<T> {
    call_with_progress(runner, request, target, None)
}

/// [`call`], passing the request's progress lines (on its stderr) to `on_output`.
pub(crate) fn call_with_progress<T: serde::de::DeserializeOwned>(
    runner: &Runner,
    request: &[&str],
    target: &Target,
    on_output: Option<&(dyn Fn(&str) + Sync)>,
) -> Result<T> {
    let exe = crate::exec::owner::owner_executable(runner.owner())?;
    let mut args: Vec<String> = vec!["__db".into()];
    args.push(request[0].to_string());
    args.extend(target.args());
    args.extend(request[1..].iter().map(|s| (*s).to_string()));
    let out = runner.run(
        &exe,
        &args,
        &Opts {
            log_name: Some(&format!("db-{}", request[0])),
            on_output,
            ..Opts::default()
        },
    )?;
    serde_json::from_slice(&out.stdout).map_err(|e| Error::DbAnswer {
        request: request[0].to_string(),
        source: e,
    })
}

/// A connection to any database the target's users reach, and the server's version number.
async fn connect_versioned(target: &Target) -> Result<(tokio_postgres::Client, u32)> {
    let (client, _) = connect_any(target, "postgres").await?;
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(|e| pg_error("querying the server", &e))?
        .get(0);
    Ok((client, version.try_into().unwrap_or(0)))
}

/// The cluster-wide replication facts (`__db slots`).
async fn slots(target: &Target) -> Result<crate::inspect::replication::Replication> {
    let (client, version) = connect_versioned(target).await?;
    crate::inspect::replication::read(&client, version)
        .await
        .map_err(|e| pg_error("reading the replication slots", &e))
}

/// The archiving probe (`__db archive-probe`).
async fn archive_probe(target: &Target) -> Result<crate::inspect::archive::Probe> {
    let (client, version) = connect_versioned(target).await?;
    crate::inspect::archive::probe(&client, version)
        .await
        .map_err(|e| pg_error("probing WAL archiving", &e))
}

/// Entry point of the hidden `__db` subcommand.
pub(crate) fn serve(request: Request) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let json = rt.block_on(async {
        match request {
            Request::Catalog { target } => {
                let (client, user) = connect_any(&target, "postgres").await?;
                let catalog = crate::inspect::catalog::read(&client, |db| {
                    let t = target.clone();
                    let u = user.clone();
                    async move { connect(&t, &u, &db).await }
                })
                .await
                .map_err(|e| pg_error("reading the catalog", &e))?;
                Ok::<_, Error>(serde_json::to_string(&catalog))
            }
            Request::Checkpoint { target, rounds } => {
                let (client, _) = connect_any(&target, "postgres").await?;
                let report = crate::inspect::checkpoint::settle(&client, rounds).await?;
                Ok(serde_json::to_string(&report))
            }
            r @ (Request::Ping { .. }
            | Request::NextXid { .. }
            | Request::Slots { .. }
            | Request::ArchiveProbe { .. }) => facts_request(r).await,
            r @ (Request::FencePoll { .. } | Request::DropSlots { .. }) => fence_request(r).await,
            Request::Analyze {
                target,
                jobs,
                stages,
                missing_only,
            } => {
                let report =
                    crate::inspect::analyze::analyze(&target, jobs, stages, missing_only).await?;
                Ok(serde_json::to_string(&report))
            }
            r @ (Request::CollationVersions { .. }
            | Request::Reindex { .. }
            | Request::Locales { .. }) => collation_request(r).await,
            Request::Proof { target, jobs } => {
                let (client, user) = connect_any(&target, "postgres").await?;
                let proof = crate::inspect::proof::capture(
                    &client,
                    move |db| {
                        let (t, u) = (target.clone(), user.clone());
                        async move { connect(&t, &u, &db).await }
                    },
                    jobs,
                )
                .await?;
                Ok(serde_json::to_string(&proof))
            }
            Request::Pressure { target } => {
                let (client, _) = connect_any(&target, "postgres").await?;
                Ok(serde_json::to_string(
                    &crate::inspect::proof::pressure(&client).await,
                ))
            }
            Request::BackupCopy { target, copy } => {
                let (client, _) = connect_any(&target, "postgres").await?;
                Ok(serde_json::to_string(
                    &crate::inspect::backup::backup_copy(&client, &copy).await?,
                ))
            }
        }
    })?;
    // Every client has been dropped by now: let the connections say goodbye.
    rt.block_on(async {
        let handles = std::mem::take(
            &mut *CONNECTIONS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for h in handles {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), h).await;
        }
    });
    let json = json.map_err(Error::DbEncode)?;
    // The parent reads this pipe; if it is gone there is no one left to tell.
    let _ = writeln!(std::io::stdout(), "{json}");
    Ok(())
}

/// The small questions about a running server: its version, its next transaction id, its
/// replication facts, whether it archives.
async fn facts_request(request: Request) -> Result<serde_json::Result<String>> {
    match request {
        Request::Ping { target } => {
            let (client, _) = connect_any(&target, "postgres").await?;
            let v: String = client
                .query_one("SELECT current_setting('server_version_num')", &[])
                .await
                .map_err(|e| pg_error("querying the server", &e))?
                .get(0);
            Ok(serde_json::to_string(&v.parse::<u32>().unwrap_or(0)))
        }
        Request::Slots { target } => slots(&target).await.map(|r| serde_json::to_string(&r)),
        Request::ArchiveProbe { target } => archive_probe(&target)
            .await
            .map(|r| serde_json::to_string(&r)),
        Request::NextXid { target } => {
            let (client, _) = connect_any(&target, "postgres").await?;
            // txid_* (10+; pg_current_snapshot is 13+): xmax is the next id to assign.
            let v: String = client
                .query_one(
                    "SELECT txid_snapshot_xmax(txid_current_snapshot())::text",
                    &[],
                )
                .await
                .map_err(|e| pg_error("querying the server", &e))?
                .get(0);
            Ok(serde_json::to_string(&v.parse::<u64>().unwrap_or(0)))
        }
        _ => Ok(Ok(String::new())),
    }
}

/// The fence's requests: a poll, and slots dropped.
async fn fence_request(request: Request) -> Result<serde_json::Result<String>> {
    match request {
        Request::FencePoll {
            target,
            terminate,
            roles,
        } => {
            let (client, version) = connect_versioned(&target).await?;
            let poll = crate::inspect::fence::poll(&client, version, terminate, &roles)
                .await
                .map_err(|e| pg_error("polling the fenced server", &e))?;
            Ok(serde_json::to_string(&poll))
        }
        Request::DropSlots { target, slots } => {
            let (client, _) = connect_any(&target, "postgres").await?;
            Ok(serde_json::to_string(
                &crate::inspect::fence::drop_slots(&client, &slots).await,
            ))
        }
        _ => Ok(Ok(String::new())),
    }
}

/// The collation requests: versions a server reports, the repair, locales this process
/// cannot open.
async fn collation_request(request: Request) -> Result<serde_json::Result<String>> {
    match request {
        Request::CollationVersions { target, locales } => {
            let (client, _) = connect_any(&target, "postgres").await?;
            let probes = crate::inspect::collation::probe(&client, &locales)
                .await
                .map_err(|e| pg_error("asking for collation versions", &e))?;
            Ok(serde_json::to_string(&probes))
        }
        Request::Reindex {
            target,
            jobs,
            dry_run,
            refresh,
            failed,
            drifted,
        } => {
            let pairs = |what: &str, text: &str| {
                serde_json::from_str::<Vec<(String, String)>>(text).map_err(|e| Error::DbAnswer {
                    request: format!("reindex --{what}"),
                    source: e,
                })
            };
            let ask = crate::inspect::reindex::Ask {
                jobs,
                dry_run,
                refresh,
                failed: pairs("failed", &failed)?,
                drifted: pairs("drifted", &drifted)?,
            };
            let (first, user) = connect_any(&target, "postgres").await?;
            let open: crate::inspect::reindex::Connect = Arc::new(move |db: String| {
                let (target, user) = (target.clone(), user.clone());
                Box::pin(async move {
                    connect(&target, &user, &db)
                        .await
                        .map_err(|e| pg_error(&format!("connecting to {db}"), &e))
                })
            });
            let report = crate::inspect::reindex::repair(first, open, &ask).await?;
            Ok(serde_json::to_string(&report))
        }
        Request::Locales { locales } => Ok(serde_json::to_string(
            &crate::inspect::collation::unopenable(&locales),
        )),
        // serve() answers the others itself.
        _ => Ok(Ok(String::new())),
    }
}
