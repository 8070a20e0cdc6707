//! A PGDG RPM (RHEL) cluster: `/var/lib/pgsql/N/data`, binaries in `/usr/pgsql-N/bin`,
//! systemd unit `postgresql-N`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::exec::process::Runner;
use crate::host::boot::Boot;
use crate::host::host_layout::HostLayout;
use crate::host::root::under;
use crate::host::systemd::{systemctl, systemd_running, unit_enabled, unit_file_exists};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Rhel {
    pub(crate) version: u32,
}

impl HostLayout for Rhel {
    /// `<root>/var/lib/pgsql/N/data` → the layout of major N.
    fn recognize(root: &Path, datadir: &Path) -> Option<Rhel> {
        let rel = datadir.strip_prefix(under(root, "var/lib/pgsql")).ok()?;
        let parts: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
        match parts.as_slice() {
            [v, "data"] => Some(Rhel {
                version: v.parse().ok()?,
            }),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        let version = self.version;
        format!("RHEL/PGDG cluster (/var/lib/pgsql/{version}/data, unit postgresql-{version})")
    }

    /// A RHEL unit starts the default `/var/lib/pgsql/N/data` only: a new data directory
    /// elsewhere is plain.
    fn for_new(&self, root: &Path, major: u32, new_datadir: &Path) -> Option<Rhel> {
        (new_datadir == under(root, &format!("var/lib/pgsql/{major}/data")))
            .then_some(Rhel { version: major })
    }

    fn unit_name(&self) -> Option<String> {
        Some(format!("postgresql-{}", self.version))
    }

    fn unit_bindir(&self, root: &Path) -> Option<PathBuf> {
        Some(under(root, &format!("usr/pgsql-{}/bin", self.version)))
    }

    /// The old unit disabled and the new one enabled, when the old unit is enabled.
    fn plan_boot(&self, runner: &Runner, root: &Path, new: &dyn HostLayout) -> Option<Boot> {
        let old_unit = self.unit_name()?;
        if !unit_file_exists(root, &old_unit) || systemctl().is_none() {
            return None;
        }
        let offline_root = (!systemd_running(root)).then(|| root.to_path_buf());
        let enabled = |u: &str| unit_enabled(runner, offline_root.as_deref(), u);
        if !enabled(&old_unit) {
            return None;
        }
        let new_unit = new.unit_name().filter(|u| unit_file_exists(root, u));
        Some(Boot::Units {
            new_was_enabled: new_unit.as_deref().is_some_and(enabled),
            old: old_unit,
            new: new_unit,
            offline_root,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_pgdg_packages() {
        let r = Rhel { version: 17 };
        assert_eq!(r.unit_name().as_deref(), Some("postgresql-17"));
        assert_eq!(
            r.unit_bindir(Path::new("/")),
            Some(PathBuf::from("/usr/pgsql-17/bin"))
        );
    }
}
