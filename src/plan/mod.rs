//! The Plan: everything an upgrade will do, decided before anything is done.
//!
//! A plain serializable value: `check --json` prints it, `upgrade` executes it.

pub(crate) mod args;
pub(crate) mod collations;
pub(crate) mod estimate;
pub(crate) mod prepare;

use std::path::PathBuf;

use serde::Serialize;

use crate::host::layout::Layout;
use crate::host::service::Host;
use crate::inspect::catalog::Catalog;
use crate::inspect::cluster::ControlData;
use crate::inspect::space::FsNeed;

/// How pg_upgrade moves relation files into the new cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Mode {
    /// clone where the filesystem shares extents (reflinks), else copy-file-range (17+) where
    /// the kernel accepts it, else copy.
    Auto,
    /// Hard links: fastest after swap, old cluster unusable once the new one starts.
    Link,
    /// Full copy: slowest, old cluster always intact.
    Copy,
    /// Reflinks (XFS with reflink=1, Btrfs): nearly as fast as link, old cluster intact.
    Clone,
    /// copy_file_range(2): a copy the kernel may accelerate (target 17+).
    CopyFileRange,
    /// Moves the data directories wholesale (target 18+): fastest, hardest to revert.
    Swap,
}

impl Mode {
    pub(crate) fn pg_upgrade_flag(self) -> &'static str {
        match self {
            Mode::Auto | Mode::Copy => "--copy",
            Mode::Link => "--link",
            Mode::Clone => "--clone",
            Mode::CopyFileRange => "--copy-file-range",
            Mode::Swap => "--swap",
        }
    }

    /// Modes whose new files take as much space as the old relation files.
    pub(crate) fn copies_data(self) -> bool {
        matches!(self, Mode::Copy | Mode::CopyFileRange | Mode::Auto)
    }

    /// Modes that need old and new data on one filesystem.
    pub(crate) fn needs_same_filesystem(self) -> bool {
        matches!(self, Mode::Link | Mode::Clone | Mode::Swap)
    }

    /// The oldest target major whose pg_upgrade offers this mode.
    pub(crate) fn min_target_major(self) -> u32 {
        match self {
            Mode::CopyFileRange => 17, // 17: --copy-file-range
            Mode::Swap => 18,          // 18: --swap
            _ => 12,
        }
    }

    /// True when the old cluster stays usable after the new one has started.
    pub(crate) fn old_survives_start(self) -> bool {
        matches!(
            self,
            Mode::Copy | Mode::Clone | Mode::CopyFileRange | Mode::Auto
        )
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Link => "link",
            Mode::Copy => "copy",
            Mode::Clone => "clone",
            Mode::CopyFileRange => "copy-file-range",
            Mode::Swap => "swap",
        }
    }
}

/// initdb options that make the new cluster match the old one.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub(crate) struct InitdbOptions {
    pub(crate) superuser: String,
    pub(crate) encoding: String,
    pub(crate) lc_collate: String,
    pub(crate) lc_ctype: String,
    /// `libc`, `icu` or `builtin`.
    pub(crate) locale_provider: String,
    /// ICU locale or builtin locale, when the provider needs one.
    pub(crate) provider_locale: Option<String>,
    pub(crate) icu_rules: Option<String>,
    pub(crate) checksums: bool,
    pub(crate) wal_segsize_mb: u64,
    /// The old data directory lets its group read it (mode 0750, `initdb -g`): a backup agent
    /// or monitoring user in the owner's group relies on it.
    #[serde(default)]
    pub(crate) group_access: bool,
}

impl InitdbOptions {
    pub(crate) fn from_old(
        catalog: &Catalog,
        control: &ControlData,
        group_access: bool,
    ) -> InitdbOptions {
        let t = &catalog.template0;
        InitdbOptions {
            superuser: catalog.bootstrap_superuser.clone(),
            encoding: t.encoding.clone(),
            lc_collate: t.collate.clone(),
            lc_ctype: t.ctype.clone(),
            locale_provider: t.provider.clone(),
            provider_locale: t.provider_locale.clone(),
            icu_rules: t.icu_rules.clone(),
            checksums: control.checksums,
            wal_segsize_mb: control.wal_segment_bytes / (1024 * 1024),
            group_access,
        }
    }

    /// The initdb arguments (after `-D DIR`) for a target of `new_major`.
    pub(crate) fn args(&self, new_major: u32) -> Vec<String> {
        let mut a = vec![
            format!("--username={}", self.superuser),
            format!("--encoding={}", self.encoding),
            // --locale first sets lc_messages and friends; the carried postgresql.conf
            // overrides those anyway.
            format!("--locale={}", self.lc_ctype),
            format!("--lc-collate={}", self.lc_collate),
            format!("--lc-ctype={}", self.lc_ctype),
            format!("--wal-segsize={}", self.wal_segsize_mb),
        ];
        // 15: --locale-provider and --icu-locale; 16: --icu-rules; 17: builtin provider.
        // An old cluster older than 15 is always libc, so older targets need none of them.
        if new_major >= 15 {
            a.push(format!("--locale-provider={}", self.locale_provider));
        }
        match (self.locale_provider.as_str(), &self.provider_locale) {
            ("icu", Some(l)) => a.push(format!("--icu-locale={l}")),
            ("builtin", Some(l)) => a.push(format!("--builtin-locale={l}")),
            _ => {}
        }
        if let Some(rules) = self.icu_rules.as_ref().filter(|_| new_major >= 16) {
            a.push(format!("--icu-rules={rules}"));
        }
        if self.group_access {
            a.push("--allow-group-access".into());
        }
        if self.checksums {
            a.push("--data-checksums".into());
        } else if new_major >= 18 {
            // 18: initdb enables data checksums by default; pg_upgrade refuses a mismatch.
            a.push("--no-data-checksums".into());
        }
        a
    }
}

/// One side of the upgrade.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) struct Side {
    pub(crate) datadir: PathBuf,
    /// Where postgresql.conf lives when it is not the data directory (Debian's
    /// `/etc/postgresql/N/NAME`): what `pg_ctl -D`, `postgres -D` and pg_upgrade are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) confdir: Option<PathBuf>,
    /// Where `pg_wal` points when the WAL lives apart (`initdb --waldir`), resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) waldir: Option<PathBuf>,
    /// The server's command-line options (`postmaster.opts`, `-D` left out): the old one is
    /// started with them again on rollback, and the settings they give are carried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) options: Vec<String>,
    pub(crate) bindir: PathBuf,
    pub(crate) major: u32,
    pub(crate) version: String,
    pub(crate) port: u16,
}

impl Side {
    /// The directory whose postgresql.conf the server reads.
    pub(crate) fn conf_dir(&self) -> PathBuf {
        self.confdir.clone().unwrap_or_else(|| self.datadir.clone())
    }
}

/// The complete plan of one upgrade.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) struct Plan {
    /// How the host organizes the old cluster (the new one follows it).
    #[serde(default)]
    pub(crate) layout: Layout,
    pub(crate) old: Side,
    pub(crate) new: Side,
    /// How servers are started and stopped, and the old one kept from starting at boot.
    #[serde(default)]
    pub(crate) host: Host,
    pub(crate) mode: Mode,
    pub(crate) mode_reason: String,
    /// `auto` chose `mode` (an explicit mode is never changed behind the user's back).
    #[serde(default)]
    pub(crate) mode_auto: bool,
    /// Why `auto` went from copy-file-range to copy before the window: what
    /// `pg_upgrade --check` said when it refused `--copy-file-range`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) mode_fallback: Option<String>,
    pub(crate) jobs: usize,
    pub(crate) owner: crate::exec::process::Owner,
    /// Where logs and scratch files of this upgrade live (beside the new data directory).
    pub(crate) work_dir: PathBuf,
    pub(crate) old_running: bool,
    pub(crate) old_state: String,
    pub(crate) tablespaces: Vec<PathBuf>,
    pub(crate) initdb: Option<InitdbOptions>,
    pub(crate) space: Vec<FsNeed>,
    pub(crate) relation_bytes: u64,
    /// User relation files only (what pg_upgrade transfers): the copy progress's 100%.
    #[serde(default)]
    pub(crate) user_relation_bytes: u64,
    pub(crate) estimated_downtime_secs: u64,
    /// What the estimate was computed from, and how.
    #[serde(default)]
    pub(crate) downtime_inputs: estimate::Inputs,
    #[serde(default)]
    pub(crate) downtime_basis: String,
    pub(crate) analyze: bool,
    pub(crate) leave_stopped: bool,
    /// Collation drift: what changed, what sorts by it, and what pgleap does about it.
    #[serde(default)]
    pub(crate) collations: collations::Section,
    /// The steps' names, in order (`steps::order::ORDER`).
    pub(crate) steps: Vec<String>,
    /// Standbys, slots and subscriptions, and what becomes of each (absent when the old
    /// cluster takes no part in replication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) replication: Option<crate::preflight::replication::Section>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(checksums: bool) -> InitdbOptions {
        InitdbOptions {
            superuser: "admin".into(),
            encoding: "UTF8".into(),
            lc_collate: "C.UTF-8".into(),
            lc_ctype: "C.UTF-8".into(),
            locale_provider: "libc".into(),
            provider_locale: None,
            icu_rules: None,
            checksums,
            wal_segsize_mb: 16,
            group_access: false,
        }
    }

    #[test]
    fn initdb_keeps_group_access() {
        let mut o = opts(false);
        assert!(!o.args(17).iter().any(|a| a == "--allow-group-access"));
        o.group_access = true;
        assert!(o.args(17).iter().any(|a| a == "--allow-group-access"));
    }

    #[test]
    fn initdb_matches_checksums_for_18() {
        assert!(
            opts(false)
                .args(18)
                .contains(&"--no-data-checksums".to_string())
        );
        assert!(!opts(false).args(17).iter().any(|a| a.contains("checksums")));
        assert!(
            opts(true)
                .args(17)
                .contains(&"--data-checksums".to_string())
        );
        assert!(
            !opts(true)
                .args(18)
                .contains(&"--no-data-checksums".to_string())
        );
    }

    #[test]
    fn initdb_keeps_superuser_locale_and_segsize() {
        let a = opts(true).args(17);
        for want in [
            "--username=admin",
            "--encoding=UTF8",
            "--lc-collate=C.UTF-8",
            "--wal-segsize=16",
            "--locale-provider=libc",
        ] {
            assert!(a.contains(&want.to_string()), "{want} missing from {a:?}");
        }
    }

    #[test]
    fn targets_before_15_get_no_locale_provider_flag() {
        assert!(
            !opts(false)
                .args(14)
                .iter()
                .any(|a| a.starts_with("--locale-provider"))
        );
        assert!(
            opts(false)
                .args(15)
                .contains(&"--locale-provider=libc".to_string())
        );
    }

    #[test]
    fn builtin_and_icu_locales_get_their_flag() {
        let mut o = opts(false);
        o.locale_provider = "builtin".into();
        o.provider_locale = Some("C.UTF-8".into());
        assert!(o.args(17).contains(&"--builtin-locale=C.UTF-8".to_string()));
        o.locale_provider = "icu".into();
        o.provider_locale = Some("und".into());
        assert!(o.args(16).contains(&"--icu-locale=und".to_string()));
    }

    #[test]
    fn modes_know_their_constraints() {
        assert!(Mode::Link.needs_same_filesystem());
        assert!(!Mode::Copy.needs_same_filesystem());
        assert_eq!(Mode::Swap.min_target_major(), 18);
        assert_eq!(Mode::CopyFileRange.min_target_major(), 17);
        assert!(!Mode::Link.old_survives_start());
        assert!(Mode::Clone.old_survives_start());
    }
}
