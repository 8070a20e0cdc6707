//! The fenced `pg_hba.conf` a 17+ old cluster with logical slots to carry runs under while
//! its consumers catch up, right before it stops: replication connections and the roles
//! pgleap and the connected logical consumers use are admitted, every other client is
//! rejected.
//!
//! It is built from the rules the server itself reads (`pg_hba_file_rules`, in order, with
//! `include`, `include_if_exists` and `include_dir` followed and `@file` lists expanded by
//! the server), each taken from the line the server names, so that the fenced file is
//! self-contained and admits nothing the original did not. Which roles a user field admits
//! (`+group`, `/regex`) is the server's answer too (`inspect::fence`). Pure text work here;
//! writing the file (as the owner) and putting the original back is `steps::fence`.

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

/// One rule the server reads, in its order: its fields as written on its line (a field with
/// an `@file` list is written from the server's expansion instead, so that no relative path
/// is left to resolve), and the roles, of those pgleap asked about, its user field admits.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Rule {
    /// `file:line`, as the server reports it.
    pub(crate) at: String,
    pub(crate) kind: String,
    /// The database field's tokens, quotes kept.
    pub(crate) databases: Vec<String>,
    /// The user field's tokens, quotes kept.
    pub(crate) users: Vec<String>,
    /// The fields after the user field (address, method, options), as written.
    pub(crate) rest: Vec<String>,
    /// The roles asked about whose connections this rule's user field matches.
    pub(crate) admits: Vec<String>,
}

/// One token as PostgreSQL's tokenizer reads it: `text` without its quotes, `raw` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) text: String,
    pub(crate) quoted: bool,
    pub(crate) raw: String,
}

fn blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// The next token at `chars`: `None` at the end of the line or a comment; the flag says
/// whether a comma ended it (the field goes on). Like the server: `"` toggles quoting, `""`
/// inside quotes is a literal quote, `#` outside quotes ends the line.
fn next_token(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<(Token, bool)> {
    while chars.peek().copied().is_some_and(blank) {
        chars.next();
    }
    if matches!(chars.peek(), None | Some('#')) {
        return None;
    }
    let mut tok = Token::default();
    let (mut in_quote, mut was_quote) = (false, false);
    while let Some(&c) = chars.peek() {
        if !in_quote && (blank(c) || c == '#') {
            return Some((tok, false));
        }
        chars.next();
        if !in_quote && c == ',' {
            return Some((tok, true));
        }
        tok.raw.push(c);
        if c != '"' || was_quote {
            tok.text.push(c);
        }
        was_quote = in_quote && c == '"' && !was_quote;
        if c == '"' {
            in_quote = !in_quote;
            tok.quoted = true;
        }
    }
    Some((tok, false))
}

/// The fields of one logical line: blanks separate fields, commas the tokens of one field
/// (blanks may follow a comma).
pub(crate) fn fields(line: &str) -> Vec<Vec<Token>> {
    let mut chars = line.chars().peekable();
    let mut out = Vec::new();
    let mut field = Vec::new();
    while let Some((tok, comma)) = next_token(&mut chars) {
        field.push(tok);
        if !comma {
            out.push(std::mem::take(&mut field));
        }
    }
    if !field.is_empty() {
        out.push(field);
    }
    out
}

/// The logical line that starts at `line` (1-based, as the server numbers them) of `text`:
/// backslash continuations joined the server's way (the backslash removed, nothing added).
pub(crate) fn logical_line_at(text: &str, line: usize) -> Option<String> {
    let mut lines = text.split('\n').skip(line.checked_sub(1)?);
    let mut out = String::new();
    loop {
        let l = lines.next()?;
        let l = l.strip_suffix('\r').unwrap_or(l);
        if let Some(head) = l.strip_suffix('\\') {
            out.push_str(head);
        } else {
            out.push_str(l);
            return Some(out);
        }
    }
}

/// A name as a quoted token (`""` for a quote inside).
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A token the server expanded (`@file`), written as its entries: keywords, regular
/// expressions and, in a user field, `+group` unquoted, names quoted.
fn expanded(entries: &[String], specials: &[&str], user: bool) -> Vec<String> {
    entries
        .iter()
        .map(|e| {
            let special = specials.contains(&e.as_str())
                || e.starts_with('/')
                || (user && e.starts_with('+'));
            if special { e.clone() } else { quote(e) }
        })
        .collect()
}

/// The rule the server reads at `at` from `line`, with `databases` and `users` the server's
/// entries for the two fields (used only where the line has an `@file` list). `None` when
/// the line does not have the fields of a rule.
pub(crate) fn rule(at: String, line: &str, databases: &[String], users: &[String]) -> Option<Rule> {
    let f = fields(line);
    if f.len() < 4 || f[0].len() != 1 {
        return None;
    }
    let raw = |field: &[Token]| -> Vec<String> { field.iter().map(|t| t.raw.clone()).collect() };
    let includes = |field: &[Token]| field.iter().any(|t| !t.quoted && t.raw.starts_with('@'));
    let databases = if includes(&f[1]) {
        expanded(
            databases,
            &["all", "sameuser", "samerole", "samegroup", "replication"],
            false,
        )
    } else {
        raw(&f[1])
    };
    let users = if includes(&f[2]) {
        expanded(users, &["all"], true)
    } else {
        raw(&f[2])
    };
    Some(Rule {
        at,
        kind: f[0][0].text.clone(),
        databases,
        users,
        rest: f[3..].iter().map(|field| raw(field).join(",")).collect(),
        admits: Vec::new(),
    })
}

/// The files a `pg_hba.conf` or `pg_ident.conf` line names, as settings of the same names
/// (16+: `include`, `include_if_exists`, `include_dir`; an `@file` list as an `include`),
/// each relative to the directory of the file that names it.
pub(crate) fn references(line: &str) -> Vec<crate::config::parse::Setting> {
    let setting = |name: &str, value: &str| crate::config::parse::Setting {
        name: name.to_string(),
        value: value.to_string(),
    };
    let f = fields(line);
    let Some(first) = f.first().and_then(|t| t.first()) else {
        return Vec::new();
    };
    let named = f.get(1).and_then(|t| t.first()).map(|t| t.text.as_str());
    match (first.quoted, first.text.as_str(), named) {
        (false, name @ ("include" | "include_if_exists" | "include_dir"), Some(path)) => {
            vec![setting(name, path)]
        }
        _ => f
            .iter()
            .skip(1)
            .take(2)
            .flatten()
            .filter(|t| !t.quoted)
            .filter_map(|t| t.text.strip_prefix('@'))
            .map(|path| setting("include", path))
            .collect(),
    }
}

/// How a user token matches a role, for the server to decide.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum UserMatch {
    All,
    /// `+group`: the role is the group or a member of it, directly or not.
    MemberOf(String),
    /// `/regex`: the role's name matches the regular expression.
    Regex(String),
    Name(String),
}

/// What a user token (quotes kept) asks of a role.
pub(crate) fn user_match(raw: &str) -> UserMatch {
    let tok = fields(raw).into_iter().flatten().next().unwrap_or_default();
    if tok.quoted {
        return UserMatch::Name(tok.text);
    }
    if tok.text == "all" {
        UserMatch::All
    } else if let Some(group) = tok.text.strip_prefix('+') {
        UserMatch::MemberOf(group.to_string())
    } else if let Some(re) = tok.text.strip_prefix('/') {
        UserMatch::Regex(re.to_string())
    } else {
        UserMatch::Name(tok.text)
    }
}

/// The fenced file for the server's `rules`: the physical replication rules as they are
/// (narrowed to their `replication` entry); `local` rules that admit one of `pgleap_roles`,
/// with the user field replaced by those roles; rules of any kind that admit one of
/// `consumer_roles` (the roles of connected logical consumers, whose connections name a
/// database, not `replication`), likewise; then a rejection of everyone else.
pub(crate) fn fenced(rules: &[Rule], pgleap_roles: &[String], consumer_roles: &[String]) -> String {
    let mut out = vec![
        HEADER.to_string(),
        "# Admitted: replication connections, pgleap's own local connections and the connected logical replication consumers' roles.".to_string(),
    ];
    let line = |kind: &str, db: String, user: String, rest: &[String]| {
        let mut l = vec![kind.to_string(), db, user];
        l.extend(rest.iter().cloned());
        l.join(" ")
    };
    for r in rules {
        if r.databases.iter().any(|d| d == "replication") {
            out.push(line(
                &r.kind,
                "replication".into(),
                r.users.join(","),
                &r.rest,
            ));
        }
        let dbs: Vec<&str> = r
            .databases
            .iter()
            .map(String::as_str)
            .filter(|d| *d != "replication")
            .collect();
        let admitted: Vec<String> = r
            .admits
            .iter()
            .filter(|a| {
                (r.kind == "local" && pgleap_roles.contains(a)) || consumer_roles.contains(a)
            })
            .map(|a| quote(a))
            .collect();
        if dbs.is_empty() || admitted.is_empty() {
            continue;
        }
        out.push(line(&r.kind, dbs.join(","), admitted.join(","), &r.rest));
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

    fn texts(line: &str) -> Vec<Vec<String>> {
        fields(line)
            .into_iter()
            .map(|f| f.into_iter().map(|t| t.text).collect())
            .collect()
    }

    #[test]
    fn tokenizes_like_the_server() {
        assert_eq!(
            texts("host  app, \"my db\"\t\"a\"\"b\",+g 10.0.0.0/8 md5 # note"),
            [
                vec!["host"],
                vec!["app", "my db"],
                vec!["a\"b", "+g"],
                vec!["10.0.0.0/8"],
                vec!["md5"],
            ]
        );
        assert_eq!(
            texts("local all all trust#x"),
            [["local"], ["all"], ["all"], ["trust"]]
        );
        assert_eq!(fields("\"#\" x")[0][0].text, "#");
        assert!(fields("   # only a comment").is_empty());
    }

    #[test]
    fn reads_the_logical_line_the_server_numbers() {
        let text = "# c\nhost all admin 10.0.0.0/8 \\\r\n  scram-sha-256\nlocal all all peer\n";
        assert_eq!(
            logical_line_at(text, 2).as_deref(),
            Some("host all admin 10.0.0.0/8   scram-sha-256")
        );
        assert_eq!(
            logical_line_at(text, 4).as_deref(),
            Some("local all all peer")
        );
        assert_eq!(logical_line_at(text, 9), None);
        assert_eq!(logical_line_at(text, 0), None);
    }

    #[test]
    fn an_included_list_is_written_from_the_servers_entries() {
        let r = rule(
            "/etc/hba.d/a.conf:3".into(),
            "host @dbs.txt,other @users \"10.0.0.0/8\" md5 map=x",
            &["all".into(), "my db".into(), "other".into()],
            &["app".into(), "+grp".into(), "/^r".into()],
        )
        .unwrap();
        assert_eq!(r.kind, "host");
        assert_eq!(r.databases, ["all", "\"my db\"", "\"other\""]);
        assert_eq!(r.users, ["\"app\"", "+grp", "/^r"]);
        assert_eq!(r.rest, ["\"10.0.0.0/8\"", "md5", "map=x"]);
        let plain = rule("f:1".into(), "local \"all\" a,\"B\" peer", &[], &[]).unwrap();
        assert_eq!(plain.databases, ["\"all\""]);
        assert_eq!(plain.users, ["a", "\"B\""]);
        assert_eq!(rule("f:1".into(), "local all peer", &[], &[]), None);
    }

    #[test]
    fn names_the_files_a_line_includes_or_lists() {
        let refs = |l: &str| -> Vec<(String, String)> {
            references(l)
                .into_iter()
                .map(|s| (s.name, s.value))
                .collect()
        };
        assert_eq!(
            refs("include_dir 'x'"),
            [("include_dir".into(), "'x'".into())]
        );
        assert_eq!(
            refs("include \"my hba.conf\""),
            [("include".into(), "my hba.conf".into())]
        );
        assert_eq!(
            refs("local @dbs @../users.txt,\"@lit\" peer"),
            [
                ("include".into(), "dbs".into()),
                ("include".into(), "../users.txt".into())
            ]
        );
        assert!(refs("local all all peer # @x").is_empty());
        assert!(refs("map  os_user  pg_user").is_empty());
    }

    #[test]
    fn user_tokens_say_what_they_match() {
        assert_eq!(user_match("all"), UserMatch::All);
        assert_eq!(user_match("\"all\""), UserMatch::Name("all".into()));
        assert_eq!(user_match("+grp"), UserMatch::MemberOf("grp".into()));
        assert_eq!(user_match("\"+grp\""), UserMatch::Name("+grp".into()));
        assert_eq!(user_match("/^rep_.*$"), UserMatch::Regex("^rep_.*$".into()));
        assert_eq!(
            user_match("\"Rep Role\""),
            UserMatch::Name("Rep Role".into())
        );
    }

    fn r(kind: &str, dbs: &[&str], users: &[&str], rest: &[&str], admits: &[&str]) -> Rule {
        let v = |s: &[&str]| s.iter().map(|x| (*x).to_string()).collect();
        Rule {
            at: "f:1".into(),
            kind: kind.into(),
            databases: v(dbs),
            users: v(users),
            rest: v(rest),
            admits: v(admits),
        }
    }

    #[test]
    fn admits_replication_pgleap_and_consumers_only() {
        let rules = [
            r(
                "local",
                &["all"],
                &["all"],
                &["peer"],
                &["postgres", "Rep Role"],
            ),
            r(
                "local",
                &["replication"],
                &["all"],
                &["peer"],
                &["postgres"],
            ),
            r(
                "host",
                &["app", "\"my db\""],
                &["+subs"],
                &["10.0.0.0/8", "scram-sha-256"],
                &["Rep Role"],
            ),
            r(
                "host",
                &["all"],
                &["admin"],
                &["10.0.0.0/8", "scram-sha-256"],
                &[],
            ),
            r(
                "hostssl",
                &["replication", "app"],
                &["rep", "/^x"],
                &["10.0.0.5/32", "cert"],
                &[],
            ),
            r(
                "host",
                &["all"],
                &["all"],
                &["10.0.0.0/8", "md5"],
                &["postgres"],
            ),
        ];
        let got = fenced(&rules, &["postgres".to_string()], &["Rep Role".to_string()]);
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(lines[0], HEADER);
        assert_eq!(
            &lines[2..],
            [
                "local all \"postgres\",\"Rep Role\" peer",
                "local replication all peer",
                "host app,\"my db\" \"Rep Role\" 10.0.0.0/8 scram-sha-256",
                "hostssl replication rep,/^x 10.0.0.5/32 cert",
                "local all all reject",
                "host all all all reject",
            ]
        );
    }

    #[test]
    fn a_file_admitting_nobody_still_rejects_everyone() {
        let rules = [r("host", &["all"], &["app"], &["0.0.0.0/0", "md5"], &[])];
        let got = fenced(&rules, &["postgres".into()], &[]);
        assert!(
            got.ends_with("local all all reject\nhost all all all reject\n"),
            "{got}"
        );
        assert!(!got.contains("app"), "{got}");
    }
}
