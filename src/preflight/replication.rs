//! Replication: what of the old cluster's slots, subscriptions and standbys survives this
//! major pair, decided and said before the window, and the refusals when the user has not
//! accepted a loss.
//!
//! PostgreSQL facts behind the decisions:
//! - pg_upgrade carries logical slots only from a 17+ old cluster, and only slots whose
//!   consumer has confirmed every change (it checks that once the old server is stopped);
//!   physical slots are never carried.
//! - pg_upgrade carries subscriptions with their table states and origin only from 17+;
//!   from older clusters they arrive disabled, with no table state and no origin progress.
//! - A physical standby cannot follow a primary of another major: it must be rebuilt.

use serde::{Deserialize, Serialize};

use crate::error::Finding;
use crate::inspect::replication::{Replication, Sender, Slot, Standby, host_port};

/// `--slots`: what to do with replication slots the upgrade cannot carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum SlotPolicy {
    /// Refuse when a slot would be lost.
    #[default]
    Refuse,
    /// Upgrade without them (from 17, logical slots that have not caught up are dropped
    /// right before the stop); the report says how to recreate each.
    Drop,
    /// Like drop, and recreate the physical slots (same names) on the new cluster.
    RecreatePhysical,
}

/// `--subscriptions`: subscriptions that arrive disabled and without table state (old < 17).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum SubscriptionPolicy {
    /// Refuse to upgrade a subscriber whose subscriptions would not be carried.
    #[default]
    Refuse,
    /// Upgrade; they stay disabled until you resume them as the report says.
    Disable,
    /// Upgrade, and resume each after the new start when its recorded state allows it
    /// (else it stays disabled and the report says why and how to resume it).
    Resume,
}

/// `--standbys`: physical standbys streaming from the old cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum StandbyPolicy {
    /// Refuse while a standby streams from the old cluster.
    #[default]
    Refuse,
    /// Upgrade; rebuild each standby as the output says. In link mode the upgrade pauses
    /// before the new primary's first start, for the rsync of pg_upgrade's documentation.
    RebuildLater,
    /// Upgrade without pausing; rebuild each standby from a fresh base backup of the new
    /// primary afterwards.
    Basebackup,
}

/// The three choices together, as given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Policies {
    pub(crate) slots: SlotPolicy,
    pub(crate) subscriptions: SubscriptionPolicy,
    pub(crate) standbys: StandbyPolicy,
}

/// What happens to one replication item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Fate {
    /// pg_upgrade carries it as it is.
    Kept,
    /// Not carried; recreated by pgleap on the new cluster after its start.
    Recreated,
    /// Not carried; the user accepted losing it.
    Dropped,
    /// Carried disabled, without table state: to be resumed by hand.
    Disabled,
    /// A standby that must be rebuilt from the new primary.
    Rebuild,
}

/// What an upgrade did to replication items beyond what the plan decided, journaled as it
/// happens and reported at the end.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Logical slots of a 17+ old cluster dropped right before the stop (`--slots drop`):
    /// name and why.
    #[serde(default)]
    pub(crate) dropped: Vec<(String, String)>,
    /// The fence before the stop: how long it held and what it cut off.
    #[serde(default)]
    pub(crate) fence: Option<String>,
    /// Subscriptions after the new start (`--subscriptions resume`): what pgleap did.
    #[serde(default)]
    pub(crate) subscriptions: Vec<SubscriptionOutcome>,
}

/// One subscription after the new start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct SubscriptionOutcome {
    /// `database.name`.
    pub(crate) name: String,
    /// Whether pgleap resumed it (or found it running).
    pub(crate) resumed: bool,
    /// What happened, or why it was not resumed.
    pub(crate) note: String,
}

/// Whether the state recorded before the window lets pgleap resume a subscription of an old
/// cluster before 17 by itself (`--subscriptions resume`); `origin_lsn` is how far it had
/// applied when the old server stopped. `Err` says why not.
pub(crate) fn resume_allowed(
    s: &crate::inspect::replication::Subscription,
    origin_lsn: Option<&str>,
) -> Result<(), String> {
    if !s.enabled {
        return Err(
            "it was disabled before the upgrade; enable it yourself when you want it to run".into(),
        );
    }
    if s.slot.is_none() {
        return Err("it has no slot on the publisher (slot_name = NONE)".into());
    }
    if s.tables_ready != s.tables {
        return Err(format!(
            "{} of its {} tables were still being synchronized (not in state ready): REFRESH PUBLICATION WITH (copy_data = false) would leave them incomplete; re-create the subscription with copy_data = true, or resume it as below and resynchronize those tables",
            s.tables - s.tables_ready,
            s.tables
        ));
    }
    if origin_lsn.is_none() {
        return Err("how far it had applied could not be read from the old cluster's pg_logical/replorigin_checkpoint".into());
    }
    Ok(())
}

/// The plan's replication section: the facts, the choices and each item's fate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Section {
    pub(crate) policies: Policies,
    pub(crate) facts: Replication,
    /// Slot name → fate, in `facts.slots` order.
    pub(crate) slots: Vec<(String, Fate)>,
    /// `database.subscription` → fate.
    pub(crate) subscriptions: Vec<(String, Fate)>,
    /// Standbys (`application_name`) → fate.
    pub(crate) standbys: Vec<(String, Fate)>,
    /// Where standbys and consumers reach this server: its socket directory (for those on
    /// this machine) and the host name (for the others).
    #[serde(default)]
    pub(crate) socket_dir: Option<std::path::PathBuf>,
    #[serde(default)]
    pub(crate) hostname: String,
    /// Where each standby keeps its data (see `preflight::standby`).
    #[serde(default)]
    pub(crate) standby_places: Vec<super::standby::Place>,
    /// Settings the old major has and the new one does not, which a standby's re-applied
    /// `postgresql.auto.conf` must not bring back (see `preflight::standby::settings_gone`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) settings_gone: Vec<String>,
}

impl Section {
    pub(crate) fn fate_of_slot(&self, name: &str) -> Option<Fate> {
        self.slots.iter().find(|(n, _)| n == name).map(|(_, f)| *f)
    }

    /// Whether there is anything to say: a slot, a walsender, a subscription or a publication.
    pub(crate) fn is_empty(&self) -> bool {
        let f = &self.facts;
        f.slots.is_empty()
            && f.senders.is_empty()
            && f.subscriptions.is_empty()
            && f.publications.is_empty()
    }

    /// Physical slots pgleap recreates after the new server starts.
    pub(crate) fn to_recreate(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter(|(_, f)| *f == Fate::Recreated)
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// Physical standbys: walsenders that do not stream from a logical slot. A base backup in
/// progress (`pg_basebackup`, state `backup`) is a walsender too, but no standby follows it.
pub(crate) fn standbys(facts: &Replication) -> impl Iterator<Item = &Sender> {
    facts
        .senders
        .iter()
        .filter(|s| !s.logical && s.state != "backup")
}

/// Refuses an old cluster that is itself a standby, naming the primary it follows.
pub(crate) fn standby_finding(datadir: &std::path::Path, standby: &Standby) -> Finding {
    let primary = standby.primary_conninfo.as_deref().map_or_else(
        || "no primary_conninfo was found (it may replay archived WAL only)".to_string(),
        |c| format!("it follows the primary at {} ({c})", host_port(c)),
    );
    Finding::error(
        "old-is-standby",
        format!(
            "{} is a standby ({} is present); {primary}. A standby cannot be upgraded on its own",
            datadir.display(),
            standby.file
        ),
        "Upgrade its primary instead (pgleap upgrade --standbys rebuild-later on the primary prints how to rebuild this standby from it); or, if this server is to become the primary, promote it first (pg_ctl promote)",
    )
}

/// Decides each item's fate and raises the refusals for what the user has not accepted.
pub(crate) fn decide(
    facts: &Replication,
    majors: (u32, u32),
    policies: Policies,
    findings: &mut Vec<Finding>,
) -> Section {
    if facts.in_recovery {
        findings.push(Finding::error(
            "old-in-recovery",
            "the old server is in recovery (pg_is_in_recovery() is true) although no standby.signal or recovery.signal is left in its data directory",
            "Let recovery finish (or promote the server with pg_ctl promote), then run pgleap again",
        ));
    }
    let slots = slot_fates(facts, majors.0, policies.slots, findings);
    let subscriptions = subscription_fates(facts, majors, policies.subscriptions, findings);
    let standbys = standby_fates(facts, policies.standbys, findings);
    Section {
        policies,
        facts: facts.clone(),
        slots,
        subscriptions,
        standbys,
        socket_dir: None,
        standby_places: Vec::new(),
        settings_gone: Vec::new(),
        hostname: nix::unistd::gethostname()
            .map_or_else(|_| "localhost".into(), |h| h.to_string_lossy().into_owned()),
    }
}

fn describe_slot(s: &Slot) -> String {
    match (&s.plugin, &s.database) {
        (Some(p), Some(d)) => format!("'{}' (logical, {p}, database {d})", s.name),
        _ => format!("'{}' (physical)", s.name),
    }
}

/// A logical slot of a 17+ cluster that pg_upgrade would refuse once the server is stopped.
pub(crate) fn not_caught_up(s: &Slot) -> Option<String> {
    /// A consumer further behind than this is not waited for inside the window.
    const FAR_BEHIND: i64 = 16 * 1024 * 1024;
    if s.invalidated {
        return Some(format!("{} is invalidated", describe_slot(s)));
    }
    if !s.active && s.pending_changes == Some(true) {
        return Some(format!(
            "{} has no consumer connected and changes it has not confirmed (confirmed up to {})",
            describe_slot(s),
            s.confirmed_flush_lsn.as_deref().unwrap_or("nothing")
        ));
    }
    match s.lag_bytes {
        Some(lag) if lag > FAR_BEHIND => Some(format!(
            "{} is {} MiB of WAL behind",
            describe_slot(s),
            lag / (1024 * 1024)
        )),
        _ => None,
    }
}

fn slot_fates(
    facts: &Replication,
    old_major: u32,
    policy: SlotPolicy,
    findings: &mut Vec<Finding>,
) -> Vec<(String, Fate)> {
    let mut lost = Vec::new();
    let mut behind = Vec::new();
    let mut fates = Vec::new();
    for s in &facts.slots {
        // 17: pg_upgrade carries logical slots (not physical ones).
        let carried = s.is_logical() && old_major >= 17;
        let fate = if carried {
            match (not_caught_up(s), policy) {
                (Some(why), SlotPolicy::Refuse) => {
                    behind.push(why);
                    Fate::Kept
                }
                // Dropped on the old cluster right before the stop (`steps::fence`).
                (Some(_), _) => Fate::Dropped,
                (None, _) => Fate::Kept,
            }
        } else {
            match policy {
                SlotPolicy::Refuse => {
                    lost.push(describe_slot(s));
                    Fate::Dropped
                }
                SlotPolicy::RecreatePhysical if !s.is_logical() => Fate::Recreated,
                _ => Fate::Dropped,
            }
        };
        fates.push((s.name.clone(), fate));
    }
    if !lost.is_empty() {
        let why = if old_major >= 17 {
            "pg_upgrade never carries physical slots".to_string()
        } else {
            format!(
                "pg_upgrade carries no replication slot from PostgreSQL {old_major} (logical slots only from 17)"
            )
        };
        findings.push(Finding::error(
            "replication-slots-lost",
            format!(
                "the upgrade would lose {} replication slot{} ({why}): {}",
                lost.len(),
                if lost.len() == 1 { "" } else { "s" },
                lost.join(", ")
            ),
            "Pass --slots drop to upgrade without them (the report then gives the command that recreates each and what its consumer must do), or --slots recreate-physical to have pgleap recreate the physical ones on the new cluster",
        ));
    }
    if !behind.is_empty() {
        findings.push(behind_finding(&behind));
    }
    for s in facts
        .slots
        .iter()
        .filter(|s| s.is_logical() && old_major >= 17 && !s.active && s.pending_changes.is_none())
    {
        findings.push(Finding::warning(
            "replication-slot-behind",
            format!(
                "cannot tell whether {} has changes left to consume (test_decoding is missing or no slot is free); pg_upgrade will refuse it inside the window if it has",
                describe_slot(s)
            ),
            "Make sure its consumer has consumed everything before the upgrade",
        ));
    }
    fates
}

/// The refusal of 17+ logical slots pg_upgrade would not carry, each with why.
pub(crate) fn behind_finding(behind: &[String]) -> Finding {
    Finding::error(
        "replication-slot-behind",
        format!(
            "pg_upgrade carries a logical slot only once its consumer has confirmed every change, and checks it with the old server stopped: {}",
            behind.join("; ")
        ),
        "Let each consumer catch up (connect it, or consume the slot with pg_logical_slot_get_changes), or pass --slots drop to have pgleap drop the slots that have not caught up right before the stop (the report names each and how to recreate it); then run pgleap again",
    )
}

fn subscription_fates(
    facts: &Replication,
    majors: (u32, u32),
    policy: SubscriptionPolicy,
    findings: &mut Vec<Finding>,
) -> Vec<(String, Fate)> {
    let carried = majors.0 >= 17;
    let fates: Vec<(String, Fate)> = facts
        .subscriptions
        .iter()
        .map(|s| {
            let fate = if carried { Fate::Kept } else { Fate::Disabled };
            (format!("{}.{}", s.database, s.name), fate)
        })
        .collect();
    if !carried && !fates.is_empty() && policy == SubscriptionPolicy::Refuse {
        let names: Vec<String> = facts
            .subscriptions
            .iter()
            .map(|s| {
                format!(
                    "'{}' (database {}, from {})",
                    s.name,
                    s.database,
                    host_port(&s.conninfo)
                )
            })
            .collect();
        findings.push(Finding::error(
            "subscriptions-not-carried",
            format!(
                "this cluster subscribes to {}; pg_upgrade from PostgreSQL {} to {} leaves each subscription disabled and without its table states, so rows published afterwards would never arrive",
                names.join(", "),
                majors.0,
                majors.1
            ),
            "Pass --subscriptions disable to upgrade anyway: the report then gives, for each subscription, the exact statements that resume it from where it stopped without losing or repeating rows; or --subscriptions resume to have pgleap run them after the new start when the subscription's recorded state allows it",
        ));
    }
    fates
}

fn standby_fates(
    facts: &Replication,
    policy: StandbyPolicy,
    findings: &mut Vec<Finding>,
) -> Vec<(String, Fate)> {
    let list: Vec<&Sender> = standbys(facts).collect();
    if !list.is_empty() && policy == StandbyPolicy::Refuse {
        let names: Vec<String> = list.iter().map(|s| describe_standby(s)).collect();
        findings.push(Finding::error(
            "standbys-connected",
            format!(
                "{} standby{} stream{} from the old cluster and cannot follow the new major: {}",
                list.len(),
                if list.len() == 1 { "" } else { "s" },
                if list.len() == 1 { "s" } else { "" },
                names.join(", ")
            ),
            "Pass --standbys rebuild-later to upgrade the primary anyway (in link mode the upgrade then pauses before the new primary's first start and prints each standby's rsync from the upgraded primary; in other modes, its rebuild from a fresh base backup), or --standbys basebackup for a base backup without the pause; with --standby NAME=[HOST:]DIR for each standby's own data directory",
        ));
    }
    list.iter()
        .map(|s| (s.application_name.clone(), Fate::Rebuild))
        .collect()
}

pub(crate) fn describe_standby(s: &Sender) -> String {
    format!(
        "'{}' ({}, user {}{})",
        s.application_name,
        s.client_addr
            .as_deref()
            .map_or_else(|| "over a Unix socket".to_string(), |a| format!("from {a}")),
        s.user,
        s.slot
            .as_deref()
            .map(|n| format!(", slot {n}"))
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(name: &str, logical: bool) -> Slot {
        Slot {
            name: name.into(),
            kind: if logical { "logical" } else { "physical" }.into(),
            plugin: logical.then(|| "test_decoding".into()),
            database: logical.then(|| "app".into()),
            active: false,
            restart_lsn: Some("0/1000000".into()),
            confirmed_flush_lsn: logical.then(|| "0/1000100".into()),
            retained_bytes: Some(1000),
            lag_bytes: logical.then_some(100),
            pending_changes: Some(false),
            invalidated: false,
        }
    }

    fn facts(slots: Vec<Slot>) -> Replication {
        Replication {
            slots,
            ..Replication::default()
        }
    }

    #[test]
    fn slots_before_17_are_lost_unless_dropped() {
        let f = facts(vec![slot("l", true), slot("p", false)]);
        let mut out = Vec::new();
        let s = decide(&f, (16, 17), Policies::default(), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].code, "replication-slots-lost");
        assert!(
            out[0]
                .message
                .contains("'l' (logical, test_decoding, database app)")
        );
        assert!(out[0].message.contains("'p' (physical)"));
        let mut out = Vec::new();
        let p = Policies {
            slots: SlotPolicy::RecreatePhysical,
            ..Policies::default()
        };
        let s2 = decide(&f, (16, 17), p, &mut out);
        assert!(out.is_empty());
        assert_eq!(s2.fate_of_slot("l"), Some(Fate::Dropped));
        assert_eq!(s2.to_recreate(), ["p"]);
        assert_eq!(s.fate_of_slot("p"), Some(Fate::Dropped));
    }

    #[test]
    fn caught_up_logical_slots_of_17_are_kept_and_lagging_ones_refused() {
        let mut lagging = slot("late", true);
        lagging.pending_changes = Some(true);
        let f = facts(vec![slot("ok", true), lagging]);
        let mut out = Vec::new();
        let s = decide(&f, (17, 18), Policies::default(), &mut out);
        assert_eq!(s.fate_of_slot("ok"), Some(Fate::Kept));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].code, "replication-slot-behind");
        assert!(out[0].message.contains("'late'"));
        assert!(!out[0].message.contains("'ok'"));
    }

    fn sender(name: &str, state: &str) -> Sender {
        Sender {
            pid: 1,
            user: "rep".into(),
            application_name: name.into(),
            client_addr: None,
            state: state.into(),
            slot: None,
            logical: false,
        }
    }

    #[test]
    fn a_base_backup_in_progress_is_not_a_standby() {
        let mut f = facts(Vec::new());
        f.senders = vec![sender("pg_basebackup", "backup")];
        let mut out = Vec::new();
        let s = decide(&f, (16, 17), Policies::default(), &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert!(s.standbys.is_empty());
        f.senders.push(sender("walreceiver", "streaming"));
        let s = decide(&f, (16, 17), Policies::default(), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].code, "standbys-connected");
        assert!(
            out[0].message.contains("'walreceiver'"),
            "{}",
            out[0].message
        );
        assert!(
            !out[0].message.contains("pg_basebackup"),
            "{}",
            out[0].message
        );
        assert_eq!(s.standbys, [("walreceiver".to_string(), Fate::Rebuild)]);
    }

    #[test]
    fn resumes_only_what_the_recorded_state_allows() {
        let ready = crate::inspect::replication::Subscription {
            name: "sub".into(),
            database: "app".into(),
            enabled: true,
            conninfo: "host=/tmp port=5433 dbname=app".into(),
            slot: Some("sub".into()),
            publications: vec!["pub".into()],
            tables_ready: 2,
            tables: 2,
            origin: "pg_16400".into(),
            origin_id: Some(1),
        };
        assert_eq!(resume_allowed(&ready, Some("0/3000060")), Ok(()));
        let why = |s: &crate::inspect::replication::Subscription, lsn: Option<&str>| {
            resume_allowed(s, lsn).unwrap_err()
        };
        assert!(why(&ready, None).contains("replorigin_checkpoint"));
        let mut s = ready.clone();
        s.enabled = false;
        assert!(why(&s, Some("0/1")).starts_with("it was disabled before the upgrade"));
        let mut s = ready.clone();
        s.slot = None;
        assert!(why(&s, Some("0/1")).contains("slot_name = NONE"));
        let mut s = ready;
        s.tables_ready = 1;
        assert!(
            why(&s, Some("0/1")).starts_with("1 of its 2 tables were still being synchronized")
        );
    }

    #[test]
    fn subscriptions_before_17_need_the_opt_in() {
        let mut f = facts(Vec::new());
        f.subscriptions
            .push(crate::inspect::replication::Subscription {
                name: "sub".into(),
                database: "app".into(),
                enabled: true,
                conninfo: "host=/tmp port=5433 dbname=app".into(),
                slot: Some("sub".into()),
                publications: vec!["pub".into()],
                tables_ready: 1,
                tables: 1,
                origin: "pg_16400".into(),
                origin_id: Some(1),
            });
        let mut out = Vec::new();
        decide(&f, (16, 17), Policies::default(), &mut out);
        assert_eq!(out[0].code, "subscriptions-not-carried");
        let mut out = Vec::new();
        let p = Policies {
            subscriptions: SubscriptionPolicy::Disable,
            ..Policies::default()
        };
        let s = decide(&f, (16, 17), p, &mut out);
        assert!(out.is_empty());
        assert_eq!(s.subscriptions, [("app.sub".to_string(), Fate::Disabled)]);
        let s = decide(&f, (17, 18), Policies::default(), &mut out);
        assert!(out.is_empty());
        assert_eq!(s.subscriptions[0].1, Fate::Kept);
    }
}
