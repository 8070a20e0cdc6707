//! The libpq password file (`PGPASSFILE`, else `~/.pgpass`), read by pgleap's own
//! connections with libpq's rules, so that what works for `psql` works for pgleap.
//!
//! Rules kept: lines `hostname:port:database:username:password`, `*` matching anything,
//! `\` escaping `:` and `\`, lines starting with `#` skipped, the first matching line wins,
//! and a file with any group or world permission is ignored (libpq warns and ignores it too).
//! For a Unix socket, `localhost` matches a connection through the usual default socket
//! directories, as it does for libpq built with that default; the socket directory's own path
//! always matches.

use std::path::{Path, PathBuf};

/// Socket directories a packaged libpq uses by default (`DEFAULT_PGSOCKET_DIR`).
const DEFAULT_SOCKET_DIRS: [&str; 3] = ["/tmp", "/var/run/postgresql", "/run/postgresql"];

/// What the password file gave for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    Found(String),
    /// No file (or no home directory to look in).
    NoFile,
    /// The file exists but no line matches.
    NoMatch(PathBuf),
    /// The file was not used; the reason says why.
    Ignored(PathBuf, String),
}

/// The password file libpq would read: `PGPASSFILE`, else `$HOME/.pgpass`.
pub(crate) fn path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PGPASSFILE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| Path::new(&h).join(".pgpass"))
}

/// The password for a connection through the Unix socket in `socket_dir`.
pub(crate) fn lookup(socket_dir: &Path, port: u16, dbname: &str, user: &str) -> Lookup {
    match path() {
        Some(file) => lookup_in(file, socket_dir, port, dbname, user),
        None => Lookup::NoFile,
    }
}

fn lookup_in(file: PathBuf, socket_dir: &Path, port: u16, dbname: &str, user: &str) -> Lookup {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(meta) = std::fs::metadata(&file) else {
        return Lookup::NoFile;
    };
    if !meta.is_file() {
        return Lookup::Ignored(file, "it is not a plain file".into());
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Lookup::Ignored(file, "it has group or world access (chmod 0600 it)".into());
    }
    // libpq follows a link to the password file; a FIFO swapped in must not hang pgleap.
    let text = match crate::exec::ownerfs::read_regular_text(
        &file,
        crate::exec::ownerfs::Follow::Links,
        crate::exec::ownerfs::READ_LIMIT,
    ) {
        Ok(t) => t,
        Err(e) => return Lookup::Ignored(file, format!("it cannot be read: {e}")),
    };
    let socket = socket_dir.display().to_string();
    let host_ok = |h: &str| {
        h == socket || (h == "localhost" && DEFAULT_SOCKET_DIRS.contains(&socket.as_str()))
    };
    let port = port.to_string();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some([h, p, d, u, password]) = fields(line) else {
            continue;
        };
        let any = |f: &str, v: &str| f == "*" || f == v;
        if (h == "*" || host_ok(&h)) && any(&p, &port) && any(&d, dbname) && any(&u, user) {
            return Lookup::Found(password);
        }
    }
    Lookup::NoMatch(file)
}

/// The five fields of a line, unescaped; `None` when it has fewer.
fn fields(line: &str) -> Option<[String; 5]> {
    let mut out: Vec<String> = vec![String::new()];
    let mut chars = line.trim_end_matches('\r').chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.last_mut()?.push(n);
                }
            }
            // The password ends at an unescaped colon too.
            ':' if out.len() == 5 => break,
            ':' => out.push(String::new()),
            _ => out.last_mut()?.push(c),
        }
    }
    out.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_unescape_colons_and_backslashes() {
        assert_eq!(
            fields(r"*:5432:app:me:pa\:ss\\word").unwrap(),
            ["*", "5432", "app", "me", r"pa:ss\word"].map(String::from)
        );
        assert_eq!(
            fields(r"/run/pg:5432:*:me:secret:extra").unwrap()[4],
            "secret"
        );
        assert!(fields("host:5432:db:user").is_none());
    }

    #[test]
    fn lookup_follows_libpq() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(
            &file,
            "# comment\nlocalhost:5432:*:me:default-socket\n/srv/sock:*:app:*:own-path\n*:*:*:me:any\n",
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let look = |sock: &str, db: &str, user: &str| {
            lookup_in(file.clone(), Path::new(sock), 5432, db, user)
        };
        let found = |s: &str| Lookup::Found(s.into());
        assert_eq!(
            look("/var/run/postgresql", "x", "me"),
            found("default-socket")
        );
        assert_eq!(look("/srv/sock", "app", "you"), found("own-path"));
        // `localhost` is not a private socket directory.
        assert_eq!(look("/srv/other", "x", "me"), found("any"));
        assert_eq!(
            look("/srv/other", "x", "you"),
            Lookup::NoMatch(file.clone())
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            look("/srv/sock", "app", "you"),
            Lookup::Ignored(..)
        ));
    }
}
