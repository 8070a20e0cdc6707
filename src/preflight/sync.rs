//! Synchronous replication across the upgrade (a warning, from the old catalog): the carried
//! `synchronous_standby_names` makes every commit on the new primary wait for a standby that
//! cannot connect until it is rebuilt for the new cluster.

use crate::error::{Finding, Findings};

use super::facts::CatalogFacts;

pub(crate) fn sync(c: &CatalogFacts<'_>, findings: &mut Findings) {
    if let Some(catalog) = c.catalog {
        findings.extend(sync_findings(&catalog.synchronous_standby_names));
    }
}

pub(crate) fn sync_findings(names: &str) -> Option<Finding> {
    let names = names.trim();
    if names.is_empty() {
        return None;
    }
    Some(Finding::warning(
        "synchronous-standbys",
        format!(
            "synchronous_standby_names is '{names}' and is carried: from the new server's start, every commit that asks for synchronous replication waits for a standby it names, and none can connect until the standbys are rebuilt for the new cluster, so clients' writes hang until then"
        ),
        "Rebuild the standbys before clients write (in --mode link, --standbys rebuild-later pauses for it before the new server's first start), or set synchronous_standby_names = '' with ALTER SYSTEM and reload before the upgrade, and set it back once a rebuilt standby streams. pgleap's own sessions do not wait for standbys",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_set_list_warns() {
        assert!(sync_findings("").is_none());
        assert!(sync_findings("  ").is_none());
        let f = sync_findings("FIRST 1 (s1, s2)").unwrap();
        assert_eq!(f.code, "synchronous-standbys");
        assert!(f.message.contains("'FIRST 1 (s1, s2)'"), "{}", f.message);
    }
}
