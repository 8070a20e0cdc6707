//! Talking to a server over its Unix socket with tokio-postgres.
//!
//! Connections run as the cluster owner so that `peer` authentication in the user's own
//! pg_hba.conf works: when pgleap runs as root it re-executes itself as the owner with the
//! hidden `__db` subcommand, which prints one JSON document on stdout.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, NoTls};

use crate::error::{Error, Result};
use crate::exec::process::{Opts, Runner};
use crate::inspect::pgerr::pg_error;
use crate::inspect::pgpass;

/// Where and as whom to connect.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub(crate) struct Target {
    #[arg(long)]
    pub(crate) socket_dir: PathBuf,
    #[arg(long)]
    pub(crate) port: u16,
    /// Role names to try, in order, until one connects.
    #[arg(long = "user", required = true)]
    pub(crate) users: Vec<String>,
}

impl Target {
    pub(crate) fn new(socket_dir: &Path, port: u16, users: Vec<String>) -> Target {
        let mut seen = Vec::new();
        for u in users {
            if !seen.contains(&u) {
                seen.push(u);
            }
        }
        Target {
            socket_dir: socket_dir.to_path_buf(),
            port,
            users: seen,
        }
    }

    fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--socket-dir".to_string(),
            self.socket_dir.display().to_string(),
            "--port".into(),
            self.port.to_string(),
        ];
        for u in &self.users {
            a.push("--user".into());
            a.push(u.clone());
        }
        a
    }
}

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
    /// CHECKPOINT, so that a shutdown right after has little left to write.
    Checkpoint {
        #[command(flatten)]
        target: Target,
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

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AnalyzeReport {
    pub(crate) databases: usize,
    pub(crate) relations: usize,
    pub(crate) stages: usize,
}

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

/// Connection tasks, awaited before `__db` exits so each session ends with a proper
/// Terminate message instead of a reset that the server would log as an error.
static CONNECTIONS: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>> =
    std::sync::Mutex::new(Vec::new());

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
            Request::Checkpoint { target } => {
                let (client, _) = connect_any(&target, "postgres").await?;
                client
                    .batch_execute("CHECKPOINT")
                    .await
                    .map_err(|e| pg_error("CHECKPOINT", &e))?;
                Ok(serde_json::to_string(&true))
            }
            Request::Ping { target } => {
                let (client, _) = connect_any(&target, "postgres").await?;
                let v: String = client
                    .query_one("SELECT current_setting('server_version_num')", &[])
                    .await
                    .map_err(|e| pg_error("querying the server", &e))?
                    .get(0);
                Ok(serde_json::to_string(&v.parse::<u32>().unwrap_or(0)))
            }
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
            Request::Analyze {
                target,
                jobs,
                stages,
                missing_only,
            } => {
                let report = analyze(&target, jobs, stages, missing_only).await?;
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

async fn connect(
    target: &Target,
    user: &str,
    dbname: &str,
) -> Result<Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(&target.socket_dir)
        .port(target.port)
        .user(user)
        .dbname(dbname)
        .application_name("pgleap");
    if let Ok(pw) = std::env::var("PGPASSWORD") {
        config.password(pw);
    } else if let pgpass::Lookup::Found(pw) =
        pgpass::lookup(&target.socket_dir, target.port, dbname, user)
    {
        config.password(pw);
    }
    let (client, connection) = config.connect(NoTls).await?;
    let handle = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("connection closed: {e}");
        }
    });
    CONNECTIONS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(handle);
    Ok(client)
}

/// Connects with the first role that works and is a superuser (pgleap reads pg_authid, and
/// pg_upgrade needs the bootstrap superuser); the error of the last one otherwise. Without a
/// `postgres` database (it may be dropped) it connects to template1, as PostgreSQL's own
/// tools do.
async fn connect_any(target: &Target, dbname: &str) -> Result<(Client, String)> {
    let mut last = None;
    let mut not_super = Vec::new();
    for user in &target.users {
        match connect_db_or_template1(target, user, dbname).await {
            Ok(c) => match superusers_unless_super(&c).await {
                Ok(None) => return Ok((c, user.clone())),
                Ok(Some(supers)) => not_super.push((user.clone(), supers)),
                Err(e) => last = Some(pg_error("reading pg_roles", &e)),
            },
            Err(e) => last = Some(connect_error(target, user, dbname, &e)),
        }
    }
    if let Some((user, supers)) = not_super.first() {
        return Err(not_superuser(user, supers));
    }
    Err(last.unwrap_or(Error::NoRole))
}

/// Why a connection failed, in the server's words, or, when the server wants a password
/// and none was found, which authentication method asked and where pgleap looked.
fn connect_error(target: &Target, user: &str, dbname: &str, e: &tokio_postgres::Error) -> Error {
    let what = format!(
        "cannot connect as {user} to {}",
        target.socket_dir.display()
    );
    let cause = std::error::Error::source(e).map(ToString::to_string);
    if e.as_db_error().is_some() || !cause.is_some_and(|c| c.contains("password missing")) {
        return pg_error(&what, e);
    }
    let method = auth_method(target, user, dbname).unwrap_or_else(|| "password".into());
    let file = match pgpass::lookup(&target.socket_dir, target.port, dbname, user) {
        pgpass::Lookup::NoFile => format!(
            "there is no password file ({})",
            pgpass::path().map_or_else(|| "~/.pgpass".into(), |p| p.display().to_string())
        ),
        pgpass::Lookup::NoMatch(f) => format!(
            "no line of {} matches (host {} or localhost, port {}, database {dbname}, user {user})",
            f.display(),
            target.socket_dir.display(),
            target.port
        ),
        pgpass::Lookup::Ignored(f, why) => format!("{} was ignored: {why}", f.display()),
        pgpass::Lookup::Found(_) => "the password file's password was not accepted".into(),
    };
    Error::Database {
        what,
        detail: format!(
            "the server asks {user} for a password ({method} authentication), and none was found: PGPASSWORD is unset and {file}"
        ),
    }
}

/// The authentication method the server asks `user` for, learned from its first answer
/// to a startup message (the client gives up right after): `None` when it cannot tell.
fn auth_method(target: &Target, user: &str, dbname: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let sock = target.socket_dir.join(format!(".s.PGSQL.{}", target.port));
    let mut stream = std::os::unix::net::UnixStream::connect(sock).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    // Protocol 3.0 startup message: length, version, then name/value pairs and a final NUL.
    let mut body = 196_608_u32.to_be_bytes().to_vec();
    for s in ["user", user, "database", dbname] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    body.push(0);
    let len = u32::try_from(body.len() + 4).ok()?;
    let mut msg = len.to_be_bytes().to_vec();
    msg.extend(body);
    stream.write_all(&msg).ok()?;
    let mut head = [0_u8; 9];
    stream.read_exact(&mut head).ok()?;
    if head[0] != b'R' {
        return None;
    }
    let code = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
    let method = match code {
        3 => "password",
        5 => "md5",
        // SASL: the only mechanism PostgreSQL offers over a Unix socket.
        10 => "scram-sha-256",
        7 => "gss",
        9 => "sspi",
        _ => return None,
    };
    Some(method.into())
}

/// [`connect`], falling back to template1 when `dbname` is `postgres` and does not exist.
async fn connect_db_or_template1(
    target: &Target,
    user: &str,
    dbname: &str,
) -> Result<Client, tokio_postgres::Error> {
    match connect(target, user, dbname).await {
        Err(e)
            if dbname == "postgres"
                && e.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME) =>
        {
            connect(target, user, "template1").await
        }
        other => other,
    }
}

/// `None` when the session's role is a superuser; the superusers' names otherwise, the
/// bootstrap superuser (oid 10) first. pg_roles is readable by every role.
async fn superusers_unless_super(
    client: &Client,
) -> Result<Option<Vec<String>>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT rolname::text, rolname = current_user FROM pg_catalog.pg_roles \
             WHERE rolsuper ORDER BY oid <> 10, rolname",
            &[],
        )
        .await?;
    if rows.iter().any(|r| r.get::<_, bool>(1)) {
        return Ok(None);
    }
    Ok(Some(rows.iter().map(|r| r.get(0)).collect()))
}

fn not_superuser(user: &str, superusers: &[String]) -> Error {
    let detail = match superusers.first() {
        Some(first) => {
            format!("the bootstrap superuser is {first}. Pass --username {first}")
        }
        None => "and no superuser can log in. Pass --username with a superuser's name".into(),
    };
    Error::Database {
        what: format!("connected as {user}, which is not a superuser"),
        detail,
    }
}

/// Relations that ANALYZE should visit. `missing_only` (18 targets, whose pg_upgrade carries
/// optimizer statistics) keeps those with a column, expression index or extended statistics
/// object that has no statistics yet.
const RELATIONS: &str = "SELECT c.oid::pg_catalog.regclass::text FROM pg_catalog.pg_class c \
    WHERE c.relkind IN ('r', 'm', 'p') AND c.relpersistence <> 't'";
const MISSING: &str = " AND (EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid \
        AND a.attnum > 0 AND NOT a.attisdropped AND a.attstattarget IS DISTINCT FROM 0 \
        AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_statistic s WHERE s.starelid = a.attrelid \
            AND s.staattnum = a.attnum AND s.stainherit = (c.relkind = 'p'))) \
    OR EXISTS (SELECT 1 FROM pg_catalog.pg_statistic_ext e WHERE e.stxrelid = c.oid \
        AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_statistic_ext_data d WHERE d.stxoid = e.oid)) \
    OR EXISTS (SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute ia ON ia.attrelid = i.indexrelid \
        WHERE i.indrelid = c.oid AND i.indexprs IS NOT NULL AND ia.attnum > 0 \
        AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_statistic s WHERE s.starelid = i.indexrelid AND s.staattnum = ia.attnum)))";

async fn analyze(
    target: &Target,
    jobs: usize,
    stages: bool,
    missing_only: bool,
) -> Result<AnalyzeReport> {
    let (user, work) = analyze_work(target, missing_only).await?;
    let total: usize = work.iter().map(|(_, r)| r.len()).sum();
    // Minimal statistics everywhere first so the planner has something at once, then the real ones.
    let targets: Vec<Option<u32>> = if stages {
        vec![Some(1), Some(10), None]
    } else {
        vec![None]
    };
    let sem = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    for (n, stat_target) in targets.iter().enumerate() {
        let done = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for (db, rels) in &work {
            let job = AnalyzeJob {
                target: target.clone(),
                user: user.clone(),
                sem: sem.clone(),
                done: done.clone(),
                db: db.clone(),
                rels: rels.clone(),
                set: stat_target.map_or_else(
                    || "SET vacuum_cost_delay = 0; RESET default_statistics_target".to_string(),
                    |t| format!("SET vacuum_cost_delay = 0; SET default_statistics_target = {t}"),
                ),
                stage: format!("stage {}/{}", n + 1, targets.len()),
                total,
            };
            tasks.push(tokio::spawn(analyze_database(job)));
        }
        for t in tasks {
            t.await.map_err(|e| Error::Worker(e.to_string()))??;
        }
    }
    Ok(AnalyzeReport {
        databases: work.len(),
        relations: total,
        stages: targets.len(),
    })
}

/// The role that connected and, per database, the relations to analyze. The lists are
/// computed once: after the first stage nothing is missing any more.
async fn analyze_work(
    target: &Target,
    missing_only: bool,
) -> Result<(String, Vec<(String, Arc<Vec<String>>)>)> {
    let (first, user) = connect_any(target, "postgres").await?;
    let dbs: Vec<String> = first
        .query(
            "SELECT datname::text FROM pg_catalog.pg_database WHERE datallowconn ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| pg_error("listing databases", &e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    drop(first);
    let query = if missing_only {
        format!("{RELATIONS}{MISSING} ORDER BY 1")
    } else {
        format!("{RELATIONS} ORDER BY 1")
    };
    let mut work = Vec::new();
    for db in &dbs {
        let client = connect(target, &user, db)
            .await
            .map_err(|e| pg_error(&format!("connecting to {db}"), &e))?;
        let rels: Vec<String> = client
            .query(&query, &[])
            .await
            .map_err(|e| pg_error(&format!("listing relations in {db}"), &e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        work.push((db.clone(), Arc::new(rels)));
    }
    Ok((user, work))
}

/// One database's share of one ANALYZE stage.
struct AnalyzeJob {
    target: Target,
    user: String,
    sem: Arc<tokio::sync::Semaphore>,
    done: Arc<AtomicUsize>,
    db: String,
    rels: Arc<Vec<String>>,
    /// The statistics target of this stage, as SET commands.
    set: String,
    stage: String,
    total: usize,
}

/// Analyzes one database's relations under a job slot, printing a progress line per relation.
async fn analyze_database(job: AnalyzeJob) -> Result<()> {
    let AnalyzeJob {
        target,
        user,
        sem,
        done,
        db,
        rels,
        set,
        stage,
        total,
    } = job;
    let _permit = sem
        .acquire_owned()
        .await
        .map_err(|e| Error::Worker(e.to_string()))?;
    let client = connect(&target, &user, &db)
        .await
        .map_err(|e| pg_error(&format!("connecting to {db}"), &e))?;
    client
        .batch_execute(&set)
        .await
        .map_err(|e| pg_error("SET", &e))?;
    for rel in rels.iter() {
        client
            .batch_execute(&format!("ANALYZE {rel}"))
            .await
            .map_err(|e| pg_error(&format!("ANALYZE {rel} in {db}"), &e))?;
        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
        {
            use std::io::Write as _;
            // One write per line, so a reader never sees half a line.
            let line = format!("analyze {stage}: {d}/{total} relations ({db}: {rel})");
            let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
        }
    }
    Ok(())
}
