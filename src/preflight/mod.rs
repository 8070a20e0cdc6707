//! Preflight checks: every refusal and warning, one file per family, and the registry that
//! runs them: [`FAMILIES`] (each family's function and when it runs, walked in order by
//! [`run_static`] before anything is started and by [`run_catalog`] once the old catalog is
//! read) and [`CHECKS`] (every finding code, its family, phase and README line).
//!
//! Adding a refusal: a function in the file of its family (or a new family: its function and
//! one row in `FAMILIES`), one row in `CHECKS`, and a test in `tests/refusals.rs`.
//!
//! Invariant: the preflight reads and never writes; every check that can refuse produces a
//! `Finding` rather than an early return, so the user sees all problems at once (only a
//! refusal that leaves nothing to check further, such as an unreadable `pg_control`, ends
//! the walk early, with every finding so far).

pub(crate) mod archive;
pub(crate) mod cmdline;
pub(crate) mod collation;
pub(crate) mod extensions;
pub(crate) mod facts;
pub(crate) mod layout;
pub(crate) mod mode;
pub(crate) mod owner;
pub(crate) mod placement;
pub(crate) mod ports;
pub(crate) mod prepared;
pub(crate) mod replication;
pub(crate) mod space;
pub(crate) mod standby;
pub(crate) mod sync;
pub(crate) mod target;
pub(crate) mod versions;

use crate::error::{Error, Finding, Findings, Result};
use facts::{CatalogFacts, Static};

/// When a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Before anything is started: from files, flags and installed programs.
    Static,
    /// Needs the old catalog (the live server, or a fenced start of a stopped one).
    Catalog,
    /// `pg_upgrade --check` and the configuration carry-over before it: on `check`'s scratch
    /// cluster, or on `upgrade`'s new cluster before the window.
    PgUpgradeCheck,
    /// Not a preflight: a refusal or warning of a command or step (journal, lock, rollback,
    /// finalize, steps after the window).
    Command,
}

/// How a family of checks is run.
#[derive(Clone, Copy)]
pub(crate) enum Run {
    /// Walked before anything is started, in [`FAMILIES`] order. It may decide a fact later
    /// families and the plan use (the mode, the WAL directories), and returns an error only
    /// when nothing further can be checked.
    Static(fn(&mut Static<'_>, &mut Findings) -> Result<()>),
    /// Walked once the old catalog is read (or could not be).
    Catalog(fn(&CatalogFacts<'_>, &mut Findings)),
    /// Raised where what it checks is found, by the function named: facts the walk needs
    /// (the old cluster, the installations), reading the catalog, `pg_upgrade --check`, and
    /// the commands' and steps' own refusals.
    At(#[cfg_attr(not(test), allow(dead_code))] &'static str),
}

/// A family of checks: its name and how it runs.
pub(crate) struct Family {
    pub(crate) name: &'static str,
    pub(crate) run: Run,
}

const fn family(name: &'static str, run: Run) -> Family {
    Family { name, run }
}

/// Every family, in the order the walks run them.
pub(crate) const FAMILIES: &[&Family] = &[
    // found before the walk: the facts it needs
    &fam::ROOT,
    &fam::RESOLVE,
    &fam::OLD,
    &fam::INSTALLS,
    &fam::VERSIONS,
    &fam::NEW_DATADIR,
    // static, walked by `run_static`
    &fam::TARGET,
    &fam::NEW_CONFDIR,
    &fam::CONTROL,
    &fam::MODE,
    &fam::PLACEMENT,
    &fam::SPACE,
    &fam::CMDLINE,
    &fam::PORTS,
    // the catalog: read, then walked by `run_catalog`
    &fam::READ_CATALOG,
    &fam::EXTENSIONS,
    &fam::PREPARED,
    &fam::HOST,
    &fam::REPLICATION,
    &fam::COLLATION,
    &fam::ARCHIVE,
    &fam::SYNC,
    // after the preflight
    &fam::PG_UPGRADE_CHECK,
    &fam::REHEARSE,
    &fam::COMMAND,
];

/// The families, by name in the code (`fam::TARGET`).
mod fam {
    use super::{Family, Run, family};

    pub(super) const ROOT: Family = family("root", Run::At("host::root::host_root"));
    pub(super) const RESOLVE: Family = family("resolve", Run::At("host::layout::resolve_old"));
    pub(super) const OLD: Family = family("old-cluster", Run::At("plan::prepare::inspect_old"));
    pub(super) const INSTALLS: Family = family(
        "installations",
        Run::At("plan::prepare::find_old, find_new"),
    );
    pub(super) const VERSIONS: Family =
        family("versions", Run::At("preflight::versions::check_versions"));
    pub(super) const NEW_DATADIR: Family =
        family("new-datadir", Run::At("plan::prepare::resolve_new_datadir"));
    pub(super) const TARGET: Family = family("target", Run::Static(super::target::target));
    pub(super) const NEW_CONFDIR: Family =
        family("new-confdir", Run::Static(super::target::new_confdir));
    pub(super) const CONTROL: Family = family("control", Run::Static(super::versions::control));
    pub(super) const MODE: Family = family("mode", Run::Static(super::mode::mode));
    pub(super) const PLACEMENT: Family =
        family("placement", Run::Static(super::placement::placement));
    pub(super) const SPACE: Family = family("space", Run::Static(super::space::space));
    pub(super) const CMDLINE: Family = family("cmdline", Run::Static(super::cmdline::cmdline));
    pub(super) const PORTS: Family = family("ports", Run::Static(super::ports::ports));
    pub(super) const READ_CATALOG: Family = family(
        "read-catalog",
        Run::At("plan::prepare::read_catalog, read_from_live"),
    );
    pub(super) const EXTENSIONS: Family =
        family("extensions", Run::Catalog(super::extensions::extensions));
    pub(super) const PREPARED: Family = family("prepared", Run::Catalog(super::prepared::prepared));
    pub(super) const HOST: Family = family("host", Run::Catalog(super::layout::host));
    pub(super) const ARCHIVE: Family = family("archive", Run::Catalog(super::archive::archive));
    pub(super) const SYNC: Family = family("sync", Run::Catalog(super::sync::sync));
    pub(super) const REPLICATION: Family = family(
        "replication",
        Run::At(
            "plan::prepare::static_phase, prepare, preflight::replication::decide, standby_finding, preflight::standby::resolve",
        ),
    );
    pub(super) const COLLATION: Family = family(
        "collation",
        Run::At("plan::prepare::collation_findings, preflight::collation::drift_finding"),
    );
    pub(super) const PG_UPGRADE_CHECK: Family = family(
        "pg-upgrade-check",
        Run::At(
            "cmd::check::scratch_check, config::outside::outside_finding, steps::pg_upgrade::check_refused",
        ),
    );
    pub(super) const REHEARSE: Family = family(
        "rehearse",
        Run::At("steps::rehearse::refuse_overlap, no_space, steps::rehearse_copy::clean_leftovers"),
    );
    pub(super) const COMMAND: Family =
        family("command", Run::At("the command or step that refuses"));
}

/// Runs every static family in order. An error ends the static phase at once.
pub(crate) fn run_static(s: &mut Static<'_>, findings: &mut Findings) -> Result<()> {
    for f in FAMILIES {
        if let Run::Static(run) = f.run {
            tracing::debug!("preflight: {}", f.name);
            run(s, findings)?;
        }
    }
    Ok(())
}

/// Runs every catalog family in order.
pub(crate) fn run_catalog(c: &CatalogFacts<'_>, findings: &mut Findings) {
    for f in FAMILIES {
        if let Run::Catalog(run) = f.run {
            tracing::debug!("preflight: {}", f.name);
            run(c, findings);
        }
    }
}

/// Refuses with `f` and every finding so far: all problems at once.
pub(crate) fn refuse_with(findings: &mut Findings, f: Finding) -> Error {
    findings.push(f);
    Error::Refused {
        findings: std::mem::take(&mut findings.0),
    }
}

/// One registered finding: its stable code (scripts read it in `--json`), when it can be
/// raised, the family that raises it, and the README text that documents it (`""` when
/// README has no line for it).
#[cfg_attr(not(test), allow(dead_code))] // read by the registry's tests
pub(crate) struct Check {
    pub(crate) code: &'static str,
    pub(crate) phase: Phase,
    pub(crate) family: &'static Family,
    pub(crate) readme: &'static str,
}

const fn check(
    code: &'static str,
    phase: Phase,
    family: &'static Family,
    readme: &'static str,
) -> Check {
    Check {
        code,
        phase,
        family,
        readme,
    }
}

#[cfg_attr(not(test), allow(dead_code))]
/// Every finding pgleap can raise. A unit test holds the sources to this table: each code
/// raised somewhere is listed here, each listed code is raised somewhere, and each README
/// text is in README.md.
pub(crate) const CHECKS: &[Check] = {
    use Phase::{Catalog, Command, PgUpgradeCheck, Static};
    const DATADIR: &str = "the old data directory exists and holds `PG_VERSION`";
    const PID_FILE: &str = "its `postmaster.pid`, when present, is a regular file";
    const DISABLED: &str = "the old data directory was not already disabled by `pg_upgrade --link`";
    const OWNER: &str = "it is not owned by root; pgleap runs\n  as root or as its owner";
    const INSTALLS: &str = "the old and new installations are found and complete";
    const VERSIONS: &str =
        "the old cluster is PostgreSQL 10 or newer, and the target is a\n  newer major";
    const NEW_VERSION: &str =
        "`--new-version`, when given beside `--new-bindir`, names that installation's major";
    const TARGET: &str = "the new data directory can be chosen, does not overlap the old one or a tablespace, is\n  absent or empty";
    const TABLESPACE_INSIDE: &str = "a tablespace inside the old data directory";
    const WALDIR: &str = "when the old cluster keeps its WAL apart (`initdb --waldir`";
    const STATE: &str = "the server state from `pg_controldata`";
    const BINDIR_WRITABLE: &str = "as root, no user but root can change the bin directories";
    const TABLESPACE_TARGET: &str =
        "no tablespace location already holds the new major's `PG_<major>_<catversion>`";
    const CONTROL: &str = "`global/pg_control` is sound (`pg_controldata` reads it and its checksum matches) and holds\n  the catalog of the major `PG_VERSION` names";
    const LAYOUT: &str = "the host layout (see [Hosts](#hosts))";
    const MODE: &str = "the mode: its minimum target major, one filesystem for `link`, `clone` and `swap`, reflink\n  support for `clone`";
    const SPACE: &str = "free space (what the owner may use, not root's reserve)";
    const PORT: &str = "the new server's port (`--port`, else the old one) is free";
    const SOCKET_LOCK: &str = "no socket lock file in the way is anything but a regular file";
    const CMDLINE: &str = "the options the old server was started with";
    const CATALOG: &str =
        "the old catalog, read as the owner over the running server's Unix socket";
    const EXTENSIONS: &str = "every extension, every C\n  library used by functions, and every `shared_preload_libraries` entry exists in the new\n  installation";
    const PREPARED: &str = "that no prepared\n  transactions are pending";
    const SCRATCH: &str = "`check` only: `initdb` of a scratch cluster";
    const STANDBY: &str = "the old cluster is not itself a standby";
    const ARCHIVE: &str = "WAL archiving (warnings)";
    const SYNC: &str = "synchronous replication (a warning)";
    const CONFIG_LOADS: &str = "the new server starts once with the carried configuration files";
    const ARCHIVE_AFTER: &str =
        "Once the new cluster serves, pgleap checks whether the new cluster";
    const SLOTS: &str = "replication slots survive the major pair";
    const SUBSCRIPTIONS: &str = "subscriptions are carried with their state";
    const STANDBYS: &str = "no physical standby streams from the old cluster";
    const LOCALE: &str = "every glibc locale the old cluster uses (template0, each database, each\n  collation created with `CREATE COLLATION`) opens in the environment the new server gets";
    const DRIFT: &str = "collation drift (see [Collations](#collations))";
    const REHEARSE: &str = "`rehearse` refuses before it writes anything";
    const OUTSIDE: &str = "in an included file outside the data directory they are refused, with the file\n  and line";
    &[
        check("root-missing", Static, &fam::ROOT, LAYOUT),
        check("no-old-cluster", Static, &fam::RESOLVE, LAYOUT),
        check("no-such-cluster", Static, &fam::RESOLVE, LAYOUT),
        check("old-datadir-missing", Static, &fam::OLD, DATADIR),
        check("old-datadir-unreadable", Static, &fam::OLD, DATADIR),
        check("not-a-datadir", Static, &fam::OLD, DATADIR),
        check("pid-file-not-regular", Static, &fam::OLD, PID_FILE),
        check("old-disabled", Static, &fam::OLD, DISABLED),
        check("old-control-unreadable", Static, &fam::CONTROL, CONTROL),
        check("old-version-mismatch", Static, &fam::CONTROL, CONTROL),
        check("cluster-version-mismatch", Static, &fam::OLD, LAYOUT),
        check("owned-by-root", Static, &fam::OLD, OWNER),
        check("wrong-user", Static, &fam::OLD, OWNER),
        check("bindir-missing", Static, &fam::INSTALLS, INSTALLS),
        check("bindir-not-found", Static, &fam::INSTALLS, INSTALLS),
        check("bindir-incomplete", Static, &fam::INSTALLS, INSTALLS),
        check("bindir-writable", Static, &fam::INSTALLS, BINDIR_WRITABLE),
        check("bindir-broken", Static, &fam::INSTALLS, INSTALLS),
        check("bindir-major-mismatch", Static, &fam::INSTALLS, INSTALLS),
        check("no-new-install", Static, &fam::INSTALLS, INSTALLS),
        check("new-version-mismatch", Static, &fam::INSTALLS, NEW_VERSION),
        check("old-too-old", Static, &fam::VERSIONS, VERSIONS),
        check("same-major", Static, &fam::VERSIONS, VERSIONS),
        check("downgrade", Static, &fam::VERSIONS, VERSIONS),
        check("no-default-new-datadir", Static, &fam::NEW_DATADIR, TARGET),
        check("target-overlaps", Static, &fam::TARGET, TARGET),
        check(
            "tablespace-target-exists",
            Static,
            &fam::TARGET,
            TABLESPACE_TARGET,
        ),
        check("target-not-empty", Static, &fam::TARGET, TARGET),
        check("target-unusable", Static, &fam::TARGET, TARGET),
        check("target-not-writable", Static, &fam::TARGET, TARGET),
        check(
            "tablespace-overlaps-target",
            Static,
            &fam::PLACEMENT,
            TARGET,
        ),
        check(
            "tablespace-inside-datadir",
            Static,
            &fam::PLACEMENT,
            TABLESPACE_INSIDE,
        ),
        check("waldir-overlaps", Static, &fam::PLACEMENT, WALDIR),
        check("waldir-not-empty", Static, &fam::PLACEMENT, WALDIR),
        check("confdir-not-writable", Static, &fam::NEW_CONFDIR, LAYOUT),
        check("new-confdir-not-empty", Static, &fam::NEW_CONFDIR, LAYOUT),
        check("mode-unsupported", Static, &fam::MODE, MODE),
        check("cross-device", Static, &fam::MODE, MODE),
        check("no-reflink", Static, &fam::MODE, MODE),
        check("no-space", Static, &fam::SPACE, SPACE),
        check("port-in-use", Static, &fam::PORTS, PORT),
        check("socket-lock-not-regular", Static, &fam::PORTS, SOCKET_LOCK),
        check("command-line-options", Static, &fam::CMDLINE, CMDLINE),
        check("no-socket", Catalog, &fam::READ_CATALOG, CATALOG),
        check("cannot-connect", Catalog, &fam::READ_CATALOG, CATALOG),
        check("unclean-shutdown", Catalog, &fam::READ_CATALOG, STATE),
        check("postmaster-not-reaped", Catalog, &fam::READ_CATALOG, STATE),
        check("crash-recovered", Catalog, &fam::READ_CATALOG, STATE),
        check("extension-missing", Catalog, &fam::EXTENSIONS, EXTENSIONS),
        check("library-missing", Catalog, &fam::EXTENSIONS, EXTENSIONS),
        check(
            "preload-library-missing",
            Catalog,
            &fam::EXTENSIONS,
            EXTENSIONS,
        ),
        check("prepared-transactions", Catalog, &fam::PREPARED, PREPARED),
        check("locale-missing", Catalog, &fam::COLLATION, LOCALE),
        check("collation-drift", Catalog, &fam::COLLATION, DRIFT),
        check("new-bindir-not-debian", Catalog, &fam::HOST, LAYOUT),
        check(
            "config-setting-dropped",
            PgUpgradeCheck,
            &fam::PG_UPGRADE_CHECK,
            SCRATCH,
        ),
        check(
            "config-setting-outside",
            PgUpgradeCheck,
            &fam::PG_UPGRADE_CHECK,
            OUTSIDE,
        ),
        check(
            "pg-upgrade-check",
            PgUpgradeCheck,
            &fam::PG_UPGRADE_CHECK,
            SCRATCH,
        ),
        check(
            "new-config-rejected",
            PgUpgradeCheck,
            &fam::PG_UPGRADE_CHECK,
            CONFIG_LOADS,
        ),
        check("no-journal", Command, &fam::COMMAND, ""),
        check("locked", Command, &fam::COMMAND, ""),
        check("upgrade-in-progress", Command, &fam::COMMAND, ""),
        check("identity", Command, &fam::COMMAND, ""),
        check("finalized", Command, &fam::COMMAND, ""),
        check("point-of-no-return", Command, &fam::COMMAND, ""),
        check("swap-started", Command, &fam::COMMAND, ""),
        check("not-done", Command, &fam::COMMAND, ""),
        check("old-datadir-identity", Command, &fam::COMMAND, ""),
        check("new-writes", Command, &fam::COMMAND, ""),
        check("new-writes-unknown", Command, &fam::COMMAND, ""),
        check("new-unhealthy", Command, &fam::COMMAND, ""),
        check("confirm", Command, &fam::COMMAND, ""),
        check("not-confirmed", Command, &fam::COMMAND, ""),
        check("journal-owner", Command, &fam::COMMAND, ""),
        check("journal-hooks", Command, &fam::COMMAND, ""),
        check("journal-service", Command, &fam::COMMAND, ""),
        check("journal-boot", Command, &fam::COMMAND, ""),
        check("journal-root", Command, &fam::COMMAND, ""),
        check("journal-paths", Command, &fam::COMMAND, ""),
        check("old-running", Command, &fam::COMMAND, ""),
        check("old-started", Command, &fam::COMMAND, ""),
        check("overlap", Command, &fam::COMMAND, ""),
        check("checkpoint-failed", Command, &fam::COMMAND, ""),
        check("update-extensions-failed", Command, &fam::COMMAND, ""),
        check("analyze-failed", Command, &fam::COMMAND, ""),
        check("collations-failed", Command, &fam::COMMAND, ""),
        check("reindex-failed", Command, &fam::COMMAND, ""),
        check(
            "rehearse-scratch-overlaps",
            Command,
            &fam::REHEARSE,
            REHEARSE,
        ),
        check("rehearse-scratch-exists", Command, &fam::REHEARSE, REHEARSE),
        check("rehearse-no-space", Command, &fam::REHEARSE, REHEARSE),
        check("wal-archiving", Catalog, &fam::ARCHIVE, ARCHIVE),
        check("wal-archiving-failing", Catalog, &fam::ARCHIVE, ARCHIVE),
        check("synchronous-standbys", Catalog, &fam::SYNC, SYNC),
        check("new-archiving-fails", Command, &fam::COMMAND, ARCHIVE_AFTER),
        check(
            "new-archiving-unconfirmed",
            Command,
            &fam::COMMAND,
            ARCHIVE_AFTER,
        ),
        check("old-is-standby", Static, &fam::REPLICATION, STANDBY),
        check("old-in-recovery", Catalog, &fam::REPLICATION, STANDBY),
        check("replication-slots-lost", Catalog, &fam::REPLICATION, SLOTS),
        check("replication-slot-behind", Catalog, &fam::REPLICATION, SLOTS),
        check(
            "subscriptions-not-carried",
            Catalog,
            &fam::REPLICATION,
            SUBSCRIPTIONS,
        ),
        check("standbys-connected", Catalog, &fam::REPLICATION, STANDBYS),
        check("standby-unknown", Catalog, &fam::REPLICATION, STANDBYS),
        check("standby-dir", Catalog, &fam::REPLICATION, STANDBYS),
        check("slot-recreate-failed", Command, &fam::COMMAND, ""),
        check("hba-fence-skipped", Command, &fam::COMMAND, ""),
        check("hba-fence-left", Command, &fam::COMMAND, ""),
        check("hba-file-errors", Command, &fam::COMMAND, ""),
        check("replication-slot-drop-failed", Command, &fam::COMMAND, ""),
    ]
};

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;

    fn sources(dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("preflight/mod.rs") {
                // The registry itself raises nothing; unit tests raise made-up codes.
                let text = std::fs::read_to_string(&p).unwrap();
                out.push(text.split("#[cfg(test)]").next().unwrap().to_string());
            }
        }
    }

    /// The string literals in the first argument of each call to `call` in `text`.
    fn first_literals(text: &str, call: &str, codes: &mut BTreeSet<String>) {
        for (i, _) in text.match_indices(call) {
            let before = text[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') || text[..i].ends_with("fn ")
            {
                continue;
            }
            let rest = &text[i + call.len()..];
            let mut depth = 0;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' | '{' | '[' => depth += 1,
                        ')' | '}' | ']' => depth -= 1,
                        _ => {}
                    }
                    c == ',' && depth == 0
                })
                .map_or(rest.len(), |(j, _)| j);
            for (k, lit) in rest[..end].split('"').enumerate() {
                if k % 2 == 1 {
                    codes.insert(lit.to_string());
                }
            }
        }
    }

    /// Local (private) helpers that take the code as a parameter named `code` and pass it
    /// on: `fn refuse(code: &'static str, ...)`.
    fn code_helpers(text: &str) -> Vec<String> {
        text.match_indices("fn ")
            .filter_map(|(i, _)| {
                let line_start = text[..i].rfind('\n').map_or(0, |n| n + 1);
                if !text[line_start..i].trim().is_empty() {
                    return None;
                }
                let rest = &text[i + 3..];
                let name_end = rest.find('(')?;
                let name = &rest[..name_end];
                let params = rest[name_end + 1..].trim_start();
                (name.chars().all(|c| c.is_alphanumeric() || c == '_')
                    && params.starts_with("code:"))
                .then(|| format!("{name}("))
            })
            .collect()
    }

    /// The string literals in the first argument of every `Finding::error(`/`warning(`, and
    /// of every call to a local helper that takes the code.
    fn raised_codes() -> BTreeSet<String> {
        let mut texts = Vec::new();
        sources(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut texts,
        );
        let mut codes = BTreeSet::new();
        for text in &texts {
            for call in ["Finding::error(", "Finding::warning("] {
                first_literals(text, call, &mut codes);
            }
            for helper in code_helpers(text) {
                first_literals(text, &helper, &mut codes);
            }
        }
        codes
    }

    #[test]
    fn helpers_that_take_the_code_are_seen() {
        let text = "fn refuse(code: &'static str, m: String) -> E { x(code, m) }\npub(crate) fn error(code: &str) {}\nfn f() { refuse(\"made-up\", m); unrefuse(\"other\", 1); }";
        assert_eq!(code_helpers(text), ["refuse("]);
        let mut codes = BTreeSet::new();
        first_literals(text, "refuse(", &mut codes);
        assert_eq!(codes.into_iter().collect::<Vec<_>>(), ["made-up"]);
    }

    #[test]
    fn every_raised_code_is_registered_and_every_registered_code_is_raised() {
        let raised = raised_codes();
        let registered: BTreeSet<String> = CHECKS.iter().map(|c| c.code.to_string()).collect();
        assert_eq!(registered.len(), CHECKS.len(), "a code is registered twice");
        let unregistered: Vec<_> = raised.difference(&registered).collect();
        let unused: Vec<_> = registered.difference(&raised).collect();
        assert!(
            unregistered.is_empty(),
            "raised but not in CHECKS: {unregistered:?}"
        );
        assert!(
            unused.is_empty(),
            "in CHECKS but raised nowhere: {unused:?}"
        );
    }

    #[test]
    fn every_check_names_a_walked_or_located_family() {
        let mut names = BTreeSet::new();
        for f in FAMILIES {
            assert!(names.insert(f.name), "family {} listed twice", f.name);
            assert!(
                CHECKS.iter().any(|c| std::ptr::eq(c.family, *f)),
                "family {} raises no registered code",
                f.name
            );
        }
        for c in CHECKS {
            assert!(
                FAMILIES.iter().any(|f| std::ptr::eq(c.family, *f)),
                "{}: its family {} is not in FAMILIES",
                c.code,
                c.family.name
            );
            match c.family.run {
                Run::Static(_) => assert_eq!(c.phase, Phase::Static, "{}", c.code),
                Run::Catalog(_) => assert_eq!(c.phase, Phase::Catalog, "{}", c.code),
                Run::At(_) => {}
            }
        }
    }

    /// `At("plan::prepare::find_old, find_new")`: each function exists where it is named.
    #[test]
    fn located_families_name_functions_that_exist() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for f in FAMILIES {
            let Run::At(at) = f.run else { continue };
            if !at.contains("::") {
                continue; // a description: the commands' and steps' own refusals
            }
            let mut module = String::new();
            for part in at.split(", ") {
                let name = match part.rsplit_once("::") {
                    Some((m, name)) => {
                        module = m.replace("::", "/");
                        name
                    }
                    None => part,
                };
                let file = [format!("{module}.rs"), format!("{module}/mod.rs")]
                    .into_iter()
                    .map(|f| src.join(f))
                    .find(|p| p.exists())
                    .unwrap_or_else(|| panic!("{}: no module {module}", f.name));
                let text = std::fs::read_to_string(&file).unwrap();
                assert!(
                    text.contains(&format!("fn {name}(")),
                    "{}: {} has no fn {name}",
                    f.name,
                    file.display()
                );
            }
        }
    }

    #[test]
    fn every_readme_text_is_in_the_readme() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
                .unwrap();
        for c in CHECKS.iter().filter(|c| !c.readme.is_empty()) {
            assert!(
                readme.contains(c.readme),
                "{}: README lacks {:?}",
                c.code,
                c.readme
            );
        }
        // Preflight checks are documented; only command refusals may lack a README line.
        for c in CHECKS.iter().filter(|c| c.phase != Phase::Command) {
            assert!(!c.readme.is_empty(), "{} has no README line", c.code);
        }
    }
}
