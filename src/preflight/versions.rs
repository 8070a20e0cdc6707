//! The majors: the old one supported, the new one newer.

use crate::error::Finding;
use crate::inspect::cluster::Cluster;
use crate::inspect::install::Install;
use crate::preflight::facts::Static;

/// The `control` family: the old cluster's `pg_control`, readable and of the major
/// `PG_VERSION` names; a refusal here ends the static phase with what was found so far.
pub(crate) fn control(
    s: &mut Static<'_>,
    findings: &mut crate::error::Findings,
) -> crate::error::Result<()> {
    match s.control {
        Ok(_) => Ok(()),
        Err(f) => Err(super::refuse_with(findings, f.clone())),
    }
}

pub(crate) fn check_versions(cluster: &Cluster, new: &Install) -> Result<(), Finding> {
    if cluster.major < 10 {
        return Err(Finding::error(
            "old-too-old",
            format!(
                "{} holds PostgreSQL {}, older than pgleap supports",
                cluster.datadir.display(),
                cluster.major
            ),
            "Upgrade to PostgreSQL 10 or newer first (for example with pg_upgrade by hand)",
        ));
    }
    if new.major <= cluster.major {
        let what = if new.major == cluster.major {
            "the same major"
        } else {
            "an older major"
        };
        return Err(Finding::error(
            if new.major == cluster.major {
                "same-major"
            } else {
                "downgrade"
            },
            format!(
                "{} is PostgreSQL {} and {} is PostgreSQL {}, {what}: pg_upgrade only moves to a newer major",
                cluster.datadir.display(),
                cluster.major,
                new.bindir.display(),
                new.major
            ),
            format!(
                "Pass --new-bindir or --new-version with a major newer than {}",
                cluster.major
            ),
        ));
    }
    Ok(())
}
