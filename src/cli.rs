//! Command-line definitions. Every option also reads a `PGLEAP_<OPTION>` environment
//! variable so containers and jobs can configure pgleap without arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::plan::args::{CheckArgs, Target};

pub(crate) const EXIT_CODES: &str = "Exit codes:
  0  success
  1  failed while running (the message says what state the cluster is in)
  2  usage error
  3  refused by the preflight (nothing on disk was changed)
  130 interrupted by SIGINT/SIGTERM (stopped at a safe point; pgleap status says where)";

#[derive(Debug, Parser)]
#[command(name = "pgleap", version, about = "Upgrade a PostgreSQL cluster to a new major version in place, safely, with the least downtime.", after_help = EXIT_CODES)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,

    /// More detail on stderr (repeat for debug output, including every command run).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, env = "PGLEAP_VERBOSE")]
    pub(crate) verbose: u8,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Check that an upgrade can run and print its plan, while the old server keeps running.
    /// Changes no data and no configuration; a stopped cluster is started fenced to read its
    /// catalog, which writes a shutdown checkpoint.
    #[command(after_help = EXIT_CODES)]
    Check(CheckArgs),
    /// Upgrade the cluster: initdb, carry the configuration, pg_upgrade, start, analyze.
    #[command(after_help = EXIT_CODES)]
    Upgrade(UpgradeArgs),
    /// Rehearse the upgrade on a copy of the cluster while it keeps serving: the real
    /// pipeline timed, the data compared before and after, the downtime predicted.
    #[command(after_help = EXIT_CODES)]
    Rehearse(RehearseArgs),
    /// Show where an upgrade stands, whether rollback is still possible, and what to run next.
    #[command(after_help = EXIT_CODES)]
    Status(StatusArgs),
    /// Go back to the old cluster (copy, clone and copy-file-range modes: until finalize;
    /// link: until the new cluster's first start; swap: until pg_upgrade starts).
    #[command(after_help = EXIT_CODES)]
    Rollback(RollbackArgs),
    /// Remove the old data directory once the new cluster is healthy.
    #[command(after_help = EXIT_CODES)]
    Finalize(ConfirmArgs),
    /// Internal: write the man pages and shell completions into DIR (for packaging).
    #[command(name = "__manual", hide = true)]
    Manual {
        #[arg(value_name = "DIR")]
        dir: std::path::PathBuf,
    },
    /// Internal: database requests run as the cluster owner.
    #[command(name = "__db", hide = true)]
    Db {
        #[command(subcommand)]
        request: crate::inspect::db::Request,
    },
    /// Internal: file work inside directories the cluster owner can write, run as the owner.
    #[command(name = "__fs", hide = true)]
    Fs {
        #[command(subcommand)]
        request: crate::exec::ownerfs::Request,
    },
}

#[derive(Debug, Clone, Args)]
pub(crate) struct UpgradeArgs {
    #[command(flatten)]
    pub(crate) common: CheckArgs,

    /// Port of the new cluster [default: the old cluster's port].
    #[arg(short, long, env = "PGLEAP_PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) port: Option<u16>,

    /// Skip ANALYZE after the upgrade (the planner has no statistics until you run it).
    #[arg(long, env = "PGLEAP_NO_ANALYZE", value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) no_analyze: bool,

    /// Leave the new cluster shut down at the end (for entrypoints and jobs that start the
    /// server themselves) [default: running if the old one was running].
    #[arg(long, env = "PGLEAP_LEAVE_STOPPED", value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) leave_stopped: bool,
}

/// `rehearse`'s options: the upgrade's, and where and how the copy is made.
#[derive(Debug, Clone, Args)]
pub(crate) struct RehearseArgs {
    #[command(flatten)]
    pub(crate) common: CheckArgs,

    /// Where the copy, the upgraded copy and their logs go; created for the cluster's owner,
    /// and must not exist yet (unless an earlier rehearsal left it) [default:
    /// .pgleap-rehearse-NAME beside the old data directory].
    #[arg(long, env = "PGLEAP_SCRATCH", value_name = "DIR")]
    pub(crate) scratch: Option<PathBuf>,

    /// Keep the upgraded copy (stopped) instead of removing it; the report says how to start it.
    #[arg(long, env = "PGLEAP_KEEP", value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) keep: bool,

    /// SQL to run on the upgraded copy (psql, in the postgres database, stopping at the first
    /// error); the report shows its output and timings. Must be readable by the cluster owner.
    #[arg(long, env = "PGLEAP_SMOKE_SQL", value_name = "FILE")]
    pub(crate) smoke_sql: Option<PathBuf>,

    /// Limit pg_basebackup's transfer rate (its --max-rate, e.g. 100M) when copying a
    /// running server without reflinks.
    #[arg(long, env = "PGLEAP_MAX_RATE", value_name = "RATE")]
    pub(crate) max_rate: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) target: Target,

    /// Print one JSON document on stdout.
    #[arg(long, env = "PGLEAP_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) json: bool,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct ConfirmArgs {
    #[command(flatten)]
    pub(crate) target: Target,

    /// The --stop-command the upgrade was given, if any: hooks are never taken from the
    /// journal.
    #[arg(long, env = "PGLEAP_STOP_COMMAND", value_name = "CMD")]
    pub(crate) stop_command: Option<String>,

    /// The --start-command the upgrade was given, if any.
    #[arg(long, env = "PGLEAP_START_COMMAND", value_name = "CMD")]
    pub(crate) start_command: Option<String>,

    /// rollback: remove the new cluster instead of moving it aside for inspection;
    /// finalize: delete the old data directory without asking.
    #[arg(short, long, env = "PGLEAP_YES", value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) yes: bool,

    /// Print one JSON document on stdout.
    #[arg(long, env = "PGLEAP_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) json: bool,
}

/// `rollback`'s options: those of `finalize`, and consent to lose what clients wrote.
#[derive(Debug, Clone, Args)]
pub(crate) struct RollbackArgs {
    #[command(flatten)]
    pub(crate) confirm: ConfirmArgs,

    /// Roll back even though clients wrote to the new cluster after the upgrade: what they
    /// wrote is lost (without it, rollback refuses and says how many transactions).
    #[arg(long, env = "PGLEAP_DISCARD_NEW_WRITES", value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) discard_new_writes: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn new_bindir_and_new_version_may_both_be_set() {
        // PGLEAP_NEW_VERSION in a container's environment must not make --new-bindir a
        // usage error: the bindir wins, and the preflight refuses a version that disagrees
        // with it (plan::prepare::find_new).
        let args = [
            "pgleap",
            "check",
            "-d",
            "/x",
            "--new-bindir",
            "/b",
            "--new-version",
            "17",
        ];
        assert!(Cli::try_parse_from(args).is_ok());
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_option_has_an_env_var() {
        for sub in [
            "check", "upgrade", "rehearse", "status", "rollback", "finalize",
        ] {
            let cmd = Cli::command();
            let sub = cmd.find_subcommand(sub).unwrap();
            for arg in sub.get_arguments() {
                if matches!(arg.get_id().as_str(), "help" | "version") {
                    continue;
                }
                let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                let want = format!("PGLEAP_{}", arg.get_id().as_str().to_ascii_uppercase());
                assert_eq!(
                    env.as_deref(),
                    Some(want.as_str()),
                    "option {}",
                    arg.get_id()
                );
            }
        }
    }
}
