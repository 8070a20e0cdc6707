//! The window of a 17+ old cluster with logical slots to carry opens with a fence: pg_upgrade
//! carries such a slot only when its consumer has confirmed every change before the server
//! stopped, and clients writing until the stop keep the consumers behind.
//!
//! 1. A slot with changes and no consumer (or invalidated) is refused while nothing has been
//!    touched, or with `--slots drop` dropped below.
//! 2. The fence: the old cluster's `pg_hba.conf` (the server's `hba_file`) is replaced, by
//!    the owner, with one admitting only replication connections, pgleap's own local role and
//!    the connected logical consumers' roles (`config::hba`); the original is journaled
//!    first. The server reloads it, then every other client session is terminated, again at
//!    each poll.
//! 3. A bounded wait, with progress, until each slot's consumer has confirmed the position
//!    the fence began at (WAL written after it by the server itself, such as running-xacts
//!    and checkpoint records, is what pg_upgrade's own check tolerates, and what the
//!    walsenders send at shutdown). Still behind at the bound: refused, or dropped with
//!    `--slots drop`.
//! 4. The slots to drop are dropped by name.
//!
//! After the stop, [`lift`] puts the original file back, byte for byte with its mode. A run
//! killed in between leaves the journal's record: the resumed upgrade and `pgleap rollback`
//! both lift it first.

use std::time::{Duration, Instant};

use crate::config::hba::{self, HbaFence};
use crate::error::{Error, Finding, Result};
use crate::exec::interrupt;
use crate::exec::ownerfs;
use crate::exec::postmaster::{self, Liveness};
use crate::exec::server;
use crate::inspect::db;
use crate::inspect::fence::Poll;
use crate::inspect::replication::{Replication, Slot};
use crate::plan::prepare::Prepared;
use crate::preflight::replication::{Fate, SlotPolicy, behind_finding, not_caught_up};
use crate::state::journal::Journal;

use super::step::{Run, superuser};

/// How long consumers are waited for once the fence is up.
const CATCH_UP: Duration = Duration::from_secs(120);

/// Before stop-old: for a running 17+ old cluster with logical slots, the fence, the wait and
/// the drops. An error leaves the original `pg_hba.conf` back in place.
pub(crate) fn before_stop(run: &mut Run<'_>) -> Result<()> {
    let p = run.p;
    let Some(section) = &p.plan.replication else {
        return Ok(());
    };
    if p.plan.old.major < 17 {
        return Ok(());
    }
    let Liveness::Running(pm) = postmaster::liveness(&p.plan.old.datadir) else {
        return Ok(());
    };
    let Some(socket) = pm.socket_dir else {
        return Ok(());
    };
    let users = vec![superuser(p), p.runner.owner().name.clone()];
    let target = db::Target::new(&socket, pm.port.unwrap_or(p.plan.old.port), users);
    let first: Poll = db::call(&p.runner, &["fence-poll"], &target)?;
    if !first.facts.slots.iter().any(Slot::is_logical) {
        return Ok(());
    }
    let drop_allowed = section.policies.slots != SlotPolicy::Refuse;
    // Planned drops, then slots nobody will consume: refused before anything is touched.
    let mut doomed: Vec<(String, String)> = first
        .facts
        .slots
        .iter()
        .filter(|s| s.is_logical() && section.fate_of_slot(&s.name) == Some(Fate::Dropped))
        .map(|s| {
            let why =
                not_caught_up(s).unwrap_or_else(|| "it had not caught up at the preflight".into());
            (s.name.clone(), why)
        })
        .collect();
    let stuck = blockers(&first.facts, &doomed);
    if !stuck.is_empty() && !drop_allowed {
        return Err(refusal(&stuck));
    }
    doomed.extend(stuck);
    let done = put_up(run, &target, &first)
        .and_then(|()| wait(run, &target, &mut doomed, drop_allowed))
        .and_then(|()| drop_slots(run, &target, &doomed));
    if let Err(e) = done {
        if let Err(l) = lift(p, &mut run.journal) {
            run.warnings.push(Finding::warning(
                "hba-fence-left",
                format!("could not put the original pg_hba.conf back: {l}"),
                "Run pgleap rollback, which puts it back",
            ));
        }
        return Err(e);
    }
    Ok(())
}

/// Carried logical slots pg_upgrade would refuse whatever the wait: invalidated, or with
/// changes and no consumer. `(name, why)`.
fn blockers(facts: &Replication, doomed: &[(String, String)]) -> Vec<(String, String)> {
    facts
        .slots
        .iter()
        .filter(|s| s.is_logical() && !doomed.iter().any(|(n, _)| *n == s.name))
        .filter(|s| s.invalidated || (!s.active && s.pending_changes == Some(true)))
        .filter_map(|s| not_caught_up(s).map(|why| (s.name.clone(), why)))
        .collect()
}

fn refusal(stuck: &[(String, String)]) -> Error {
    let whys: Vec<String> = stuck.iter().map(|(_, w)| w.clone()).collect();
    Error::Refused {
        findings: vec![behind_finding(&whys)],
    }
}

/// `X/Y` → a number, for comparisons.
fn lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Writes the fenced file (the original journaled first) and has the server reload it.
/// Errors the server finds in the file on disk are a refusal (its rules are not the ones
/// the server runs with). A file pgleap may not fence (not a regular file owned by the
/// owner) or that the server rejects once fenced is a warning: the wait then runs without
/// the fence, clients still connecting, and the file is the original.
fn put_up(run: &mut Run<'_>, target: &db::Target, first: &Poll) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let p = run.p;
    let owner = p.runner.owner();
    let path = std::path::PathBuf::from(&first.hba_file);
    hba_errors_refusal(&path, &first.hba_errors)?;
    let meta = std::fs::symlink_metadata(&path);
    let original = ownerfs::read(owner, &path).map(String::from_utf8);
    let (mode, original) = match (meta, original) {
        (Ok(m), Ok(Ok(text))) if m.is_file() && m.uid() == owner.uid => (m.mode() & 0o7777, text),
        _ => {
            let why = format!("it is not a text file owned by {}", owner.name);
            run.warnings.push(unfenced(&path, &why));
            return Ok(());
        }
    };
    let consumers: Vec<String> = first
        .facts
        .senders
        .iter()
        .filter(|s| s.logical)
        .map(|s| s.user.clone())
        .collect();
    // The server's own rules, includes followed, and whom each admits.
    let mut request = vec!["fence-poll".to_string()];
    for role in target.users.iter().chain(&consumers) {
        request.extend(["--role".to_string(), role.clone()]);
    }
    let request: Vec<&str> = request.iter().map(String::as_str).collect();
    let rules: Poll = db::call(&p.runner, &request, target)?;
    hba_errors_refusal(&path, &rules.hba_errors)?;
    let fenced = hba::fenced(&rules.rules, &target.users, &consumers);
    run.journal.record.hba_fence = Some(HbaFence {
        path: path.clone(),
        mode,
        original,
        fenced: fenced.clone(),
    });
    run.journal.write()?;
    if let Err(e) = ownerfs::write(owner, &path, fenced.as_bytes(), mode) {
        run.journal.record.hba_fence = None;
        run.journal.write()?;
        run.warnings
            .push(unfenced(&path, &format!("writing it failed: {e}")));
        return Ok(());
    }
    interrupt::fault("fence-written");
    let check: Poll = db::call(&p.runner, &["fence-poll"], target)?;
    if !check.hba_errors.is_empty() {
        lift(p, &mut run.journal)?;
        let why = format!(
            "the server rejected the fenced file ({}), so the original was put back",
            check.hba_errors.join("; ")
        );
        run.warnings.push(unfenced(&path, &why));
        return Ok(());
    }
    server::reload(&p.runner, &p.old.bindir, &p.plan.old.datadir)?;
    run.ui.line(&format!(
        "      fenced the old server: {} now admits only replication connections, pgleap and the logical replication consumers' roles; other client sessions are terminated",
        path.display()
    ));
    interrupt::fault("fenced");
    Ok(())
}

/// The warning of a wait without the fence.
fn unfenced(path: &std::path::Path, why: &str) -> Finding {
    Finding::warning(
        "hba-fence-skipped",
        format!(
            "could not fence {}: {why}; the old server admitted clients until it stopped while the logical replication consumers caught up (sessions were still terminated at each poll)",
            path.display()
        ),
        "Keep clients away from the old server yourself during the next upgrade, or let pgleap fence it: the server's hba_file must be a regular file owned by the cluster owner",
    )
}

/// Errors the server finds in its hba file on disk: the server keeps the rules it loaded
/// before, which pgleap cannot read, and would refuse this file at its next start.
fn hba_errors_refusal(path: &std::path::Path, errors: &[String]) -> Result<()> {
    if errors.is_empty() {
        return Ok(());
    }
    Err(Error::Refused {
        findings: vec![Finding::error(
            "hba-file-errors",
            format!(
                "the old server finds errors in {} as it is on disk now ({}): it still runs with the rules it loaded before, which pgleap cannot fence, and neither it nor the new cluster, which gets this file, would start with it",
                path.display(),
                errors.join("; ")
            ),
            "Correct the file (SELECT file_name, line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL lists each error), reload the server, then run pgleap upgrade again",
        )],
    })
}

/// Polls (terminating client sessions each time) until every logical slot not doomed has
/// confirmed the position the fence began at. A slot that cannot catch up is refused, or
/// joins `doomed` when drops are allowed.
fn wait(
    run: &mut Run<'_>,
    target: &db::Target,
    doomed: &mut Vec<(String, String)>,
    drop_allowed: bool,
) -> Result<()> {
    let p = run.p;
    let started = Instant::now();
    let mut said = Instant::now();
    let mut from: Option<u64> = None;
    let mut cut = 0;
    loop {
        let poll: Poll = db::call(&p.runner, &["fence-poll", "--terminate"], target)?;
        cut += poll.terminated.len();
        for t in poll.terminated.iter().take(5) {
            run.ui.line(&format!("      terminated client session {t}"));
        }
        let here = poll.facts.current_lsn.as_deref().and_then(lsn);
        let mark = *from.get_or_insert(here.unwrap_or(0));
        let stuck = blockers(&poll.facts, doomed);
        if !stuck.is_empty() {
            if !drop_allowed {
                return Err(refusal(&stuck));
            }
            doomed.extend(stuck);
        }
        let behind = behind(&poll.facts, doomed, mark);
        // A session terminated by this poll may have committed as it went: poll again, so
        // that a slot it left behind is seen (until the bound, for a role the fence admits
        // that keeps reconnecting).
        let settled = poll.terminated.is_empty() || started.elapsed() > CATCH_UP;
        if behind.is_empty() && settled {
            let note = format!(
                "fenced {:.0}s, {cut} client session(s) terminated",
                started.elapsed().as_secs_f64()
            );
            run.journal.record.replication.fence = Some(note);
            return Ok(());
        }
        if started.elapsed() > CATCH_UP && !behind.is_empty() {
            let whys: Vec<(String, String)> = behind
                .into_iter()
                .map(|(n, w)| {
                    (
                        n,
                        format!(
                            "{w} of the position the fence began at, after {}s",
                            CATCH_UP.as_secs()
                        ),
                    )
                })
                .collect();
            if !drop_allowed {
                return Err(refusal(&whys));
            }
            doomed.extend(whys);
            continue;
        }
        if said.elapsed() > Duration::from_secs(5) {
            progress(run, started, &behind);
            said = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Connected consumers of slots not doomed that have not confirmed `mark` yet: `(name, how
/// far behind)`.
fn behind(facts: &Replication, doomed: &[(String, String)], mark: u64) -> Vec<(String, String)> {
    facts
        .slots
        .iter()
        .filter(|s| s.is_logical() && s.active && !doomed.iter().any(|(n, _)| *n == s.name))
        .filter_map(|s| {
            let at = s.confirmed_flush_lsn.as_deref().and_then(lsn).unwrap_or(0);
            (at < mark).then(|| {
                (
                    s.name.clone(),
                    format!("'{}' {} KiB behind", s.name, (mark - at) / 1024),
                )
            })
        })
        .collect()
}

fn progress(run: &Run<'_>, started: Instant, behind: &[(String, String)]) {
    let list: Vec<&str> = behind.iter().map(|(_, w)| w.as_str()).collect();
    let what = if list.is_empty() {
        "client sessions of roles the fence admits keep connecting; terminating them".to_string()
    } else {
        format!(
            "waiting for logical replication consumers to confirm every change: {}",
            list.join(", ")
        )
    };
    run.ui.line(&format!(
        "      fenced {:.0}s (at most {}s): {what}",
        started.elapsed().as_secs_f64(),
        CATCH_UP.as_secs(),
    ));
}

/// Drops the doomed slots by name (`--slots drop`) and journals each.
fn drop_slots(run: &mut Run<'_>, target: &db::Target, doomed: &[(String, String)]) -> Result<()> {
    if doomed.is_empty() {
        return Ok(());
    }
    let mut request = vec!["drop-slots".to_string()];
    for (name, _) in doomed {
        request.extend(["--slot".to_string(), name.clone()]);
    }
    let request: Vec<&str> = request.iter().map(String::as_str).collect();
    let answers: Vec<(String, Option<String>)> = db::call(&run.p.runner, &request, target)?;
    let mut failed = Vec::new();
    for (name, error) in answers {
        let why = doomed
            .iter()
            .find(|(n, _)| *n == name)
            .map_or_else(String::new, |(_, w)| w.clone());
        match error {
            None => {
                run.ui.line(&format!(
                    "      dropped logical replication slot '{name}' (--slots drop): {why}"
                ));
                run.journal.record.replication.dropped.push((name, why));
            }
            Some(e) => failed.push(format!("'{name}': {e}")),
        }
    }
    run.journal.write()?;
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Refused {
            findings: vec![Finding::error(
                "replication-slot-drop-failed",
                format!(
                    "could not drop the logical replication slots pg_upgrade would refuse: {}",
                    failed.join("; ")
                ),
                "Drop them yourself with SELECT pg_drop_replication_slot('name'), then run pgleap upgrade again",
            )],
        })
    }
}

/// Puts the original `pg_hba.conf` back when a fence is journaled (after the stop, on
/// resume, on rollback), has a running old server reload it, and clears the record.
/// Returns what it did.
pub(crate) fn lift(p: &Prepared, j: &mut Journal) -> Result<Option<String>> {
    let Some(f) = j.record.hba_fence.clone() else {
        return Ok(None);
    };
    let owner = p.runner.owner();
    let now = ownerfs::read(owner, &f.path).ok();
    if now.as_deref() != Some(f.original.as_bytes()) {
        ownerfs::write(owner, &f.path, f.original.as_bytes(), f.mode)?;
    }
    if matches!(
        postmaster::liveness(&p.plan.old.datadir),
        Liveness::Running(_)
    ) {
        server::reload(&p.runner, &p.old.bindir, &p.plan.old.datadir)?;
    }
    j.record.hba_fence = None;
    j.write()?;
    Ok(Some(format!(
        "put the original {} back (the fence before the stop)",
        f.path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(name: &str, active: bool, confirmed: &str, pending: Option<bool>) -> Slot {
        Slot {
            name: name.into(),
            kind: "logical".into(),
            plugin: Some("pgoutput".into()),
            database: Some("app".into()),
            active,
            restart_lsn: Some("0/1000000".into()),
            confirmed_flush_lsn: Some(confirmed.into()),
            retained_bytes: None,
            lag_bytes: None,
            pending_changes: pending,
            invalidated: false,
        }
    }

    #[test]
    fn waits_for_connected_consumers_short_of_the_fence_only() {
        let facts = Replication {
            slots: vec![
                slot("short", true, "0/2FFF000", None),
                slot("there", true, "0/3000000", None),
                slot("idle", false, "0/1000000", Some(false)),
                slot("doomed", true, "0/1000000", None),
            ],
            ..Replication::default()
        };
        let doomed = [("doomed".to_string(), String::new())];
        let got = behind(&facts, &doomed, lsn("0/3000000").unwrap());
        assert_eq!(
            got,
            [("short".to_string(), "'short' 4 KiB behind".to_string())]
        );
        assert!(blockers(&facts, &doomed).is_empty());
    }

    #[test]
    fn a_slot_with_changes_and_no_consumer_or_invalidated_cannot_be_waited_for() {
        let mut gone = slot("gone", true, "0/1000000", None);
        gone.invalidated = true;
        let facts = Replication {
            slots: vec![
                slot("stuck", false, "0/1000000", Some(true)),
                slot("unknown", false, "0/1000000", None),
                gone,
            ],
            ..Replication::default()
        };
        let names: Vec<String> = blockers(&facts, &[]).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["stuck", "gone"]);
    }

    #[test]
    fn compares_positions() {
        assert_eq!(lsn("0/16B3748"), Some(0x016B_3748));
        assert!(lsn("1/0") > lsn("0/FFFFFFFF"));
        assert_eq!(lsn("nonsense"), None);
    }
}
