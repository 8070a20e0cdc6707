//! A plain data directory: its configuration inside it, started by `pg_ctl` (or the hooks
//! given), nothing of it known to the host's service manager.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::host::host_layout::HostLayout;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Plain {}

impl HostLayout for Plain {
    fn describe(&self) -> String {
        "plain data directory (configuration inside it)".into()
    }

    fn recognize(_root: &Path, _datadir: &Path) -> Option<Plain> {
        Some(Plain {})
    }

    fn for_new(&self, _root: &Path, _major: u32, _new_datadir: &Path) -> Option<Plain> {
        Some(Plain {})
    }
}
