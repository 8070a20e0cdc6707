//! Command-line definitions. Every option also reads a `PGLEAP_<OPTION>` environment
//! variable so containers and jobs can configure pgleap without arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::host::layout::ClusterId;
use crate::plan::Mode;

const EXIT_CODES: &str = "Exit codes:
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
    /// Check that an upgrade can run and print its plan; changes nothing and works while the
    /// old server runs.
    #[command(after_help = EXIT_CODES)]
    Check(CheckArgs),
    /// Upgrade the cluster: initdb, carry the configuration, pg_upgrade, start, analyze.
    #[command(after_help = EXIT_CODES)]
    Upgrade(UpgradeArgs),
    /// Show where an upgrade stands, whether rollback is still possible, and what to run next.
    #[command(after_help = EXIT_CODES)]
    Status(StatusArgs),
    /// Go back to the old cluster (copy and clone modes: until finalize; link and swap: until
    /// the new cluster's first start).
    #[command(after_help = EXIT_CODES)]
    Rollback(ConfirmArgs),
    /// Remove the old data directory once the new cluster is healthy.
    #[command(after_help = EXIT_CODES)]
    Finalize(ConfirmArgs),
    /// Internal: database requests run as the cluster owner.
    #[command(name = "__db", hide = true)]
    Db {
        #[command(subcommand)]
        request: crate::inspect::db::Request,
    },
}

/// Options shared by `check` and `upgrade`, in pg_upgrade's vocabulary.
#[derive(Debug, Clone, Args)]
pub(crate) struct CheckArgs {
    /// The old cluster's data directory (the one holding PG_VERSION), or a postgresql-common
    /// configuration directory such as /etc/postgresql/15/main.
    #[arg(
        short = 'd',
        long,
        env = "PGLEAP_OLD_DATADIR",
        value_name = "DIR",
        required_unless_present = "cluster"
    )]
    pub(crate) old_datadir: Option<PathBuf>,

    /// The old cluster as postgresql-common names it (pg_lsclusters), e.g. 15/main: its
    /// configuration in /etc/postgresql/15/main and the data directory that names.
    #[arg(
        long,
        env = "PGLEAP_CLUSTER",
        value_name = "VERSION/NAME",
        conflicts_with = "old_datadir"
    )]
    pub(crate) cluster: Option<ClusterId>,

    /// Resolve every host path (/etc/postgresql, /var/lib/postgresql, /var/lib/pgsql,
    /// /usr/lib/postgresql, /usr/pgsql-N, systemd unit files) under DIR; service managers
    /// are not used there [default: /].
    #[arg(long, env = "PGLEAP_ROOT", value_name = "DIR")]
    pub(crate) root: Option<PathBuf>,

    /// Shell command that stops a server (runit, supervisord, a custom script), instead of
    /// the detected service manager or pg_ctl. Runs as pgleap's user with PGLEAP_HOOK_*
    /// variables, PGDATA and PGPORT naming the server; it must return once the server is
    /// stopping.
    #[arg(long, env = "PGLEAP_STOP_COMMAND", value_name = "CMD")]
    pub(crate) stop_command: Option<String>,

    /// Shell command that starts a server with its own configuration, like --stop-command;
    /// pgleap then waits until it accepts connections.
    #[arg(long, env = "PGLEAP_START_COMMAND", value_name = "CMD")]
    pub(crate) start_command: Option<String>,

    /// The new data directory [default: the old path with its major component replaced,
    /// e.g. /data/15 → /data/17].
    #[arg(short = 'D', long, env = "PGLEAP_NEW_DATADIR", value_name = "DIR")]
    pub(crate) new_datadir: Option<PathBuf>,

    /// The old installation's bin directory [default: found from PG_VERSION in
    /// /usr/lib/postgresql/N/bin, /usr/pgsql-N/bin, then PATH].
    #[arg(short = 'b', long, env = "PGLEAP_OLD_BINDIR", value_name = "DIR")]
    pub(crate) old_bindir: Option<PathBuf>,

    /// The new installation's bin directory.
    #[arg(short = 'B', long, env = "PGLEAP_NEW_BINDIR", value_name = "DIR")]
    pub(crate) new_bindir: Option<PathBuf>,

    /// The new major version, looked up like --old-bindir [default: the newest installed].
    /// Ignored when --new-bindir is given.
    #[arg(long, env = "PGLEAP_NEW_VERSION", value_name = "N")]
    pub(crate) new_version: Option<u32>,

    /// How data files reach the new cluster. auto: clone where the filesystem supports
    /// reflinks, else copy.
    #[arg(short, long, env = "PGLEAP_MODE", value_enum, default_value_t = Mode::Auto)]
    pub(crate) mode: Mode,

    /// Parallel jobs for pg_upgrade and ANALYZE [default: number of cores].
    #[arg(short, long, env = "PGLEAP_JOBS", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) jobs: Option<u32>,

    /// Role to connect as first [default: the data directory owner's name, then postgres].
    #[arg(short = 'U', long, env = "PGLEAP_USERNAME", value_name = "ROLE")]
    pub(crate) username: Option<String>,

    /// Print one JSON document on stdout (the plan and findings; for upgrade, the result).
    #[arg(long, env = "PGLEAP_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) json: bool,
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

/// Which upgrade: found from the old data directory (and the new one, when not the default).
#[derive(Debug, Clone, Args)]
pub(crate) struct TargetArgs {
    /// The old cluster's data directory (or postgresql-common configuration directory).
    #[arg(
        short = 'd',
        long,
        env = "PGLEAP_OLD_DATADIR",
        value_name = "DIR",
        required_unless_present = "cluster"
    )]
    pub(crate) old_datadir: Option<PathBuf>,

    /// The old cluster as postgresql-common names it, e.g. 15/main.
    #[arg(
        long,
        env = "PGLEAP_CLUSTER",
        value_name = "VERSION/NAME",
        conflicts_with = "old_datadir"
    )]
    pub(crate) cluster: Option<ClusterId>,

    /// Resolve host paths under DIR, as given to upgrade [default: /].
    #[arg(long, env = "PGLEAP_ROOT", value_name = "DIR")]
    pub(crate) root: Option<PathBuf>,

    /// The new data directory, when it is not the default versioned sibling.
    #[arg(short = 'D', long, env = "PGLEAP_NEW_DATADIR", value_name = "DIR")]
    pub(crate) new_datadir: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,

    /// Print one JSON document on stdout.
    #[arg(long, env = "PGLEAP_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) json: bool,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct ConfirmArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,

    /// rollback: remove the new cluster instead of moving it aside for inspection;
    /// finalize: delete the old data directory without asking.
    #[arg(short, long, env = "PGLEAP_YES", value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) yes: bool,

    /// Print one JSON document on stdout.
    #[arg(long, env = "PGLEAP_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) json: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn new_bindir_and_new_version_may_both_be_set() {
        // PGLEAP_NEW_VERSION in a container's environment must not make --new-bindir a
        // usage error: the bindir wins (prepare::find_new).
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
        for sub in ["check", "upgrade", "status", "rollback", "finalize"] {
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
