//! A server's error, worded for the user.

use crate::error::Error;

/// What failed and the server's own words (or, for a client-side failure, its cause).
pub(crate) fn pg_error(what: &str, e: &tokio_postgres::Error) -> Error {
    // tokio-postgres puts the detail of a client-side error ("password missing") in its source.
    let detail = e.as_db_error().map_or_else(
        || match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
        |d| d.message().to_string(),
    );
    Error::Database {
        what: what.to_string(),
        detail,
    }
}
