//! What the user asked for: the flags that name an upgrade and choose how it runs, as
//! clap reads them (every option also reads a `PGLEAP_<OPTION>` environment variable).
//! `prepare` turns them into a Plan.

use std::path::PathBuf;

use clap::Args;

use crate::host::debian::ClusterId;
use crate::plan::Mode;
use crate::plan::collations::CollationMode;
use crate::preflight::replication::{Policies, SlotPolicy, StandbyPolicy, SubscriptionPolicy};
use crate::preflight::standby::StandbyArg;

/// Which upgrade: the old cluster (by data directory or postgresql-common name), the host
/// root its paths are resolved under, and the new data directory. Shared by every command.
#[derive(Debug, Clone, Args)]
pub(crate) struct Target {
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

    /// The new data directory [default: the old path with its major component replaced,
    /// e.g. /data/15 → /data/17].
    #[arg(short = 'D', long, env = "PGLEAP_NEW_DATADIR", value_name = "DIR")]
    pub(crate) new_datadir: Option<PathBuf>,
}

/// Options shared by `check` and `upgrade`, in pg_upgrade's vocabulary.
#[derive(Debug, Clone, Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    pub(crate) target: Target,

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

    /// The old installation's bin directory [default: found from PG_VERSION in
    /// /usr/lib/postgresql/N/bin, /usr/pgsql-N/bin, then PATH].
    #[arg(short = 'b', long, env = "PGLEAP_OLD_BINDIR", value_name = "DIR")]
    pub(crate) old_bindir: Option<PathBuf>,

    /// The new installation's bin directory. Wins over --new-version, which must then name
    /// the same major.
    #[arg(short = 'B', long, env = "PGLEAP_NEW_BINDIR", value_name = "DIR")]
    pub(crate) new_bindir: Option<PathBuf>,

    /// The new major version, looked up like --old-bindir [default: the newest installed].
    /// With --new-bindir, only checked against that installation's major.
    #[arg(long, env = "PGLEAP_NEW_VERSION", value_name = "N")]
    pub(crate) new_version: Option<u32>,

    /// How data files reach the new cluster. auto: clone where the filesystem supports
    /// reflinks, else copy-file-range for a 17+ target where the kernel accepts it, else copy.
    #[arg(short, long, env = "PGLEAP_MODE", value_enum, default_value_t = Mode::Auto)]
    pub(crate) mode: Mode,

    /// Parallel jobs for pg_upgrade, and ANALYZE sessions across all databases [default:
    /// number of cores].
    #[arg(short, long, env = "PGLEAP_JOBS", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) jobs: Option<u32>,

    /// What to do about indexes sorted by a collation whose version changed (glibc or ICU
    /// under the cluster moved): report them and the commands that repair them; reindex
    /// them concurrently once the new server serves, then refresh the recorded versions;
    /// or refuse the upgrade.
    #[arg(long, env = "PGLEAP_COLLATIONS", value_name = "MODE", value_enum, default_value_t = CollationMode::Report)]
    pub(crate) collations: CollationMode,

    /// Role to connect as first [default: the data directory owner's name, then postgres].
    #[arg(short = 'U', long, env = "PGLEAP_USERNAME", value_name = "ROLE")]
    pub(crate) username: Option<String>,

    /// Replication slots the upgrade cannot carry (all before 17, physical ones always, from
    /// 17 logical ones that have not caught up): refuse, drop them (those of 17+ right before
    /// the stop), or drop them and recreate the physical ones on the new cluster.
    #[arg(long, env = "PGLEAP_SLOTS", value_name = "POLICY", value_enum, default_value_t = SlotPolicy::Refuse)]
    pub(crate) slots: SlotPolicy,

    /// Subscriptions of an old cluster before 17, which arrive disabled and without table
    /// state: refuse, upgrade and resume them afterwards as the report says (disable), or
    /// have pgleap resume them after the start when their recorded state allows it (resume).
    #[arg(long, env = "PGLEAP_SUBSCRIPTIONS", value_name = "POLICY", value_enum, default_value_t = SubscriptionPolicy::Refuse)]
    pub(crate) subscriptions: SubscriptionPolicy,

    /// Physical standbys streaming from the old cluster: refuse, or upgrade and rebuild them
    /// afterwards as the report says.
    #[arg(long, env = "PGLEAP_STANDBYS", value_name = "POLICY", value_enum, default_value_t = StandbyPolicy::Refuse)]
    pub(crate) standbys: StandbyPolicy,

    /// A standby's own data directory, for its rebuild procedure: NAME is its
    /// application_name in pg_stat_replication, DIR its old data directory, HOST its host
    /// [default: the primary's paths on the host it connects from]. Repeat for each standby.
    #[arg(
        long,
        env = "PGLEAP_STANDBY",
        value_name = "NAME=[HOST:]DIR",
        value_delimiter = ','
    )]
    pub(crate) standby: Vec<StandbyArg>,

    /// Print one JSON document on stdout (the plan and findings; for upgrade, the result).
    #[arg(long, env = "PGLEAP_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) json: bool,
}

impl CheckArgs {
    /// The replication choices (`--slots`, `--subscriptions`, `--standbys`).
    pub(crate) fn policies(&self) -> Policies {
        Policies {
            slots: self.slots,
            subscriptions: self.subscriptions,
            standbys: self.standbys,
        }
    }
}
