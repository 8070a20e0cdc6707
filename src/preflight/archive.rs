//! WAL archiving across the upgrade (warnings, from the old catalog): the new cluster gets a
//! new system identifier and archives to the same place from its first start, so backups and
//! backup tools need attention; an archiver that fails already is named.

use crate::error::{Finding, Findings};
use crate::inspect::archive::Archiving;

use super::facts::CatalogFacts;

pub(crate) fn archive(c: &CatalogFacts<'_>, findings: &mut Findings) {
    if let Some(catalog) = c.catalog {
        for f in archive_findings(&catalog.archiving) {
            findings.push(f);
        }
    }
}

pub(crate) fn archive_findings(a: &Archiving) -> Vec<Finding> {
    if !a.active() {
        return Vec::new();
    }
    let how = a.how();
    let tool = a
        .tool_advice()
        .map_or_else(String::new, |t| format!(" ({t})"));
    let mut out = vec![Finding::warning(
        "wal-archiving",
        format!(
            "WAL archiving is on ({how}): the new cluster has a new system identifier and archives its WAL to the same place from its first start; backups of the old cluster cannot restore it"
        ),
        format!(
            "Take a new base backup once the upgrade is done{tool}. pgleap keeps pg_upgrade's throwaway WAL out of the archive and reports whether the new cluster archives"
        ),
    )];
    if let Some(wal) = &a.failing {
        out.push(Finding::warning(
            "wal-archiving-failing",
            format!(
                "the old cluster's WAL archiving fails now (its last attempt, for {wal}, failed after the last success): the archive lacks WAL since, and the new cluster runs the same {how}"
            ),
            "Find the error in the server log and make archiving work again, before the upgrade",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(tool: Option<&str>, failing: Option<&str>) -> Archiving {
        Archiving {
            mode: "on".into(),
            command: true,
            tool: tool.map(Into::into),
            library: None,
            failing: failing.map(Into::into),
        }
    }

    #[test]
    fn archiving_warns_with_the_tools_next_step_and_names_a_failing_archiver() {
        assert!(archive_findings(&Archiving::default()).is_empty());
        let f = archive_findings(&on(Some("pgbackrest"), None));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].code, "wal-archiving");
        assert!(f[0].message.contains("(archive_command runs pgbackrest)"));
        assert!(f[0].fix.contains("stanza-upgrade"), "{}", f[0].fix);
        let f = archive_findings(&on(None, Some("00000001000000000000002A")));
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].code, "wal-archiving-failing");
        assert!(f[1].message.contains("for 00000001000000000000002A"));
    }
}
