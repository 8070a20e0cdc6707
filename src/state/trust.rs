//! What root may believe. The journal sits in a directory the cluster owner can write, so
//! when resume, rollback or finalize read it back, nothing it records is obeyed blindly:
//! the owner is whoever owns the old data directory, hooks and service managers come from
//! this invocation and this host (a journal that says otherwise is refused, naming both),
//! and PostgreSQL programs run only from directories no other user can change.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use crate::error::{Error, Finding, Result};
use crate::exec::process::{Owner, Runner};
use crate::host::layout::Layout;
use crate::host::service;
use crate::plan::Plan;

fn refuse(code: &'static str, message: String, fix: &str) -> Error {
    Error::Refused {
        findings: vec![Finding::error(code, message, fix)],
    }
}

/// What this invocation says about the host: `--root` and the hooks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Given<'a> {
    pub(crate) root: &'a Path,
    pub(crate) old_layout: &'a Layout,
    pub(crate) stop_command: Option<&'a str>,
    pub(crate) start_command: Option<&'a str>,
}

/// Checks a journaled plan against the disk and this invocation, and replaces what it must
/// not be trusted for (the owner, how servers are controlled) with what was found here.
pub(crate) fn verify(plan: &mut Plan, given: &Given<'_>) -> Result<()> {
    plan.owner = verified_owner(plan)?;
    verify_hooks(plan, given)?;
    let root = crate::host::root::host_root(Some(given.root))?;
    if plan.host.root != root {
        return Err(refuse(
            "journal-root",
            format!(
                "the journal records --root {}, this run --root {}",
                plan.host.root.display(),
                root.display()
            ),
            "Run pgleap with the same --root as the upgrade",
        ));
    }
    let new_layout = given
        .old_layout
        .for_new(&root, plan.new.major, &plan.new.datadir);
    let runner = Runner::new(plan.owner.clone(), None);
    let here = service::plan_host(
        &runner,
        &root,
        given.old_layout,
        &new_layout,
        given.stop_command,
        given.start_command,
    );
    for (what, recorded, found) in [
        (
            "start the old server",
            &plan.host.old.start,
            &here.old.start,
        ),
        ("stop the old server", &plan.host.old.stop, &here.old.stop),
        (
            "start the new server",
            &plan.host.new.start,
            &here.new.start,
        ),
        ("stop the new server", &plan.host.new.stop, &here.new.stop),
    ] {
        if recorded != found {
            return Err(refuse(
                "journal-service",
                format!(
                    "the journal records {} to {what}, this host {}",
                    recorded.describe("run"),
                    found.describe("run")
                ),
                "Run pgleap on the host and with the options of the upgrade; if the journal was changed, find out who changed it",
            ));
        }
    }
    if let Some(b) = &plan.host.boot {
        if !crate::host::layout::boot_belongs(b, &root, given.old_layout, &new_layout) {
            return Err(refuse(
                "journal-boot",
                format!("the journal records boot settings that are not this cluster's: {b:?}"),
                "Find out who changed the journal",
            ));
        }
    }
    plan.host.old = here.old;
    plan.host.new = here.new;
    plan.layout = given.old_layout.clone();
    Ok(())
}

/// The owner: whoever owns the old data directory, never root when pgleap is root.
fn verified_owner(plan: &Plan) -> Result<Owner> {
    let old = &plan.old.datadir;
    let m = std::fs::metadata(old).map_err(|e| Error::io("cannot read", old, e))?;
    let found = Owner::from_uid(m.uid(), m.gid());
    if plan.owner.uid != found.uid {
        return Err(refuse(
            "journal-owner",
            format!(
                "the journal names uid {} ({}) as the owner, but {} belongs to uid {} ({})",
                plan.owner.uid,
                plan.owner.name,
                old.display(),
                found.uid,
                found.name
            ),
            "The journal was changed or belongs to another cluster; find out who changed it",
        ));
    }
    if found.uid == 0 && nix::unistd::geteuid().is_root() {
        return Err(refuse(
            "owned-by-root",
            format!(
                "{} is owned by root; PostgreSQL refuses to run as root",
                old.display()
            ),
            "chown the data directory back to the user that runs the server",
        ));
    }
    Ok(found)
}

fn verify_hooks(plan: &Plan, given: &Given<'_>) -> Result<()> {
    for (flag, recorded, here) in [
        (
            "--stop-command",
            plan.host.stop_command.as_deref(),
            given.stop_command,
        ),
        (
            "--start-command",
            plan.host.start_command.as_deref(),
            given.start_command,
        ),
    ] {
        if recorded != here {
            let show = |v: Option<&str>| {
                v.map_or_else(|| "none given".into(), |c| format!("{flag} {c:?}"))
            };
            return Err(refuse(
                "journal-hooks",
                format!(
                    "the journal records {}, this run {}",
                    recorded.map_or_else(|| format!("no {flag}"), |c| format!("{flag} {c:?}")),
                    show(here)
                ),
                "Hooks run as root and are taken from the command line only: pass the same hooks as the upgrade if they are yours; if you did not write the recorded one, someone changed the journal",
            ));
        }
    }
    Ok(())
}
