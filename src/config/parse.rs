//! Reading and rewriting configuration lines the way the server reads them: `name = value`
//! with quotes and trailing comments, paths replaced only as whole paths, majors only as
//! whole numbers, and the setting a server's complaint names. Pure text functions.

/// One `name = value` line of a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Setting {
    pub(crate) name: String,
    pub(crate) value: String,
}

/// Parses a configuration line; `None` for blanks, comments and malformed lines.
pub(crate) fn parse_line(line: &str) -> Option<Setting> {
    let t = line.trim_start();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    let end = t.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))?;
    let (name, rest) = t.split_at(end);
    if name.is_empty() {
        return None;
    }
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    Some(Setting {
        name: name.to_ascii_lowercase(),
        value: unquote(strip_comment(rest)),
    })
}

/// Drops a trailing `# comment` that is not inside quotes.
fn strip_comment(s: &str) -> &str {
    let mut in_quote = false;
    for (i, c) in s.char_indices() {
        match c {
            '\'' => in_quote = !in_quote,
            '#' if !in_quote => return s[..i].trim_end(),
            _ => {}
        }
    }
    s.trim_end()
}

fn unquote(s: &str) -> String {
    match s.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        Some(inner) => inner.replace("''", "'").replace("\\'", "'"),
        None => s.to_string(),
    }
}

/// Replaces `old` with `new` where it appears as a whole path (followed by `/`, a quote,
/// whitespace or the end), so `/data/15` does not touch `/data/150`.
pub(crate) fn rewrite_path(line: &str, old: &str, new: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find(old) {
        let after = &rest[i + old.len()..];
        let boundary = after
            .chars()
            .next()
            .is_none_or(|c| matches!(c, '/' | '\'' | '"' | ' ' | '\t' | '#' | ','));
        out.push_str(&rest[..i]);
        out.push_str(if boundary { new } else { old });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Replaces `old` with `new` where it appears as a whole number (not inside `150` or `v15a`):
/// `/var/run/postgresql/15-main.pid` → `/var/run/postgresql/17-main.pid`, `15/main` → `17/main`.
pub(crate) fn rewrite_version_word(line: &str, old: u32, new: u32) -> String {
    let (old, new) = (old.to_string(), new.to_string());
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    let mut prev: Option<char> = None;
    while let Some(i) = rest.find(&old) {
        let before = rest[..i].chars().last().or(prev);
        let after = rest[i + old.len()..].chars().next();
        let word = !before.is_some_and(|c| c.is_ascii_alphanumeric())
            && !after.is_some_and(|c| c.is_ascii_alphanumeric());
        out.push_str(&rest[..i]);
        out.push_str(if word { &new } else { &old });
        prev = old.chars().last();
        rest = &rest[i + old.len()..];
    }
    out.push_str(rest);
    out
}

/// The directives that name other files rather than set anything.
pub(crate) fn is_directive(name: &str) -> bool {
    matches!(name, "include" | "include_if_exists" | "include_dir")
}

/// The parameter named by the server's complaint about a configuration file.
pub(crate) fn rejected_setting(stderr: &str) -> Option<String> {
    for line in stderr.lines() {
        for marker in [
            "invalid value for parameter \"",
            "unrecognized configuration parameter \"",
            "parameter \"",
        ] {
            if let Some(rest) = line.split(marker).nth(1) {
                if let Some(name) = rest.split('"').next() {
                    return Some(name.to_ascii_lowercase());
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_settings_like_the_server() {
        assert_eq!(
            parse_line("shared_buffers = 128MB  # comment"),
            Some(Setting {
                name: "shared_buffers".into(),
                value: "128MB".into()
            })
        );
        assert_eq!(
            parse_line("  Port 5433"),
            Some(Setting {
                name: "port".into(),
                value: "5433".into()
            })
        );
        assert_eq!(
            parse_line("log_line_prefix = '%m # [%p] '"),
            Some(Setting {
                name: "log_line_prefix".into(),
                value: "%m # [%p] ".into()
            })
        );
        assert_eq!(
            parse_line("include_dir 'conf.d'"),
            Some(Setting {
                name: "include_dir".into(),
                value: "conf.d".into()
            })
        );
        assert_eq!(
            parse_line("pg_stat_statements.max=500"),
            Some(Setting {
                name: "pg_stat_statements.max".into(),
                value: "500".into()
            })
        );
        assert_eq!(parse_line("#port = 5432"), None);
        assert_eq!(parse_line("   "), None);
    }

    #[test]
    fn rewrites_only_whole_paths() {
        assert_eq!(
            rewrite_path("data_directory = '/data/15'", "/data/15", "/data/17"),
            "data_directory = '/data/17'"
        );
        assert_eq!(
            rewrite_path("include '/data/15/extra.conf'", "/data/15", "/data/17"),
            "include '/data/17/extra.conf'"
        );
        assert_eq!(
            rewrite_path(
                "archive_command = 'cp %p /data/150/%f'",
                "/data/15",
                "/data/17"
            ),
            "archive_command = 'cp %p /data/150/%f'"
        );
    }

    #[test]
    fn finds_the_rejected_setting_in_server_messages() {
        let unknown = "LOG:  unrecognized configuration parameter \"vacuum_defer_cleanup_age\" in file \"/d/postgresql.conf\" line 3\nFATAL:  configuration file \"/d/postgresql.conf\" contains errors";
        assert_eq!(
            rejected_setting(unknown).as_deref(),
            Some("vacuum_defer_cleanup_age")
        );
        let bad = "LOG:  invalid value for parameter \"wal_level\": \"archive\"\nHINT:  Available values: minimal, replica, logical.";
        assert_eq!(rejected_setting(bad).as_deref(), Some("wal_level"));
        assert_eq!(rejected_setting("FATAL:  could not access directory"), None);
    }

    #[test]
    fn version_words_are_whole_numbers() {
        assert_eq!(
            rewrite_version_word(
                "external_pid_file = '/var/run/postgresql/15-main.pid'",
                15,
                17
            ),
            "external_pid_file = '/var/run/postgresql/17-main.pid'"
        );
        assert_eq!(
            rewrite_version_word(
                "cluster_name = '15/main'\t# added to process titles",
                15,
                17
            ),
            "cluster_name = '17/main'\t# added to process titles"
        );
        // Not inside other numbers or names.
        assert_eq!(
            rewrite_version_word("cluster_name = 'v15a-150-215-15'", 15, 17),
            "cluster_name = 'v15a-150-215-17'"
        );
        assert_eq!(rewrite_version_word("x = '1515'", 15, 17), "x = '1515'");
    }
}
