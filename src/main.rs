//! pgleap: upgrade a PostgreSQL cluster to a new major version in place.
//!
//! `main` only parses, sets up tracing, runs one command and maps its error to an exit code.

// println!/eprintln! panic when the reader is gone (`pgleap -vv check ... 2>&1 | head`):
// write with writeln! and drop the error instead, so a closed pipe loses output, never the run.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod cli;
mod cmd;
mod config;
mod error;
mod exec;
mod host;
mod inspect;
mod plan;
mod preflight;
mod state;
mod steps;
mod ui;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};
use crate::error::Error;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            if !e.use_stderr() {
                return ExitCode::SUCCESS;
            }
            if json_requested() {
                let text = e.render().to_string();
                let first = text.lines().next().unwrap_or_default();
                let message = first.strip_prefix("error: ").unwrap_or(first);
                let doc = serde_json::json!({ "ok": false, "exit_code": error::EXIT_USAGE, "error": message, "findings": [] });
                ui::report::Ui { json: true }.json(&doc);
            }
            return ExitCode::from(error::EXIT_USAGE);
        }
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PGLEAP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        // Its report of a failed write is an eprintln!, which panics on a closed stderr.
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let json = match &cli.command {
        Command::Check(a) => a.json,
        Command::Upgrade(a) => a.common.json,
        Command::Rehearse(a) => a.common.json,
        Command::Status(a) => a.json,
        Command::Rollback(a) => a.confirm.json,
        Command::Finalize(a) => a.json,
        Command::Db { .. } | Command::Fs { .. } | Command::Manual { .. } => false,
    };
    let result = run(cli.command);
    exec::owner::remove_owner_copy();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                let findings = match &e {
                    Error::Refused { findings } | Error::RefusedAfterCleanup { findings, .. } => {
                        serde_json::to_value(findings).unwrap_or_default()
                    }
                    _ => serde_json::Value::Array(Vec::new()),
                };
                let doc = serde_json::json!({ "ok": false, "exit_code": e.exit_code(), "error": e.to_string(), "findings": findings });
                ui::report::Ui { json: true }.json(&doc);
            }
            // A closed stdout or stderr (`pgleap ... | head`) is not an error of pgleap's.
            let _ = writeln!(std::io::stderr(), "pgleap: {e}");
            // However the failure surfaced, a run stopped by a signal exits 130.
            let code = if exec::interrupt::interrupted() {
                error::EXIT_INTERRUPTED
            } else {
                e.exit_code()
            };
            ExitCode::from(code)
        }
    }
}

/// Whether `--json` (or `PGLEAP_JSON`) was asked for, read from the raw arguments: a usage
/// error leaves no parsed value to ask, and a script reading stdout still needs its document.
fn json_requested() -> bool {
    let truthy = |v: &str| matches!(v, "1" | "true" | "yes" | "on" | "y" | "t");
    std::env::args().skip(1).take_while(|a| a != "--").any(|a| {
        a == "--json"
            || a.strip_prefix("--json=")
                .is_some_and(|v| truthy(&v.to_ascii_lowercase()))
    }) || std::env::var("PGLEAP_JSON").is_ok_and(|v| truthy(&v.to_ascii_lowercase()))
}

fn run(command: Command) -> error::Result<()> {
    match command {
        Command::Check(args) => cmd::check::execute(&args),
        Command::Upgrade(args) => cmd::upgrade::execute(&args),
        Command::Rehearse(args) => cmd::rehearse::execute(&args),
        Command::Status(args) => cmd::status::execute(&args),
        Command::Rollback(args) => cmd::rollback::execute(&args),
        Command::Finalize(args) => cmd::finalize::execute(&args),
        Command::Db { request } => inspect::db::serve(request),
        Command::Fs { request } => exec::ownerfs::serve(request),
        Command::Manual { dir } => cmd::manual::execute(&dir),
    }
}
