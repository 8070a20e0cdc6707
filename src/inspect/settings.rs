//! A setting as a configuration directory sets it, asked of the installation's `postgres -C`
//! (run as the owner; it reads the files, it starts no server). Answers are remembered for
//! the life of the process: `pg_upgrade --check`, before the window, asks; the real run
//! inside the window finds the answer already there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::exec::process::{Opts, Runner};
use crate::inspect::install::Install;

type Key = (PathBuf, PathBuf, &'static str);

/// Answers already given, by postgres executable, configuration directory and setting.
fn asked() -> &'static Mutex<HashMap<Key, Option<String>>> {
    static ASKED: OnceLock<Mutex<HashMap<Key, Option<String>>>> = OnceLock::new();
    ASKED.get_or_init(Mutex::default)
}

/// `name` as `confdir`'s configuration files set it, in the setting's base unit (blocks for
/// `shared_buffers`); `None` when `postgres -C` cannot say (a configuration it rejects).
pub(crate) fn setting(
    runner: &Runner,
    install: &Install,
    confdir: &Path,
    name: &'static str,
) -> Option<String> {
    let key = (install.postgres(), confdir.to_path_buf(), name);
    let remembered = asked()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key)
        .cloned();
    if let Some(answer) = remembered {
        return answer;
    }
    let args = [
        "-D".to_string(),
        confdir.display().to_string(),
        "-C".into(),
        name.to_string(),
    ];
    let answer = runner
        .run_unchecked(
            &key.0,
            &args,
            &Opts {
                log_name: Some("setting"),
                ..Opts::default()
            },
        )
        .ok()
        .filter(|out| out.status.success())
        .map(|out| out.stdout().trim().to_string())
        .filter(|v| !v.is_empty());
    asked()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(key, answer.clone());
    answer
}
