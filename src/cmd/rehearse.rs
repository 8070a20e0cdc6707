//! `pgleap rehearse`: the upgrade on a copy of the cluster, changing nothing of it; the
//! report predicts the real run's downtime and proves the upgraded copy holds the same data.

use std::fmt::Write as _;
use std::time::Duration;

use crate::cli::RehearseArgs;
use crate::error::{Error, Result};
use crate::exec::interrupt;
use crate::inspect::proof::Item;
use crate::inspect::space::human;
use crate::steps::rehearse::{Options, Rehearsal, rehearse};
use crate::ui::report::{Ui, secs};

pub(crate) fn execute(args: &RehearseArgs) -> Result<()> {
    interrupt::install(interrupt::OnSignal::SafePoint);
    let ui = Ui {
        json: args.common.json,
    };
    let options = Options {
        keep: args.keep,
        smoke_sql: args.smoke_sql.clone(),
        scratch: args.scratch.clone(),
        max_rate: args.max_rate.clone(),
    };
    // Like check: a shared lock on the old cluster, and a stopped one left as it was found.
    let held = super::check::hold_old(&args.common)?;
    let r = rehearse(&args.common, &options, ui)?;
    drop(held);
    ui.line(&human_report(&r));
    ui.json(&serde_json::to_value(&r).map_err(Error::DbEncode)?);
    if r.ok {
        return Ok(());
    }
    let mut what = Vec::new();
    if !r.proof.equal {
        what.push(format!(
            "{} difference(s) between the copy and the upgraded copy",
            r.proof.differences.len()
        ));
    }
    if r.smoke.as_ref().is_some_and(|s| !s.ok) {
        what.push("a failing smoke query".into());
    }
    Err(Error::RehearsalFailed {
        what: what.join(" and "),
    })
}

fn s(seconds: f64) -> String {
    secs(Duration::from_secs_f64(seconds.max(0.0)))
}

fn item_line(i: &Item) -> String {
    format!(
        "  {} {} {} in {}: {} → {}",
        if i.verdict == crate::inspect::proof::Verdict::Updated {
            "updated"
        } else {
            "DIFFERENT"
        },
        i.kind,
        i.name,
        i.database,
        i.before.as_deref().unwrap_or("absent"),
        i.after.as_deref().unwrap_or("absent")
    )
}

/// The report humans read.
fn human_report(r: &Rehearsal) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nRehearsal of {}", r.old_datadir.display());
    for n in &r.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    let _ = writeln!(
        out,
        "  copy:        {} in {} ({})",
        human(r.copy.bytes),
        s(r.copy.seconds),
        r.copy.description
    );
    let steps: Vec<String> = r
        .steps
        .iter()
        .map(|st| format!("{} {}", st.name, s(st.seconds)))
        .collect();
    let _ = writeln!(out, "  steps:       {}", steps.join(", "));
    let d = &r.downtime;
    let _ = writeln!(
        out,
        "  downtime:    {} predicted (measured on the copy {}, shutdown checkpoint {}, file copy {})",
        s(d.predicted_seconds),
        s(d.measured_seconds),
        s(d.checkpoint_seconds),
        s(d.file_copy_seconds)
    );
    for b in &d.basis {
        let _ = writeln!(out, "               {b}");
    }
    let _ = writeln!(
        out,
        "  total:       {} predicted for the whole upgrade",
        s(r.predicted_total_seconds)
    );
    for n in &r.space {
        let _ = writeln!(
            out,
            "  space:       the upgrade needs {} on the filesystem of {} ({} free)",
            human(n.needed),
            n.path.display(),
            human(n.free)
        );
    }
    let _ = writeln!(
        out,
        "  rehearsal:   needed {} in {} ({} free before it)",
        human(r.scratch_space.needed),
        r.scratch_space.path.display(),
        human(r.scratch_space.free)
    );
    proof_lines(&mut out, r);
    for w in &r.warnings {
        let _ = writeln!(out, "  warning:     {}", w.render());
    }
    let _ = writeln!(out, "  command:     {}", r.upgrade_command);
    match &r.kept {
        Some(k) => {
            let _ = writeln!(out, "  kept:        {k}");
        }
        None => {
            let _ = writeln!(out, "  The copy was removed.");
        }
    }
    out.trim_end().to_string()
}

fn proof_lines(out: &mut String, r: &Rehearsal) {
    let p = &r.proof;
    let verdict = if p.equal {
        "all equal"
    } else {
        "DIFFERENCES FOUND"
    };
    let _ = writeln!(
        out,
        "  proof:       {verdict}: {} items compared (schema, tables' rows and content, sequences, large objects, extensions per database)",
        p.compared
    );
    for i in p.differences.iter().chain(&p.updated) {
        let _ = writeln!(out, "{}", item_line(i));
    }
    if let Some(sm) = &r.smoke {
        let _ = writeln!(
            out,
            "  smoke SQL:   {} {} in {}",
            sm.file.display(),
            if sm.ok { "succeeded" } else { "FAILED" },
            s(sm.seconds)
        );
        for l in sm.output.lines() {
            let _ = writeln!(out, "               {l}");
        }
    }
}
