//! From flags to a Plan plus findings: inspect the old cluster and both installations, run
//! every preflight check, and read the old catalog.
//!
//! Invariant: until `prepare` returns, nothing has been written. The static checks run first
//! and refuse before any server is touched; only then is the catalog read (from the live
//! server, or from a fenced start of a stopped one, as pg_upgrade --check itself does).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::error::{Finding, Findings};
use crate::exec::process::{Owner, Runner};
use crate::exec::server::{self, Fence};
use crate::host::layout;
use crate::host::root::{absolute, host_root};
use crate::host::service;
use crate::inspect::catalog::{self, Catalog};
use crate::inspect::cluster::{Cluster, ControlData};
use crate::inspect::cmdline::CommandLine;
use crate::inspect::db;
use crate::inspect::install::{self, Install, Role};
use crate::inspect::space::{self, FsNeed, Usage};
use crate::plan::args::CheckArgs;
use crate::plan::{self, InitdbOptions, Mode, Plan, Side};
use crate::preflight::facts::{CatalogFacts, Static};
use crate::preflight::layout::check_layout_version;
use crate::preflight::owner::{check_not_disabled, check_owner, explain_unreadable};
use crate::preflight::replication;
use crate::preflight::versions::check_versions;
use crate::preflight::{self};

/// Everything an upgrade needs, decided.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) plan: Plan,
    pub(crate) findings: Findings,
    pub(crate) runner: Runner,
    pub(crate) cluster: Cluster,
    pub(crate) old: Install,
    pub(crate) new: Install,
    /// The old catalog's collation facts (empty when it was not read, and on resume): what
    /// `check` judges again against the new installation's versions.
    pub(crate) collation_facts: Vec<crate::inspect::collation::Database>,
}

/// What the caller will do with the plan.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    Check,
    Upgrade {
        port: Option<u16>,
        analyze: bool,
        leave_stopped: bool,
    },
}

/// The host root, the old cluster's layout and the cluster itself, inspected.
fn inspect_old(args: &CheckArgs) -> Result<(PathBuf, layout::Layout, Cluster)> {
    let root = host_root(args.target.root.as_deref()).map_err(Error::from)?;
    let (old_datadir, old_layout) = old_target(&root, args).map_err(Error::from)?;
    let mut cluster = Cluster::inspect(&old_datadir)
        .map_err(|f| Error::from(explain_unreadable(f, &old_datadir)))?;
    check_not_disabled(&old_datadir).map_err(Error::from)?;
    if let Some(confdir) = old_layout.confdir() {
        cluster.confdir = confdir.to_path_buf();
    }
    check_layout_version(&old_layout, &cluster).map_err(Error::from)?;
    check_owner(&cluster.owner, &old_datadir).map_err(Error::from)?;
    Ok((root, old_layout, cluster))
}

/// The glibc locales the old cluster uses that the new server's environment cannot open;
/// the locales are opened by a child with the environment servers get.
fn collation_findings(c: &Catalog, runner: &Runner, findings: &mut Findings) -> Result<()> {
    let needed = crate::preflight::collation::needed_locales(c);
    let names: Vec<String> = needed.iter().map(|(l, _)| l.clone()).collect();
    let missing = crate::inspect::collation::missing_locales(runner, &names)?;
    findings.extend(crate::preflight::collation::missing_locale_findings(
        &needed, &missing,
    ));
    Ok(())
}

pub(crate) fn prepare(args: &CheckArgs, purpose: Purpose) -> Result<Prepared> {
    let (f, findings) = static_phase(args, purpose)?;
    // Static checks refuse here, before any server is started or stopped.
    let mut findings = findings.into_result()?;
    let catalog = read_catalog(args, purpose, &f, &mut findings)?;
    if let Some(c) = &catalog {
        collation_findings(c, &f.runner, &mut findings)?;
    }
    let host = service::plan_host(
        &f.runner,
        &f.root,
        &f.old_layout,
        &f.new_layout,
        args.stop_command.as_deref(),
        args.start_command.as_deref(),
    );
    preflight::run_catalog(
        &CatalogFacts {
            catalog: catalog.as_ref(),
            runner: &f.runner,
            new: &f.new,
            host: &host,
            new_layout: &f.new_layout,
        },
        &mut findings,
    );
    let mut plan = build_plan(args, purpose, &f, catalog.as_ref(), host);
    let dirs = (plan.old.datadir.clone(), plan.new.datadir.clone());
    let config_apart = plan.old.confdir.is_some();
    plan.replication = catalog.as_ref().and_then(|c| {
        let majors = (f.old.major, f.new.major);
        let mut section =
            replication::decide(&c.replication, majors, args.policies(), &mut findings.0);
        section.socket_dir = f.cluster.postmaster().and_then(|p| p.socket_dir.clone());
        crate::preflight::standby::resolve(
            &mut section,
            &args.standby,
            (&dirs.0, &dirs.1),
            &mut findings.0,
        );
        if !section.standby_places.is_empty() {
            let standby = crate::preflight::standby::read_own_paths;
            let owner = f.runner.owner();
            standby(&mut section, owner, &f.cluster.tablespaces, config_apart);
            section.settings_gone =
                crate::preflight::standby::settings_gone(&f.runner, &f.old, &f.new);
        }
        (!section.is_empty()).then_some(section)
    });
    findings.extend(crate::preflight::collation::drift_finding(&plan.collations));
    Ok(Prepared {
        plan,
        findings,
        runner: f.runner,
        cluster: f.cluster,
        old: f.old,
        new: f.new,
        collation_facts: catalog.map(|c| c.collations).unwrap_or_default(),
    })
}

impl Purpose {
    /// The new port (`--port`, else the old one), whether to analyze, whether to leave the
    /// new cluster stopped.
    fn settings(self, old_port: u16) -> (u16, bool, bool) {
        match self {
            Purpose::Check => (old_port, true, false),
            Purpose::Upgrade {
                port,
                analyze,
                leave_stopped,
            } => (port.unwrap_or(old_port), analyze, leave_stopped),
        }
    }
}

/// What the static phase learned, before any server is touched.
struct Facts {
    root: PathBuf,
    old_layout: layout::Layout,
    new_layout: layout::Layout,
    cluster: Cluster,
    runner: Runner,
    old: Install,
    new: Install,
    new_datadir: PathBuf,
    control: ControlData,
    /// pg_control's state when the old cluster is stopped but was not shut down cleanly.
    crashed: Option<String>,
    old_state: String,
    mode: Mode,
    mode_reason: String,
    usage: Usage,
    tablespaces: Vec<PathBuf>,
    space: Vec<FsNeed>,
    old_port: u16,
    /// The old and new WAL directories when the old cluster keeps its WAL apart.
    waldirs: Option<(PathBuf, PathBuf)>,
    /// The old server's command line (`postmaster.opts`).
    cmdline: CommandLine,
}

/// The old cluster, both installations and the new data directory, inspected, then the
/// static families of the preflight walked, without starting anything: refusals that cannot
/// wait end it early, the others are gathered in the findings.
fn static_phase(args: &CheckArgs, purpose: Purpose) -> Result<(Facts, Findings)> {
    let (root, old_layout, cluster) = inspect_old(args)?;
    let old_datadir = cluster.datadir.clone();
    let runner = Runner::new(cluster.owner.clone(), None);
    let mut findings = Findings::default();

    let old = find_old(&runner, &root, args, &cluster).map_err(Error::from)?;
    let new = find_new(&runner, &root, args, cluster.major).map_err(Error::from)?;
    check_versions(&cluster, &new).map_err(Error::from)?;
    if let Some(file) = crate::inspect::replication::signal_file(&old_datadir) {
        // A running standby's primary_conninfo, as the server reads it (12+: a setting).
        let primary_conninfo = cluster
            .setting(&runner, &old, "primary_conninfo")
            .ok()
            .filter(|c| !c.is_empty())
            .map(|c| crate::inspect::replication::without_password(&c));
        let standby = crate::inspect::replication::Standby {
            file,
            primary_conninfo,
        };
        findings.push(replication::standby_finding(&old_datadir, &standby));
    }

    let new_datadir =
        resolve_new_datadir(args, &old_datadir, cluster.major, new.major).map_err(Error::from)?;
    let new_layout = old_layout.for_new(&root, new.major, &new_datadir);
    let usage = Usage::measure(&cluster);
    let tablespaces: Vec<PathBuf> = cluster
        .tablespaces
        .iter()
        .map(|t| t.location.clone())
        .collect();
    let control = cluster.control_data_checked(&runner, &old)?;
    let mut s = Static {
        cluster: &cluster,
        runner: &runner,
        old: &old,
        new: &new,
        new_datadir: &new_datadir,
        new_confdir: new_layout.confdir(),
        usage: &usage,
        tablespaces: &tablespaces,
        requested_mode: args.mode,
        port_flag: match purpose {
            Purpose::Check => None,
            Purpose::Upgrade { port, .. } => port,
        },
        control: &control,
        mode: args.mode,
        mode_reason: String::new(),
        waldirs: None,
        space: Vec::new(),
        cmdline: CommandLine::default(),
        old_port: 0,
    };
    preflight::run_static(&mut s, &mut findings)?;
    let Static {
        mode,
        mode_reason,
        waldirs,
        space,
        cmdline,
        old_port,
        ..
    } = s;
    // The control family has refused already when pg_control cannot be trusted.
    let control = control.map_err(|f| preflight::refuse_with(&mut findings, f))?;
    let crashed =
        (!cluster.is_running() && !control.cleanly_shut_down()).then(|| control.state.clone());
    let old_state = if cluster.is_running() {
        "running".to_string()
    } else if let Some(state) = &crashed {
        format!("stopped, not cleanly: {state}")
    } else {
        "stopped".into()
    };
    let facts = Facts {
        root,
        old_layout,
        new_layout,
        cluster,
        runner,
        old,
        new,
        new_datadir,
        control,
        crashed,
        old_state,
        mode,
        mode_reason,
        usage,
        tablespaces,
        space,
        old_port,
        waldirs,
        cmdline,
    };
    Ok((facts, findings))
}

/// The plan from the facts, the old catalog (when it could be read) and the host's way of
/// running servers.
/// What the downtime estimate is computed from: the user relations of every database the
/// catalog lists (without a catalog, as many empty databases as `base/` holds).
fn downtime_inputs(f: &Facts, catalog: Option<&Catalog>, jobs: usize) -> plan::estimate::Inputs {
    let per_database = catalog.map_or_else(
        || vec![0; usize::try_from(f.usage.databases).unwrap_or(1)],
        |c| c.databases.iter().map(|d| d.user_relations).collect(),
    );
    plan::estimate::Inputs::new(f.mode, per_database, jobs as u64, f.usage.total_relations())
}

fn build_plan(
    args: &CheckArgs,
    purpose: Purpose,
    f: &Facts,
    catalog: Option<&Catalog>,
    host: service::Host,
) -> Plan {
    let (port, analyze, leave_stopped) = purpose.settings(f.old_port);
    let jobs = args.jobs.map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        |j| j as usize,
    );
    let downtime_inputs = downtime_inputs(f, catalog, jobs);
    let estimate = plan::estimate::estimate(&downtime_inputs, None);
    let side = |install: &Install,
                datadir: &Path,
                layout: &layout::Layout,
                port: u16,
                waldir: Option<&PathBuf>,
                options: &[String]| Side {
        datadir: datadir.to_path_buf(),
        confdir: layout.confdir().map(Path::to_path_buf),
        waldir: waldir.cloned(),
        options: options.to_vec(),
        bindir: install.bindir.clone(),
        major: install.major,
        version: install.version.clone(),
        port,
    };
    Plan {
        layout: f.old_layout.clone(),
        old: side(
            &f.old,
            &f.cluster.datadir,
            &f.old_layout,
            f.old_port,
            f.waldirs.as_ref().map(|w| &w.0),
            &f.cmdline.args,
        ),
        new: side(
            &f.new,
            &f.new_datadir,
            &f.new_layout,
            port,
            f.waldirs.as_ref().map(|w| &w.1),
            &[],
        ),
        host,
        mode: f.mode,
        mode_reason: f.mode_reason.clone(),
        mode_auto: args.mode == Mode::Auto,
        mode_fallback: None,
        jobs,
        owner: f.cluster.owner.clone(),
        work_dir: layout::work_dir(&f.new_datadir, f.old.major, f.new.major),
        old_running: f.cluster.is_running(),
        old_state: f.old_state.clone(),
        tablespaces: f.tablespaces.clone(),
        initdb: catalog.map(|c| InitdbOptions::from_old(c, &f.control, group_access(&f.cluster))),
        space: f.space.clone(),
        relation_bytes: f.usage.total_relations(),
        user_relation_bytes: user_bytes(&f.cluster),
        estimated_downtime_secs: estimate.whole_seconds(),
        downtime_inputs,
        downtime_basis: estimate.basis,
        analyze,
        leave_stopped,
        collations: plan::collations::section(
            catalog.map_or(&[], |c| c.collations.as_slice()),
            &[],
            args.collations,
            jobs,
        ),
        // Filled from the step order by the commands (steps are a higher layer).
        steps: Vec::new(),
        replication: None,
    }
}

/// The old data directory and layout named by `--cluster` or `--old-datadir`.
pub(crate) fn old_target(
    root: &Path,
    args: &CheckArgs,
) -> Result<(PathBuf, layout::Layout), Finding> {
    resolve_target(
        root,
        args.target.cluster.as_ref(),
        args.target.old_datadir.as_deref(),
    )
}

/// `old_target` for the commands that only name an upgrade (status, rollback, finalize).
pub(crate) fn resolve_target(
    root: &Path,
    cluster: Option<&crate::host::debian::ClusterId>,
    old_datadir: Option<&Path>,
) -> Result<(PathBuf, layout::Layout), Finding> {
    let given = old_datadir.map(absolute);
    let (datadir, layout) = layout::resolve_old(root, cluster, given.as_deref())?;
    Ok((absolute(&datadir), layout))
}

fn find_old(
    runner: &Runner,
    root: &Path,
    args: &CheckArgs,
    cluster: &Cluster,
) -> Result<Install, Finding> {
    let old = match &args.old_bindir {
        Some(b) => Install::probe(runner, b, Role::Old),
        None => install::find_for_major(runner, root, cluster.major, Role::Old),
    }?;
    if old.major != cluster.major {
        return Err(Finding::error(
            "bindir-major-mismatch",
            format!(
                "{} is PostgreSQL {}, but {} holds a PostgreSQL {} cluster",
                old.bindir.display(),
                old.major,
                cluster.datadir.display(),
                cluster.major
            ),
            format!(
                "Pass --old-bindir with the bin directory of PostgreSQL {}",
                cluster.major
            ),
        ));
    }
    Ok(old)
}

fn resolve_new_datadir(
    args: &CheckArgs,
    old: &Path,
    old_major: u32,
    new_major: u32,
) -> Result<PathBuf, Finding> {
    if let Some(d) = &args.target.new_datadir {
        return Ok(crate::inspect::paths::normalized(d));
    }
    layout::versioned_sibling(old, old_major, new_major).ok_or_else(|| {
        Finding::error(
            "no-default-new-datadir",
            format!(
                "cannot choose the new data directory: no component of {} names the old major {old_major}",
                old.display()
            ),
            "Pass --new-datadir (for example a sibling directory on the same filesystem)",
        )
    })
}

/// User relation files of the old cluster, in the data directory and its tablespaces.
fn user_bytes(cluster: &Cluster) -> u64 {
    let prefix = format!("PG_{}_", cluster.major);
    let in_tablespaces: u64 = cluster
        .tablespaces
        .iter()
        .filter_map(|t| std::fs::read_dir(&t.location).ok())
        .flatten()
        .filter_map(std::result::Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| space::user_relation_bytes(&e.path()))
        .sum();
    space::user_relation_bytes(&cluster.datadir.join("base")) + in_tablespaces
}

fn find_new(
    runner: &Runner,
    root: &Path,
    args: &CheckArgs,
    old_major: u32,
) -> Result<Install, Finding> {
    if let Some(b) = &args.new_bindir {
        let install = Install::probe(runner, b, Role::New)?;
        return match args.new_version {
            // A container may set PGLEAP_NEW_VERSION for the image while a flag names the
            // bindir: they must agree, or the upgrade would not be the one asked for.
            Some(v) if v != install.major => Err(Finding::error(
                "new-version-mismatch",
                format!(
                    "--new-bindir {} holds PostgreSQL {}, but --new-version (or PGLEAP_NEW_VERSION) asks for {v}",
                    b.display(),
                    install.major
                ),
                "Drop one of them, or make them name the same major",
            )),
            _ => Ok(install),
        };
    }
    if let Some(v) = args.new_version {
        return install::find_for_major(runner, root, v, Role::New);
    }
    // The newest installed major above the old one, as pg_upgradecluster does.
    for major in (old_major + 1..=30).rev() {
        if let Ok(i) = install::find_for_major(runner, root, major, Role::New) {
            return Ok(i);
        }
    }
    Err(Finding::error(
        "no-new-install",
        format!("no PostgreSQL installation newer than {old_major} found"),
        "Pass --new-bindir DIR or --new-version N",
    ))
}

fn connect_users(args: &CheckArgs, owner: &Owner) -> Vec<String> {
    let mut users: Vec<String> = args.username.iter().cloned().collect();
    users.push(owner.name.clone());
    users.push("postgres".into());
    users
}

/// Reads the old catalog: from the live server, or by a fenced start and stop (which also
/// runs crash recovery when the cluster was not shut down cleanly; `check` skips that).
/// `crashed` is pg_control's state when the last shutdown was not clean.
fn read_catalog(
    args: &CheckArgs,
    purpose: Purpose,
    f: &Facts,
    findings: &mut Findings,
) -> Result<Option<Catalog>> {
    let (runner, cluster, old, old_port) = (&f.runner, &f.cluster, &f.old, f.old_port);
    let crashed = f.crashed.as_deref();
    let users = connect_users(args, &cluster.owner);
    if let Some(pm) = cluster.postmaster() {
        return Ok(read_from_live(runner, pm, old_port, users, findings));
    }
    if let (Some(state), Purpose::Check) = (crashed, purpose) {
        findings.push(Finding::warning(
            "unclean-shutdown",
            format!("the old cluster was not shut down cleanly (state: {state}); extension checks and pg_upgrade --check were skipped"),
            "pgleap upgrade runs crash recovery (a fenced start and clean stop) first; or start and stop the server yourself, then run check again",
        ));
        return Ok(None);
    }
    if let crate::exec::postmaster::Liveness::Stale { pid } = cluster.liveness {
        // A killed postmaster lingers as a zombie until its parent reaps it, and PostgreSQL
        // will not start while that pid exists.
        if !crate::exec::postmaster::wait_reaped(pid, std::time::Duration::from_secs(60)) {
            return Err(Error::from(Finding::error(
                "postmaster-not-reaped",
                format!(
                    "postmaster.pid in {} names process {pid}, a server that was killed but not reaped by its parent (a zombie); PostgreSQL will not start while it exists",
                    cluster.datadir.display()
                ),
                "Let its parent reap it (in a container, run an init such as tini, or restart the container), then run pgleap again",
            )));
        }
    }
    // The server is stopped, so a single-user backend can name the bootstrap superuser: the
    // role sure to exist when connecting through the fence.
    let mut users = users;
    match catalog::bootstrap_superuser(runner, old, &cluster.confdir) {
        Ok(name) => users.insert(0, name),
        Err(e) => tracing::debug!("cannot learn the bootstrap superuser: {e}"),
    }
    let fence = Fence::new(&cluster.owner)?;
    let log = tempfile_log(fence.socket_dir());
    server::start(
        runner,
        &old.bindir,
        &cluster.confdir,
        Some((&fence, old_port)),
        &log,
    )?;
    crate::exec::interrupt::fault("fenced-old-up");
    let target = db::Target::new(fence.socket_dir(), old_port, users);
    let result = db::call::<Catalog>(runner, &["catalog"], &target);
    let stopped = server::stop(runner, &old.bindir, &cluster.datadir);
    if crashed.is_some() {
        findings.push(Finding::warning(
            "crash-recovered",
            "the old cluster was not shut down cleanly; pgleap ran crash recovery (a fenced start and a clean stop)",
            "",
        ));
    }
    let catalog = result?;
    stopped?;
    Ok(Some(catalog))
}

/// The catalog of the running old server, over its own socket.
fn read_from_live(
    runner: &Runner,
    pm: &crate::exec::postmaster::Postmaster,
    old_port: u16,
    users: Vec<String>,
    findings: &mut Findings,
) -> Option<Catalog> {
    let Some(socket_dir) = &pm.socket_dir else {
        findings.push(Finding::error(
            "no-socket",
            "the old server listens on no Unix socket (unix_socket_directories is empty)",
            "Set unix_socket_directories and restart it, or stop it and run pgleap again",
        ));
        return None;
    };
    let target = db::Target::new(socket_dir, pm.port.unwrap_or(old_port), users);
    match db::call::<Catalog>(runner, &["catalog"], &target) {
        Ok(c) => Some(c),
        Err(e) => {
            findings.push(Finding::error(
                "cannot-connect",
                format!("cannot read the old cluster's catalog from the running server: {e}"),
                "Allow the owner to connect over the local socket (peer or trust in pg_hba.conf), pass --username, or set PGPASSWORD",
            ));
            None
        }
    }
}

fn tempfile_log(dir: &Path) -> PathBuf {
    dir.join("old-server.log")
}

impl Prepared {
    /// Rebuilds the context of an upgrade from its journaled plan (resume, rollback,
    /// finalize): the same owner, binaries and paths as the run that wrote it.
    pub(crate) fn from_plan(plan: Plan) -> Result<Prepared> {
        let runner = Runner::new(plan.owner.clone(), Some(plan.work_dir.join("logs")));
        let old = Install::probe(&runner, &plan.old.bindir, Role::Old).map_err(Error::from)?;
        let new = Install::probe(&runner, &plan.new.bindir, Role::New).map_err(Error::from)?;
        let mut cluster = Cluster::inspect(&plan.old.datadir).map_err(Error::from)?;
        cluster.confdir = plan.old.conf_dir();
        Ok(Prepared {
            plan,
            findings: Findings::default(),
            runner,
            cluster,
            old,
            new,
            collation_facts: Vec::new(),
        })
    }
}

/// Whether the old data directory lets its group read it: PostgreSQL accepts mode 0700 or
/// 0750 (`initdb --allow-group-access`), and the new one is made the same.
fn group_access(cluster: &Cluster) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(&cluster.datadir).is_ok_and(|m| m.mode() & 0o040 != 0)
}
