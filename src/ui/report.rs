//! The one place that speaks to the user: step lines and findings on stderr for humans,
//! one JSON document on stdout for programs.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use crate::error::{Finding, Severity};
use crate::inspect::space::human;
use crate::plan::Plan;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Ui {
    pub(crate) json: bool,
}

impl Ui {
    #[allow(clippy::unused_self)] // quiet/verbose modes will hang off self
    pub(crate) fn line(self, text: &str) {
        let _ = writeln!(std::io::stderr(), "{text}");
    }

    pub(crate) fn step(self, n: usize, total: usize, name: &str, what: &str) -> Instant {
        self.line(&format!("[{n}/{total}] {name}: {what}"));
        Instant::now()
    }

    pub(crate) fn step_done(self, started: Instant, detail: &str) -> Duration {
        let d = started.elapsed();
        let extra = if detail.is_empty() {
            String::new()
        } else {
            format!(" ({detail})")
        };
        self.line(&format!("      done in {}{extra}", secs(d)));
        d
    }

    pub(crate) fn findings(self, findings: &[Finding]) {
        for f in findings.iter().filter(|f| f.severity == Severity::Warning) {
            self.line(&format!("warning: {}", f.render()));
        }
    }

    pub(crate) fn plan(self, plan: &Plan) {
        let mut out = String::from("Plan:\n");
        where_rows(&mut out, plan);
        how_rows(&mut out, plan);
        size_rows(&mut out, plan);
        collation_row(&mut out, plan);
        for (k, v) in crate::ui::replication::plan_rows(plan) {
            row(&mut out, k, v);
        }
        self.line(out.trim_end());
    }

    /// The plan's last row, printed by `upgrade` once it has created the directory (`check`
    /// creates none: naming one would send people looking for logs that do not exist).
    pub(crate) fn logs(self, dir: &std::path::Path) {
        let mut out = String::new();
        row(&mut out, "logs", dir.display());
        self.line(out.trim_end());
    }

    /// Prints a JSON document on stdout: the one document of a run (later ones are dropped,
    /// so that a command that printed its own outcome and then fails is not followed by a
    /// second document from `main`).
    pub(crate) fn json(self, value: &serde_json::Value) {
        if self.json && !JSON_PRINTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let _ = writeln!(
                std::io::stdout(),
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        }
    }
}

/// Set once a run has printed its JSON document.
static JSON_PRINTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub(crate) fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// The collations row: the mode, and what drifted against whose library.
fn collation_row(out: &mut String, plan: &Plan) {
    let c = &plan.collations;
    let what = if c.has_drift() {
        let dbs: std::collections::BTreeSet<&str> =
            c.drifted.iter().map(|d| d.database.as_str()).collect();
        format!(
            "{} collation versions drifted in {} databases ({}): {} indexes, {} bytes, about {:.1}s to rebuild",
            c.drifted.len(),
            dbs.len(),
            c.compared_with,
            c.indexes.len(),
            c.index_bytes,
            c.estimated_reindex_seconds
        )
    } else {
        format!("no drift ({})", c.compared_with)
    };
    row(out, "collations", format!("{}: {what}", c.mode.name()));
}

/// One `  key          value` line of the plan.
fn row(out: &mut String, k: &str, v: impl std::fmt::Display) {
    let _ = writeln!(out, "  {k:<13} {v}");
}

/// Plan rows: which clusters, where they live, how the host runs them, as whom.
fn where_rows(out: &mut String, plan: &Plan) {
    row(
        out,
        "old",
        format!(
            "PostgreSQL {} at {} ({})",
            plan.old.version,
            plan.old.datadir.display(),
            plan.old_state
        ),
    );
    row(
        out,
        "new",
        format!(
            "PostgreSQL {} at {}",
            plan.new.version,
            plan.new.datadir.display()
        ),
    );
    if let (Some(o), Some(n)) = (&plan.old.waldir, &plan.new.waldir) {
        row(
            out,
            "wal",
            format!("{} → {} (initdb --waldir)", o.display(), n.display()),
        );
    }
    let layout = match (&plan.layout, &plan.new.confdir) {
        (l, Some(c)) => format!("{} → {}", l.describe(), c.display()),
        (l, None) => l.describe(),
    };
    row(out, "layout", layout);
    if plan.host.root != std::path::Path::new("/") {
        row(out, "root", plan.host.root.display().to_string());
    }
    row(
        out,
        "service",
        format!(
            "old: {}; new: {}",
            plan.host.old.stop.describe("stop"),
            plan.host.new.start.describe("start")
        ),
    );
    if let Some(b) = &plan.host.boot {
        row(out, "at boot", b.describe());
    }
    row(
        out,
        "binaries",
        format!(
            "{} → {}",
            plan.old.bindir.display(),
            plan.new.bindir.display()
        ),
    );
    row(
        out,
        "owner",
        format!("{} (uid {})", plan.owner.name, plan.owner.uid),
    );
}

/// Plan rows: how pg_upgrade runs and how the new cluster is initialized.
fn how_rows(out: &mut String, plan: &Plan) {
    row(
        out,
        "mode",
        format!("{} — {}", plan.mode.name(), plan.mode_reason),
    );
    row(out, "jobs", plan.jobs.to_string());
    row(
        out,
        "port",
        format!("{} (old {})", plan.new.port, plan.old.port),
    );
    if !plan.old.options.is_empty() {
        row(
            out,
            "options",
            format!(
                "{} (the old server's command line: carried into the new postgresql.auto.conf)",
                plan.old.options.join(" ")
            ),
        );
    }
    match &plan.initdb {
        Some(o) => row(
            out,
            "initdb",
            format!(
                "superuser {}, encoding {}, locale {}/{} ({}{}), checksums {}, WAL segments {} MB{}",
                o.superuser,
                o.encoding,
                o.lc_collate,
                o.lc_ctype,
                o.locale_provider,
                o.provider_locale
                    .as_ref()
                    .map(|l| format!(" {l}"))
                    .unwrap_or_default(),
                if o.checksums { "on" } else { "off" },
                o.wal_segsize_mb,
                if o.group_access {
                    ", group access (0750)"
                } else {
                    ""
                }
            ),
        ),
        None => row(
            out,
            "initdb",
            "not known until the old cluster is recovered",
        ),
    }
}

/// Plan rows: what is moved, the space it needs, the downtime expected, the logs.
fn size_rows(out: &mut String, plan: &Plan) {
    for t in &plan.tablespaces {
        row(out, "tablespace", t.display().to_string());
    }
    row(
        out,
        "data",
        format!("{} of relation files", human(plan.relation_bytes)),
    );
    for s in &plan.space {
        row(
            out,
            "space",
            format!(
                "{} needs {}, {} free{}",
                s.path.display(),
                human(s.needed),
                human(s.free),
                if s.enough() { "" } else { "  ← not enough" }
            ),
        );
    }
    row(
        out,
        "downtime",
        format!(
            "about {} (estimate: stop, pg_upgrade {}, start; {})",
            secs(Duration::from_secs(plan.estimated_downtime_secs)),
            plan.mode.name(),
            plan.downtime_basis
        ),
    );
}
