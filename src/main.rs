//! pgleap: upgrade a PostgreSQL cluster to a new major version in place.
//!
//! `main` only parses, sets up tracing, runs one command and maps its error to an exit code.

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

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};
use crate::error::Error;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(error::EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let json = match &cli.command {
        Command::Check(a) => a.json,
        Command::Upgrade(a) => a.common.json,
        Command::Status(a) => a.json,
        Command::Rollback(a) => a.confirm.json,
        Command::Finalize(a) => a.json,
        Command::Db { .. } => false,
    };
    match run(cli.command) {
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
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            }
            eprintln!("pgleap: {e}");
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

fn run(command: Command) -> error::Result<()> {
    match command {
        Command::Check(args) => cmd::check::execute(&args),
        Command::Upgrade(args) => cmd::upgrade::execute(&args),
        Command::Status(args) => cmd::status::execute(&args),
        Command::Rollback(args) => cmd::rollback::execute(&args),
        Command::Finalize(args) => cmd::finalize::execute(&args),
        Command::Db { request } => inspect::db::serve(request),
    }
}
