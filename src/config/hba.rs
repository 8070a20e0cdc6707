//! The fenced `pg_hba.conf` a 17+ old cluster with logical slots to carry runs under while
//! its consumers catch up, right before it stops: replication connections and the roles
//! pgleap and the connected logical consumers use are admitted, every other client is
//! rejected. Pure text work; writing the file (as the owner) and putting the original back
//! is `steps::fence`.

use serde::{Deserialize, Serialize};

/// A fence in place, as journaled before the fenced file is written: enough to put the
/// original back, byte for byte and with its mode, after a crash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct HbaFence {
    /// The server's `hba_file`.
    pub(crate) path: std::path::PathBuf,
    /// The file's permission bits.
    pub(crate) mode: u32,
    pub(crate) original: String,
    pub(crate) fenced: String,
}

/// The first line of a fenced file.
pub(crate) const HEADER: &str = "# pgleap: fenced while the old server stops for an upgrade; the original file comes back right after the stop";

/// One logical line's tokens, each with its quotes as written.
fn tokens(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            '#' if !quoted => break,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The comma-separated names of a database or user field (quotes kept).
fn names(field: &str) -> Vec<&str> {
    field.split(',').filter(|n| !n.is_empty()).collect()
}

/// Whether a user field names `role` (or `all`).
fn names_role(field: &str, role: &str) -> bool {
    names(field).iter().any(|n| {
        *n == "all"
            || *n == role
            || n.strip_prefix('"').and_then(|n| n.strip_suffix('"')) == Some(role)
    })
}

fn quote(role: &str) -> String {
    format!("\"{}\"", role.replace('"', "\"\""))
}

/// The logical lines of a file: comments and blank lines dropped, backslash continuations
/// joined.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim_end();
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let whole = std::mem::take(&mut pending);
        if !tokens(&whole).is_empty() {
            out.push(whole);
        }
    }
    out
}

/// The fenced file for `original`: its physical replication lines as they are; its `local`
/// lines that admit one of `pgleap_roles`, narrowed to that role; its lines of any kind that
/// admit one of `consumer_roles` (the roles of connected logical consumers, whose
/// connections name a database, not `replication`), narrowed to that role; then a rejection
/// of everyone else. Include directives are not followed.
pub(crate) fn fenced(original: &str, pgleap_roles: &[String], consumer_roles: &[String]) -> String {
    let mut out = vec![
        HEADER.to_string(),
        "# Admitted: replication connections, pgleap's own local connections and the connected logical replication consumers' roles.".to_string(),
    ];
    for line in logical_lines(original) {
        let t = tokens(&line);
        let kind = t[0].as_str();
        if kind.starts_with("include") || t.len() < 4 {
            continue;
        }
        if names(&t[1]).contains(&"replication") {
            out.push(line.trim().to_string());
            continue;
        }
        let mut roles: Vec<&String> = Vec::new();
        if kind == "local" {
            roles.extend(pgleap_roles.iter().filter(|r| names_role(&t[2], r)));
        }
        for r in consumer_roles.iter().filter(|r| names_role(&t[2], r)) {
            if !roles.contains(&r) {
                roles.push(r);
            }
        }
        if roles.is_empty() {
            continue;
        }
        let mut narrowed = t.clone();
        narrowed[2] = roles.iter().map(|r| quote(r)).collect::<Vec<_>>().join(",");
        out.push(narrowed.join(" "));
    }
    out.extend([
        "local all all reject".to_string(),
        "host all all all reject".to_string(),
    ]);
    out.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_replication_pgleap_and_consumers_only() {
        let original = "\
# TYPE  DATABASE        USER            ADDRESS                 METHOD
local   all             all                                     peer # comment
local   replication     all                                     peer
host    app,\"my db\"   app,\"Rep Role\"  10.0.0.0/8              scram-sha-256
host    all             admin           10.0.0.0/8 \\
        scram-sha-256
hostssl replication     rep             10.0.0.5/32             scram-sha-256
include_if_exists extra.conf
";
        let roles = ["postgres".to_string()];
        let got = fenced(original, &roles, &["Rep Role".to_string()]);
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(lines[0], HEADER);
        assert_eq!(
            &lines[2..],
            [
                "local all \"postgres\",\"Rep Role\" peer",
                "local   replication     all                                     peer",
                "host app,\"my db\" \"Rep Role\" 10.0.0.0/8 scram-sha-256",
                "hostssl replication     rep             10.0.0.5/32             scram-sha-256",
                "local all all reject",
                "host all all all reject",
            ]
        );
    }

    #[test]
    fn a_file_admitting_nobody_still_rejects_everyone() {
        let got = fenced("host all app 0.0.0.0/0 md5\n", &["postgres".into()], &[]);
        assert!(
            got.ends_with("local all all reject\nhost all all all reject\n"),
            "{got}"
        );
        assert!(!got.contains("app"), "{got}");
    }
}
