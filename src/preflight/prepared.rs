//! Prepared transactions, which pg_upgrade refuses: found in the old catalog before anything
//! starts, named, with the way to finish them.

use crate::error::Finding;
use crate::inspect::catalog::Catalog;
use crate::preflight::facts::CatalogFacts;

/// The `prepared` family: pending prepared transactions.
pub(crate) fn prepared(c: &CatalogFacts<'_>, findings: &mut crate::error::Findings) {
    if let Some(f) = c.catalog.and_then(prepared_finding) {
        findings.push(f);
    }
}

/// Gids listed in the message; the rest are counted.
const SHOWN: usize = 10;

pub(crate) fn prepared_finding(catalog: &Catalog) -> Option<Finding> {
    let n = catalog.prepared.len();
    if n == 0 {
        return None;
    }
    let mut list: Vec<String> = catalog
        .prepared
        .iter()
        .take(SHOWN)
        .map(|x| format!("'{}' (database {}, owner {})", x.gid, x.database, x.owner))
        .collect();
    if n > SHOWN {
        list.push(format!("and {} more (see pg_prepared_xacts)", n - SHOWN));
    }
    let noun = if n == 1 {
        "transaction"
    } else {
        "transactions"
    };
    Some(Finding::error(
        "prepared-transactions",
        format!(
            "the old cluster has {n} prepared {noun}, which pg_upgrade cannot carry: {}",
            list.join(", ")
        ),
        "Finish each in its database with COMMIT PREPARED 'gid' or ROLLBACK PREPARED 'gid' (as the application that prepared it intended; ask its owner), then run pgleap again",
    ))
}
