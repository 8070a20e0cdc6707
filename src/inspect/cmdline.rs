//! The old server's command line, as PostgreSQL records it in `postmaster.opts`: options given
//! with `pg_ctl -o "-p 5433 -k /run/pg -c max_connections=150"` override the configuration
//! files, so the new cluster must get them too, and a rollback must start the old server with
//! them again.
//!
//! Invariant: read-only; a file written by a server pgleap or pg_upgrade started (fenced, or
//! in binary-upgrade mode) is not the user's command line and is ignored.

use std::path::Path;

use crate::error::Finding;

/// What the old server was started with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CommandLine {
    /// The arguments after the program, `-D` and its value left out.
    pub(crate) args: Vec<String>,
}

/// A setting the command line set, and the option that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Given {
    pub(crate) name: String,
    pub(crate) value: String,
    pub(crate) option: String,
}

/// Settings that name the old cluster's own files: pgleap gives the new server its own.
const OWN_FILES: [&str; 2] = ["config_file", "data_directory"];

/// Reads `DATADIR/postmaster.opts`; `None` when there is none, it cannot be parsed, or it
/// records a start by pgleap or pg_upgrade.
pub(crate) fn read(datadir: &Path) -> Option<CommandLine> {
    let text = read_nofollow(&datadir.join("postmaster.opts"))?;
    let words = shell_words::split(text.trim()).ok()?;
    let mut args = Vec::new();
    let mut it = words.into_iter().skip(1);
    while let Some(w) = it.next() {
        if w == "-D" {
            it.next();
        } else if !w.starts_with("-D") {
            args.push(w);
        }
    }
    let cl = CommandLine { args };
    let ours = cl.args.iter().any(|a| a == "-b")
        || cl.settings().0.iter().any(|g| {
            g.name == "unix_socket_directories"
                && crate::exec::server::is_fence_dir(Path::new(&g.value))
        });
    (!ours).then_some(cl)
}

/// The file's text when it is a regular file of reasonable size: the data directory is the
/// owner's, and a link planted there must not make root read (and carry) another file.
pub(crate) fn read_nofollow(path: &Path) -> Option<String> {
    use crate::exec::ownerfs::{Follow, read_regular_text};
    read_regular_text(path, Follow::No, 64 * 1024).ok()
}

impl CommandLine {
    /// The settings the arguments set, in order, and the options that set none pgleap can
    /// carry (debugging switches such as `-O` or `-P`, or a file setting such as `hba_file`).
    pub(crate) fn settings(&self) -> (Vec<Given>, Vec<String>) {
        let mut given = Vec::new();
        let mut unknown = Vec::new();
        let mut it = self.args.iter();
        while let Some(a) = it.next() {
            let Some(flag) = a.strip_prefix('-') else {
                unknown.push(a.clone());
                continue;
            };
            if let Some(long) = flag.strip_prefix('-') {
                match long.split_once('=') {
                    Some((n, v)) => given.push(setting(&n.replace('-', "_"), v, a)),
                    None => unknown.push(a.clone()),
                }
                continue;
            }
            let letter = flag.chars().next().unwrap_or(' ');
            let attached = &flag[letter.len_utf8().min(flag.len())..];
            let switch = |name: &str, value: &str| Some(setting(name, value, a));
            let found = match letter {
                'i' => switch("listen_addresses", "*"),
                'F' => switch("fsync", "off"),
                'l' => switch("ssl", "on"),
                'p' | 'k' | 'h' | 'B' | 'N' | 'S' | 'c' => {
                    let value = if attached.is_empty() {
                        it.next().cloned().unwrap_or_default()
                    } else {
                        attached.to_string()
                    };
                    let option = format!("-{letter} {value}");
                    match letter {
                        'c' => value
                            .split_once('=')
                            .map(|(n, v)| setting(&n.replace('-', "_"), v, &option)),
                        _ => Some(setting(letter_setting(letter), &value, &option)),
                    }
                }
                _ => None,
            };
            match found {
                Some(g) if OWN_FILES.contains(&g.name.as_str()) => {}
                Some(g) if g.name == "hba_file" || g.name == "ident_file" => {
                    unknown.push(g.option);
                }
                Some(g) => given.push(g),
                None => unknown.push(a.clone()),
            }
        }
        (given, unknown)
    }

    /// The port the command line set, if any.
    pub(crate) fn port(&self) -> Option<u16> {
        self.settings()
            .0
            .iter()
            .rev()
            .find(|g| g.name == "port")
            .and_then(|g| g.value.parse().ok())
    }

    /// The last value the command line gave `name`.
    pub(crate) fn value(&self, name: &str) -> Option<String> {
        let (given, _) = self.settings();
        given
            .into_iter()
            .rev()
            .find(|g| g.name == name)
            .map(|g| g.value)
    }
}

fn letter_setting(letter: char) -> &'static str {
    match letter {
        'p' => "port",
        'k' => "unix_socket_directories",
        'h' => "listen_addresses",
        'B' => "shared_buffers",
        'N' => "max_connections",
        _ => "work_mem", // -S
    }
}

fn setting(name: &str, value: &str, option: &str) -> Given {
    Given {
        name: name.to_string(),
        value: value.to_string(),
        option: option.to_string(),
    }
}

/// Refuses options that cannot be carried into the new cluster's configuration, naming each:
/// the new server would run differently from the old one.
pub(crate) fn refusal(cl: &CommandLine, datadir: &Path) -> Option<Finding> {
    let (_, unknown) = cl.settings();
    if unknown.is_empty() {
        return None;
    }
    Some(Finding::error(
        "command-line-options",
        format!(
            "the old server was started with options pgleap cannot carry into the new cluster's configuration ({} in {}): {}",
            "postmaster.opts",
            datadir.display(),
            unknown.join(", ")
        ),
        "Set them in postgresql.conf instead (or drop them), restart the old server without them, and run pgleap again",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_link_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "postgres \"-c\" \"shared_buffers=1GB\"\n").unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::os::unix::fs::symlink(&secret, data.join("postmaster.opts")).unwrap();
        assert_eq!(read_nofollow(&data.join("postmaster.opts")), None);
        assert_eq!(read(&data), None);
        std::fs::remove_file(data.join("postmaster.opts")).unwrap();
        std::fs::copy(&secret, data.join("postmaster.opts")).unwrap();
        assert_eq!(read(&data).unwrap().args, ["-c", "shared_buffers=1GB"]);
    }

    fn from(text: &str) -> Option<CommandLine> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("postmaster.opts"), text).unwrap();
        read(dir.path())
    }

    #[test]
    fn reads_what_pg_ctl_passed() {
        let cl = from("/usr/lib/postgresql/16/bin/postgres \"-D\" \"/data/16\" \"-p\" \"5433\" \"-k\" \"/run/pg\" \"-c\" \"max_connections=150\" \"--work-mem=8MB\" \"-i\"\n").unwrap();
        assert_eq!(
            cl.args,
            [
                "-p",
                "5433",
                "-k",
                "/run/pg",
                "-c",
                "max_connections=150",
                "--work-mem=8MB",
                "-i"
            ]
        );
        let (given, unknown) = cl.settings();
        let pairs: Vec<(&str, &str)> = given
            .iter()
            .map(|g| (g.name.as_str(), g.value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("port", "5433"),
                ("unix_socket_directories", "/run/pg"),
                ("max_connections", "150"),
                ("work_mem", "8MB"),
                ("listen_addresses", "*")
            ]
        );
        assert!(unknown.is_empty());
        assert_eq!(cl.port(), Some(5433));
    }

    #[test]
    fn plain_starts_carry_nothing_and_pgleaps_own_are_ignored() {
        let plain = from("/pg/bin/postgres \"-D\" \"/data/16\"\n").unwrap();
        assert_eq!(plain, CommandLine::default());
        // Debian's pg_ctlcluster names the configuration file: pgleap supplies the new one.
        let debian =
            from("/pg/bin/postgres \"-D\" \"/var/lib/postgresql/16/main\" \"-c\" \"config_file=/etc/postgresql/16/main/postgresql.conf\"\n")
                .unwrap();
        assert_eq!(debian.settings(), (Vec::new(), Vec::new()));
        assert_eq!(
            from("/pg/bin/postgres \"-D\" \"/d\" \"-p\" \"50432\" \"-b\"\n"),
            None
        );
        assert_eq!(
            from(
                "/pg/bin/postgres \"-D\" \"/d\" \"-c\" \"unix_socket_directories=/tmp/pgleap-abc\"\n"
            ),
            None
        );
    }

    #[test]
    fn options_without_a_setting_are_refused_by_name() {
        let cl = from("/pg/bin/postgres \"-D\" \"/d\" \"-O\" \"-c\" \"hba_file=/x/hba.conf\"\n")
            .unwrap();
        let f = refusal(&cl, Path::new("/d")).unwrap();
        assert!(
            f.message.ends_with(": -O, -c hba_file=/x/hba.conf"),
            "{}",
            f.message
        );
        assert!(refusal(&CommandLine::default(), Path::new("/d")).is_none());
    }
}
