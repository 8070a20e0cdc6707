//! Preflight checks: every refusal and warning, one file per family.
//!
//! Invariant: the preflight reads and never writes; every check that can refuse produces a
//! `Finding` rather than an early return, so the user sees all problems at once.

pub(crate) mod collation;
pub(crate) mod extensions;
pub(crate) mod layout;
pub(crate) mod mode;
pub(crate) mod owner;
pub(crate) mod placement;
pub(crate) mod ports;
pub(crate) mod prepared;
pub(crate) mod space;
pub(crate) mod target;
pub(crate) mod versions;

/// When a check runs.
#[cfg_attr(not(test), allow(dead_code))] // the registry is read by its test, not at run time
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

/// One registered finding: its stable code (scripts read it in `--json`), when it can be
/// raised, and the README text that documents it (`""` when README has no line for it).
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug)]
pub(crate) struct Check {
    pub(crate) code: &'static str,
    pub(crate) phase: Phase,
    pub(crate) readme: &'static str,
}

#[cfg_attr(not(test), allow(dead_code))]
const fn check(code: &'static str, phase: Phase, readme: &'static str) -> Check {
    Check {
        code,
        phase,
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
    const CMDLINE: &str = "the options the old server was started with";
    const CATALOG: &str =
        "the old catalog, read as the owner over the running server's Unix socket";
    const EXTENSIONS: &str = "every extension, every C\n  library used by functions, and every `shared_preload_libraries` entry exists in the new\n  installation";
    const PREPARED: &str = "that no prepared\n  transactions are pending";
    const SCRATCH: &str = "`check` only: `initdb` of a scratch cluster";
    const LOCALE: &str = "every glibc locale the old cluster uses (template0, each database, each\n  collation created with `CREATE COLLATION`) opens in the environment the new server gets";
    const DRIFT: &str = "collation drift (see [Collations](#collations))";
    const REHEARSE: &str = "`rehearse` refuses before it writes anything";
    const OUTSIDE: &str = "in an included file outside the data directory they are refused, with the file\n  and line";
    &[
        check("root-missing", Static, LAYOUT),
        check("no-old-cluster", Static, LAYOUT),
        check("no-such-cluster", Static, LAYOUT),
        check("old-datadir-missing", Static, DATADIR),
        check("old-datadir-unreadable", Static, DATADIR),
        check("not-a-datadir", Static, DATADIR),
        check("old-disabled", Static, DISABLED),
        check("old-control-unreadable", Static, CONTROL),
        check("old-version-mismatch", Static, CONTROL),
        check("cluster-version-mismatch", Static, LAYOUT),
        check("owned-by-root", Static, OWNER),
        check("wrong-user", Static, OWNER),
        check("bindir-missing", Static, INSTALLS),
        check("bindir-not-found", Static, INSTALLS),
        check("bindir-incomplete", Static, INSTALLS),
        check("bindir-writable", Static, BINDIR_WRITABLE),
        check("bindir-broken", Static, INSTALLS),
        check("bindir-major-mismatch", Static, INSTALLS),
        check("no-new-install", Static, INSTALLS),
        check("new-version-mismatch", Static, NEW_VERSION),
        check("old-too-old", Static, VERSIONS),
        check("same-major", Static, VERSIONS),
        check("downgrade", Static, VERSIONS),
        check("no-default-new-datadir", Static, TARGET),
        check("target-overlaps", Static, TARGET),
        check("tablespace-target-exists", Static, TABLESPACE_TARGET),
        check("target-not-empty", Static, TARGET),
        check("target-unusable", Static, TARGET),
        check("target-not-writable", Static, TARGET),
        check("tablespace-overlaps-target", Static, TARGET),
        check("tablespace-inside-datadir", Static, TABLESPACE_INSIDE),
        check("waldir-overlaps", Static, WALDIR),
        check("waldir-not-empty", Static, WALDIR),
        check("confdir-not-writable", Static, LAYOUT),
        check("new-confdir-not-empty", Static, LAYOUT),
        check("mode-unsupported", Static, MODE),
        check("cross-device", Static, MODE),
        check("no-reflink", Static, MODE),
        check("no-space", Static, SPACE),
        check("port-in-use", Static, PORT),
        check("command-line-options", Static, CMDLINE),
        check("no-socket", Catalog, CATALOG),
        check("cannot-connect", Catalog, CATALOG),
        check("unclean-shutdown", Catalog, STATE),
        check("postmaster-not-reaped", Catalog, STATE),
        check("crash-recovered", Catalog, STATE),
        check("extension-missing", Catalog, EXTENSIONS),
        check("library-missing", Catalog, EXTENSIONS),
        check("preload-library-missing", Catalog, EXTENSIONS),
        check("prepared-transactions", Catalog, PREPARED),
        check("locale-missing", Catalog, LOCALE),
        check("collation-drift", Catalog, DRIFT),
        check("new-bindir-not-debian", Catalog, LAYOUT),
        check("config-setting-dropped", PgUpgradeCheck, SCRATCH),
        check("config-setting-outside", PgUpgradeCheck, OUTSIDE),
        check("pg-upgrade-check", PgUpgradeCheck, SCRATCH),
        check("no-journal", Command, ""),
        check("locked", Command, ""),
        check("upgrade-in-progress", Command, ""),
        check("identity", Command, ""),
        check("finalized", Command, ""),
        check("point-of-no-return", Command, ""),
        check("swap-started", Command, ""),
        check("not-done", Command, ""),
        check("old-datadir-identity", Command, ""),
        check("new-writes", Command, ""),
        check("new-writes-unknown", Command, ""),
        check("new-unhealthy", Command, ""),
        check("confirm", Command, ""),
        check("not-confirmed", Command, ""),
        check("checkpoint-failed", Command, ""),
        check("update-extensions-failed", Command, ""),
        check("analyze-failed", Command, ""),
        check("collations-failed", Command, ""),
        check("reindex-failed", Command, ""),
        check("rehearse-scratch-overlaps", Command, REHEARSE),
        check("rehearse-scratch-exists", Command, REHEARSE),
        check("rehearse-no-space", Command, REHEARSE),
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
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                // Unit tests raise made-up codes.
                out.push(text.split("#[cfg(test)]").next().unwrap().to_string());
            }
        }
    }

    /// The string literals in the first argument of every `Finding::error(`/`warning(`.
    fn raised_codes() -> BTreeSet<String> {
        let mut texts = Vec::new();
        sources(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut texts,
        );
        let mut codes = BTreeSet::new();
        for text in &texts {
            for call in ["Finding::error(", "Finding::warning("] {
                for (i, _) in text.match_indices(call) {
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
        }
        codes
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
