//! Sessions with a server over its Unix socket, as the cluster owner: where and as whom to
//! connect (trying roles in turn until a superuser connects), the password file, and why a
//! connection failed in words a person can act on.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio_postgres::{Client, NoTls};

use crate::error::{Error, Result};
use crate::inspect::pgerr::pg_error;
use crate::inspect::pgpass;

/// Where and as whom to connect.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub(crate) struct Target {
    #[arg(long)]
    pub(crate) socket_dir: PathBuf,
    #[arg(long)]
    pub(crate) port: u16,
    /// Role names to try, in order, until one connects.
    #[arg(long = "user", required = true)]
    pub(crate) users: Vec<String>,
}

impl Target {
    pub(crate) fn new(socket_dir: &Path, port: u16, users: Vec<String>) -> Target {
        let mut seen = Vec::new();
        for u in users {
            if !seen.contains(&u) {
                seen.push(u);
            }
        }
        Target {
            socket_dir: socket_dir.to_path_buf(),
            port,
            users: seen,
        }
    }

    pub(crate) fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--socket-dir".to_string(),
            self.socket_dir.display().to_string(),
            "--port".into(),
            self.port.to_string(),
        ];
        for u in &self.users {
            a.push("--user".into());
            a.push(u.clone());
        }
        a
    }
}

/// Connection tasks, awaited before `__db` exits so each session ends with a proper
/// Terminate message instead of a reset that the server would log as an error.
pub(crate) static CONNECTIONS: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>> =
    std::sync::Mutex::new(Vec::new());

/// The server options of every session pgleap opens (libpq's `options`).
pub(crate) const OWN_SESSION_OPTIONS: &str = "-c synchronous_commit=local";

pub(crate) async fn connect(
    target: &Target,
    user: &str,
    dbname: &str,
) -> Result<Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(&target.socket_dir)
        .port(target.port)
        .user(user)
        .dbname(dbname)
        .application_name("pgleap")
        // pgleap's own commits never wait for a synchronous standby: until the standbys are
        // rebuilt for the new cluster, none can confirm them.
        .options(OWN_SESSION_OPTIONS);
    if let Ok(pw) = std::env::var("PGPASSWORD") {
        config.password(pw);
    } else if let pgpass::Lookup::Found(pw) =
        pgpass::lookup(&target.socket_dir, target.port, dbname, user)
    {
        config.password(pw);
    }
    let (client, connection) = config.connect(NoTls).await?;
    let handle = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("connection closed: {e}");
        }
    });
    CONNECTIONS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(handle);
    Ok(client)
}

/// Connects with the first role that works and is a superuser (pgleap reads pg_authid, and
/// pg_upgrade needs the bootstrap superuser); the error of the last one otherwise. Without a
/// `postgres` database (it may be dropped) it connects to template1, as PostgreSQL's own
/// tools do.
pub(crate) async fn connect_any(target: &Target, dbname: &str) -> Result<(Client, String)> {
    let mut last = None;
    let mut not_super = Vec::new();
    for user in &target.users {
        match connect_db_or_template1(target, user, dbname).await {
            Ok(c) => match superusers_unless_super(&c).await {
                Ok(None) => return Ok((c, user.clone())),
                Ok(Some(supers)) => not_super.push((user.clone(), supers)),
                Err(e) => last = Some(pg_error("reading pg_roles", &e)),
            },
            Err(e) => last = Some(connect_error(target, user, dbname, &e)),
        }
    }
    if let Some((user, supers)) = not_super.first() {
        return Err(not_superuser(user, supers));
    }
    Err(last.unwrap_or(Error::NoRole))
}

/// Why a connection failed, in the server's words, or, when the server wants a password
/// and none was found, which authentication method asked and where pgleap looked.
fn connect_error(target: &Target, user: &str, dbname: &str, e: &tokio_postgres::Error) -> Error {
    let what = format!(
        "cannot connect as {user} to {}",
        target.socket_dir.display()
    );
    let cause = std::error::Error::source(e).map(ToString::to_string);
    if e.as_db_error().is_some() || !cause.is_some_and(|c| c.contains("password missing")) {
        return pg_error(&what, e);
    }
    let method = auth_method(target, user, dbname).unwrap_or_else(|| "password".into());
    let file = match pgpass::lookup(&target.socket_dir, target.port, dbname, user) {
        pgpass::Lookup::NoFile => format!(
            "there is no password file ({})",
            pgpass::path().map_or_else(|| "~/.pgpass".into(), |p| p.display().to_string())
        ),
        pgpass::Lookup::NoMatch(f) => format!(
            "no line of {} matches (host {} or localhost, port {}, database {dbname}, user {user})",
            f.display(),
            target.socket_dir.display(),
            target.port
        ),
        pgpass::Lookup::Ignored(f, why) => format!("{} was ignored: {why}", f.display()),
        pgpass::Lookup::Found(_) => "the password file's password was not accepted".into(),
    };
    Error::Database {
        what,
        detail: format!(
            "the server asks {user} for a password ({method} authentication), and none was found: PGPASSWORD is unset and {file}"
        ),
    }
}

/// The authentication method the server asks `user` for, learned from its first answer
/// to a startup message (the client gives up right after): `None` when it cannot tell.
fn auth_method(target: &Target, user: &str, dbname: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let sock = target.socket_dir.join(format!(".s.PGSQL.{}", target.port));
    let mut stream = std::os::unix::net::UnixStream::connect(sock).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    // Protocol 3.0 startup message: length, version, then name/value pairs and a final NUL.
    let mut body = 196_608_u32.to_be_bytes().to_vec();
    for s in ["user", user, "database", dbname] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    body.push(0);
    let len = u32::try_from(body.len() + 4).ok()?;
    let mut msg = len.to_be_bytes().to_vec();
    msg.extend(body);
    stream.write_all(&msg).ok()?;
    let mut head = [0_u8; 9];
    stream.read_exact(&mut head).ok()?;
    if head[0] != b'R' {
        return None;
    }
    let code = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
    let method = match code {
        3 => "password",
        5 => "md5",
        // SASL: the only mechanism PostgreSQL offers over a Unix socket.
        10 => "scram-sha-256",
        7 => "gss",
        9 => "sspi",
        _ => return None,
    };
    Some(method.into())
}

/// [`connect`], falling back to template1 when `dbname` is `postgres` and does not exist.
async fn connect_db_or_template1(
    target: &Target,
    user: &str,
    dbname: &str,
) -> Result<Client, tokio_postgres::Error> {
    match connect(target, user, dbname).await {
        Err(e)
            if dbname == "postgres"
                && e.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME) =>
        {
            connect(target, user, "template1").await
        }
        other => other,
    }
}

/// `None` when the session's role is a superuser; the superusers' names otherwise, the
/// bootstrap superuser (oid 10) first. pg_roles is readable by every role.
async fn superusers_unless_super(
    client: &Client,
) -> Result<Option<Vec<String>>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT rolname::text, rolname = current_user FROM pg_catalog.pg_roles \
             WHERE rolsuper ORDER BY oid <> 10, rolname",
            &[],
        )
        .await?;
    if rows.iter().any(|r| r.get::<_, bool>(1)) {
        return Ok(None);
    }
    Ok(Some(rows.iter().map(|r| r.get(0)).collect()))
}

fn not_superuser(user: &str, superusers: &[String]) -> Error {
    let detail = match superusers.first() {
        Some(first) => {
            format!("the bootstrap superuser is {first}. Pass --username {first}")
        }
        None => "and no superuser can log in. Pass --username with a superuser's name".into(),
    };
    Error::Database {
        what: format!("connected as {user}, which is not a superuser"),
        detail,
    }
}
