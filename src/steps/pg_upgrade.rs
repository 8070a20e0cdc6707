//! pg_upgrade itself: `--check` before the window, the real run inside it, with its
//! progress shown and its findings quoted when it refuses.

use std::path::{Path, PathBuf};

use crate::error::{Error, Finding, Result};
use crate::exec::ownerfs::{self, Follow, READ_LIMIT, read_regular_text};
use crate::exec::phases::{PhaseClock, PhaseTime};
use crate::exec::process::Opts;
use crate::exec::process::Owner;
use crate::exec::server::{self, Fence};
use crate::plan::Mode;
use crate::plan::prepare::Prepared;
use crate::state::identity;
use crate::state::journal::State;

use super::step::{Phase, Run, Step, Undoing};

/// The real run, inside the window.
pub(crate) struct PgUpgrade;

impl Step for PgUpgrade {
    fn name(&self) -> &'static str {
        "pg_upgrade"
    }
    fn reaches(&self) -> State {
        State::Upgraded
    }
    fn phase(&self) -> Phase {
        Phase::Window
    }

    fn run(&self, run: &mut Run<'_>) -> Result<()> {
        let new = run.p.plan.new.datadir.clone();
        let confdir = run.p.plan.new.conf_dir();
        // The journaled mode: auto may have fallen back from copy-file-range at the check.
        let mode = run.journal.record.plan.mode;
        let what = format!("--{} with {} jobs", mode.name(), run.p.plan.jobs);
        run.step(self, &what, |r| {
            let phases = pg_upgrade(
                r.p,
                mode,
                &new,
                &confdir,
                &r.p.plan.work_dir,
                &r.log_dir,
                false,
            )?;
            if let Some(t) = crate::exec::phases::transfer(&phases) {
                r.ui.line(&format!("      {}: {:.1}s", t.name, t.seconds));
            }
            r.journal.record.pg_upgrade_phases = phases;
            // pg_upgrade started and stopped the old cluster; from now on nothing should.
            // What follows is journaled with the step's end: no extra write in the window.
            r.journal.record.identity.old_control_mtime =
                identity::control_mtime(&r.p.plan.old.datadir);
            // Without this record, a later rollback judges a start from pg_control's state
            // alone.
            match crate::steps::crossing::new_checkpoint(r.p) {
                Ok(c) => r.journal.record.new_checkpoint = Some(c),
                Err(e) => tracing::warn!("cannot record the new cluster's checkpoint: {e}"),
            }
            Ok(())
        })
    }

    /// Stops the servers pg_upgrade left running (on the new and the old data directory),
    /// then undoes its one change to the old cluster: link mode's renamed `pg_control`.
    fn undo(&self, u: &mut Undoing<'_>) -> Result<()> {
        u.stop_new_fenced()?;
        u.stop_on_old()?;
        let owner = u.p.runner.owner();
        u.notes
            .extend(restore_control(owner, &u.p.plan.old.datadir)?);
        Ok(())
    }
}

/// Link mode: pg_upgrade disables the old cluster by renaming `global/pg_control`. While the
/// new cluster never started, the old data files are unchanged and renaming back restores it.
pub(crate) fn restore_control(owner: &Owner, old: &Path) -> Result<Option<String>> {
    let control = old.join("global/pg_control");
    let renamed = old.join("global/pg_control.old");
    if renamed.exists() && !control.exists() {
        ownerfs::rename_as(owner, &renamed, &control)?;
        return Ok(Some(
            "restored global/pg_control from pg_control.old".into(),
        ));
    }
    Ok(None)
}

/// Runs pg_upgrade (or `pg_upgrade --check`) in `mode` from `cwd`, where it leaves its
/// scripts, and moves its log directory into `log_dir`; returns how long each of its phases
/// took. Configuration directories outside the
/// data directories (Debian) are what pg_upgrade is given: it asks `postgres -C data_directory`.
pub(crate) fn pg_upgrade(
    p: &Prepared,
    mode: Mode,
    new_datadir: &Path,
    new_confdir: &Path,
    cwd: &Path,
    log_dir: &Path,
    check: bool,
) -> Result<Vec<PhaseTime>> {
    let fence = Fence::new(p.runner.owner())?;
    let args = arguments(p, mode, &fence, new_confdir, check)?;
    let progress = crate::ui::progress::Progress::new(if check {
        "pg_upgrade --check"
    } else {
        "pg_upgrade"
    });
    // Header lines name the phase; indented lines are its items (databases, files).
    let phase = std::sync::Mutex::new(String::new());
    let clock = std::sync::Mutex::new(PhaseClock::default());
    let started = std::time::Instant::now();
    let on_output = |line: &str| {
        clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .line(line, started.elapsed().as_secs_f64());
        let mut current = phase
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if line.starts_with(' ') && !current.is_empty() {
            progress.detail(&format!("{current}: {}", short_item(line)));
        } else {
            *current = pg_upgrade_phase(line);
            progress.detail(&current);
        }
    };
    let opts = Opts {
        cwd: Some(cwd),
        log_name: Some(if check {
            "pg_upgrade-check"
        } else {
            "pg_upgrade"
        }),
        on_output: Some(&on_output),
        ..Opts::default()
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let out = std::thread::scope(|s| {
        if !check && mode != Mode::Link && mode != Mode::Swap {
            // Copying modes: follow the new cluster's user relation files as they grow.
            let dirs = copied_dirs(p, new_datadir);
            let expected = p.plan.user_relation_bytes;
            let (progress, stop) = (&progress, &stop);
            s.spawn(move || crate::ui::progress::watch_copy(progress, dirs, expected, stop));
        }
        let out = p.runner.run_unchecked(&p.new.pg_upgrade(), &args, &opts);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        out
    })?;
    progress.finish();
    let phases = clock
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .finish(started.elapsed().as_secs_f64());
    let moved = move_output_dir(p.runner.owner(), new_datadir, log_dir, check);
    if out.status.success() {
        Ok(phases)
    } else {
        let report = moved
            .as_ref()
            .map(|d| format!(" Its report files are in {}.", d.display()))
            .unwrap_or_default();
        if check {
            let quoted = with_report_files(
                &pg_upgrade_findings(&if out.stdout().trim().is_empty() {
                    // Usage errors go to stderr, with nothing on stdout.
                    out.stderr()
                } else {
                    out.stdout()
                }),
                moved.as_deref(),
                &[new_datadir, new_confdir],
            ) + &server_fatal(moved.as_deref());
            Err(check_refused(&quoted, &report))
        } else {
            Err(crate::exec::process::failure(
                &p.new.pg_upgrade(),
                &args,
                &out,
            ))
        }
    }
}

/// PostgreSQL's default `shared_buffers` in blocks (128MB of 8kB pages).
const PG_UPGRADE_SHARED_BUFFERS: u64 = 16384;

/// `-c shared_buffers=16384` when the cluster configured in `confdir` sets more: pg_upgrade's
/// own servers only dump, restore and freeze catalogs, and each of their starts (four in a
/// run) sets up the whole buffer pool first: with 4GB, 0.1 s more per start on a 2-core VM
/// (pg_ctl's polling rounds it up), and 0.6 s less per pg_upgrade without it (README
/// "Performance"). Never raised (a smaller pool may be all the host's huge pages hold), and
/// the user's setting is what the new server runs with afterwards.
fn fewer_buffers(
    p: &Prepared,
    install: &crate::inspect::install::Install,
    confdir: &Path,
) -> String {
    let set = crate::inspect::settings::setting(&p.runner, install, confdir, "shared_buffers");
    match set.and_then(|v| v.parse::<u64>().ok()) {
        Some(blocks) if blocks > PG_UPGRADE_SHARED_BUFFERS => {
            format!(" -c shared_buffers={PG_UPGRADE_SHARED_BUFFERS}")
        }
        _ => String::new(),
    }
}

/// Where the new cluster's user relation files appear: its `base` and its tablespace
/// subdirectories.
fn copied_dirs<'a>(p: &'a Prepared, new_datadir: &Path) -> impl Fn() -> Vec<PathBuf> + Send + 'a {
    let base = new_datadir.join("base");
    let (tablespaces, major) = (&p.plan.tablespaces, p.new.major);
    move || {
        let mut d = vec![base.clone()];
        d.extend(
            tablespaces
                .iter()
                .filter_map(|t| new_tablespace_dir(t, major)),
        );
        d
    }
}

/// pg_upgrade's arguments: both installations and clusters, the fenced socket directory
/// and hba, the mode's flag, and what each target major supports.
fn arguments(
    p: &Prepared,
    mode: Mode,
    fence: &Fence,
    new_confdir: &Path,
    check: bool,
) -> Result<Vec<String>> {
    let opts = p.plan.initdb.as_ref().ok_or(Error::SuperuserUnknown)?;
    let live = check && p.cluster.is_running();
    let old_port = p.plan.old.port;
    // Asked even when unused (a check against the running old server), so that the real run
    // inside the window finds the answer remembered.
    let old_buffers = fewer_buffers(p, &p.old, &p.plan.old.conf_dir());
    let hba = format!(
        "-c hba_file='{}'",
        fence.socket_dir().join("pg_hba.conf").display()
    );
    let mut args: Vec<String> = vec![
        format!("--old-bindir={}", p.old.bindir.display()),
        format!("--new-bindir={}", p.new.bindir.display()),
        format!("--old-datadir={}", p.plan.old.conf_dir().display()),
        format!("--new-datadir={}", new_confdir.display()),
        format!("--old-port={old_port}"),
        format!("--new-port={}", server::spare_port(50432, old_port)),
        format!("--username={}", opts.superuser),
        format!("--jobs={}", p.plan.jobs),
        format!("--socketdir={}", fence.socket_dir().display()),
        // Keep pg_upgrade_output.d so its logs can be moved beside the upgrade's own.
        "--retain".into(),
        // The new server pg_upgrade runs restores the schema with the carried
        // configuration: its WAL is thrown away after, and archiving it would put segments
        // named like the old cluster's first ones into the old cluster's archive.
        format!(
            "--new-options={hba} -c archive_mode=off{}",
            fewer_buffers(p, &p.new, new_confdir)
        ),
    ];
    if !live {
        // A subscriber's apply workers stay down while pg_upgrade runs the old server (its
        // -b stops the launcher only from 17).
        args.push(format!(
            "--old-options={hba} -c max_logical_replication_workers=0{old_buffers}"
        ));
    }
    let flag = mode.pg_upgrade_flag();
    // 16: --copy became an option; older pg_upgrade copies by default and rejects the flag.
    if flag != "--copy" || p.new.major >= 16 {
        args.push(flag.to_string());
    }
    if check {
        args.push("--check".into());
    }
    if p.new.major >= 17 {
        // 17: syncfs syncs each filesystem once instead of every file.
        args.push("--sync-method=syncfs".into());
    }
    Ok(args)
}

/// The refusal of a failed `pg_upgrade --check`, quoting what it found (`quoted`).
fn check_refused(quoted: &str, report: &str) -> Error {
    Error::Refused {
        findings: vec![Finding::error(
            "pg-upgrade-check",
            format!("pg_upgrade --check failed:\n{quoted}"),
            format!(
                "Fix what it reports (in the old cluster, or what an earlier attempt left in the new locations), then run pgleap again.{report}"
            ),
        )],
    }
}

/// The FATAL lines of the servers pg_upgrade started (its `pg_upgrade_server.log`, below
/// the kept output directory): when one did not start, pg_upgrade only says it could not
/// connect, and the reason is there.
fn server_fatal(moved: Option<&Path>) -> String {
    let Some(dir) = moved else {
        return String::new();
    };
    let mut fatal: Vec<String> = Vec::new();
    for entry in walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(std::result::Result::ok)
        .filter(|e| e.file_name() == "pg_upgrade_server.log")
    {
        let text = read_regular_text(entry.path(), Follow::No, READ_LIMIT).unwrap_or_default();
        // A live check's probe of the old server's lock file is no failure of anything.
        let lines = text
            .lines()
            .filter_map(|l| l.find("FATAL:").map(|i| &l[i..]))
            .filter(|l| !l.contains("lock file \"postmaster.pid\" already exists"));
        for l in lines {
            if !fatal.iter().any(|f| f == l) && fatal.len() < 3 {
                fatal.push(l.to_string());
            }
        }
    }
    let mut out = String::new();
    for l in fatal {
        out.push_str("\n    a server pg_upgrade started said: ");
        out.push_str(&l);
    }
    out
}

/// pg_upgrade's findings with the report files it names pointing at the copy pgleap kept
/// (`moved`, the former `pg_upgrade_output.d` of one of `new_dirs`, which are removed after a
/// refusal), each followed by its first lines: the offending objects, in the message itself.
fn with_report_files(findings: &str, moved: Option<&Path>, new_dirs: &[&Path]) -> String {
    use std::fmt::Write as _;
    const SHOWN: usize = 20;
    let mut text = findings.to_string();
    if let Some(moved) = moved {
        for d in new_dirs {
            let from = d.join("pg_upgrade_output.d").display().to_string();
            text = text.replace(&from, &moved.display().to_string());
        }
    }
    let files: Vec<PathBuf> = text
        .split_whitespace()
        .map(|w| w.trim_end_matches([':', '.', ',']))
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .filter(|p| p.is_file())
        .collect();
    for f in files {
        // pg_upgrade's output directory is the owner's: never follow a link planted there.
        let Ok(content) = read_regular_text(&f, Follow::No, READ_LIMIT) else {
            continue;
        };
        let lines: Vec<&str> = content.lines().filter(|l| !l.trim().is_empty()).collect();
        let _ = write!(text, "\n    {}:", f.display());
        for l in lines.iter().take(SHOWN) {
            let _ = write!(text, "\n      {}", l.trim_end());
        }
        if lines.len() > SHOWN {
            let _ = write!(text, "\n      ... {} more lines", lines.len() - SHOWN);
        }
    }
    text
}

/// pg_upgrade's phase from its latest output line: headers ("Copying user relation files")
/// as they are, per-item status lines ("  base/16384/16390") shortened to the item.
fn pg_upgrade_phase(line: &str) -> String {
    // Non-terminal pg_upgrade pads each phase to a fixed width and appends "ok" (or the
    // first item) after the padding: keep what comes before it.
    let t = line.trim();
    let t = t.split("  ").next().unwrap_or(t);
    t.chars().take(80).collect()
}

/// The last two components of a path-like status item (`…/base/16384/16390` → `16384/16390`).
fn short_item(line: &str) -> String {
    let t = line.trim();
    let parts: Vec<&str> = t.rsplit('/').take(2).collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
}

/// The new major's subdirectory of a tablespace (pg_upgrade names it PG_<major>_<catversion>),
/// once pg_upgrade has created it.
fn new_tablespace_dir(location: &Path, new_major: u32) -> Option<PathBuf> {
    let prefix = format!("PG_{new_major}_");
    std::fs::read_dir(location)
        .ok()?
        .filter_map(std::result::Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
}

/// Moves `NEW/pg_upgrade_output.d` into the log directory; returns where it went.
fn move_output_dir(
    owner: &crate::exec::process::Owner,
    new_datadir: &Path,
    log_dir: &Path,
    check: bool,
) -> Option<PathBuf> {
    let from = new_datadir.join("pg_upgrade_output.d");
    if !from.exists() {
        return None;
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let to = log_dir.join(format!(
        "pg_upgrade{}-{stamp}",
        if check { "-check" } else { "" }
    ));
    match crate::exec::ownerfs::rename_as(owner, &from, &to) {
        Ok(()) => Some(to),
        Err(e) => {
            tracing::warn!("could not move {} to {}: {e}", from.display(), to.display());
            Some(from)
        }
    }
}

/// The part of pg_upgrade's output that explains a failed check, from the check that failed
/// to the end: checks that list offending objects end their line with `fatal`; others (such
/// as prepared transactions) leave their status blank and print their message below it.
pub(crate) fn pg_upgrade_findings(stdout: &str) -> String {
    let lines: Vec<&str> = stdout.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim_end().ends_with("fatal"))
        .or_else(|| {
            lines
                .iter()
                .rposition(|l| l.starts_with("Checking ") && !l.trim_end().ends_with("ok"))
        })
        .unwrap_or(0);
    let picked: Vec<&str> = lines[start..]
        .iter()
        .copied()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("Failure, exiting"))
        .collect();
    let text = if picked.is_empty() {
        crate::exec::process::last_lines(stdout, 15)
    } else {
        picked.join("\n")
    };
    text.lines()
        .map(|l| format!("    {}", l.trim_end()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_upgrade_phases_drop_padding_and_items() {
        assert_eq!(
            pg_upgrade_phase("Copying user relation files                                 ok"),
            "Copying user relation files"
        );
        assert_eq!(
            pg_upgrade_phase("Restoring database schemas in the new cluster"),
            "Restoring database schemas in the new cluster"
        );
        assert_eq!(short_item("  /data/15/base/16384/16390"), "16384/16390");
        assert_eq!(short_item("  postgres"), "postgres");
    }

    #[test]
    fn quotes_pg_upgrade_check_findings() {
        let out = "Performing Consistency Checks\n-----------------------------\nChecking cluster versions                                     ok\nChecking for prepared transactions                            fatal\n\nYour installation contains prepared transactions.\n\nFailure, exiting\n";
        assert_eq!(
            pg_upgrade_findings(out),
            "    Checking for prepared transactions                            fatal\n    Your installation contains prepared transactions."
        );
    }

    #[test]
    fn quotes_pg_upgrade_17_check_findings() {
        // No "fatal" marker: the failed check is the last one without "ok".
        let out = "Performing Consistency Checks\n-----------------------------\nChecking cluster versions                                     ok\nChecking for prepared transactions                            \nThe source cluster contains prepared transactions\nFailure, exiting\n";
        assert_eq!(
            pg_upgrade_findings(out),
            "    Checking for prepared transactions\n    The source cluster contains prepared transactions"
        );
    }
}
