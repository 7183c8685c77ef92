//! Where a store is, and connecting to PostgreSQL.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Where a `--db` value points.
#[derive(Debug, Clone)]
pub enum Location {
    File(PathBuf),
    Postgres(PgUrl),
}

#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error(
        "--db: `{scheme}://...` is a URL of a scheme cachewarden does not store to: give a file path or a `postgresql://` URL"
    )]
    Scheme { scheme: String },
    #[error("--db: the PostgreSQL URL cannot be read: {0}")]
    Url(String),
}

/// A PostgreSQL connection string.
#[derive(Clone)]
pub struct PgUrl {
    config: postgres::Config,
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl PgUrl {
    /// The URL without its password: for messages.
    pub fn redacted(&self) -> String {
        let user = self.config.get_user().unwrap_or("");
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .map(|host| match host {
                postgres::config::Host::Tcp(name) => name.clone(),
                postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let dbname = self.config.get_dbname().unwrap_or("");
        format!("postgresql://{user}@{}:{port}/{dbname}", hosts.join(","))
    }
}

/// The scheme of a value that reads as a URL: letters, digits, `+`, `-` or `.` after a letter,
/// then `://`.
fn url_scheme(text: &str) -> Option<&str> {
    let (scheme, _) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

/// Classifies a `--db` value: a PostgreSQL URL, another URL (refused, naming only its scheme:
/// the URL may hold a password), or a file path.
pub fn classify(value: &str) -> Result<Location, LocationError> {
    match url_scheme(value) {
        Some("postgresql" | "postgres") => {
            let config = postgres::Config::from_str(value)
                .map_err(|err| LocationError::Url(err.to_string()))?;
            Ok(Location::Postgres(PgUrl { config }))
        }
        Some(scheme) => Err(LocationError::Scheme {
            scheme: scheme.to_owned(),
        }),
        None => Ok(Location::File(PathBuf::from(value))),
    }
}

/// How long a connection and its statements may take.
#[derive(Debug, Clone)]
pub struct Timeouts {
    pub connect: Duration,
    pub statement: Duration,
}

impl Timeouts {
    pub fn from_env() -> Self {
        Self {
            connect: Duration::from_secs(5),
            statement: Duration::from_secs(60),
        }
    }

    /// What each transaction sets for itself (`SET LOCAL`: no session state).
    pub fn per_transaction(&self) -> String {
        format!(
            "SET LOCAL statement_timeout = {}",
            self.statement.as_millis()
        )
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot connect: {0}")]
pub struct ConnectError(String);

pub fn connect(url: &PgUrl, timeouts: &Timeouts) -> Result<postgres::Client, ConnectError> {
    let mut config = url.config.clone();
    config.connect_timeout(timeouts.connect);
    super::super::db::blocking(|| config.connect(postgres::NoTls))
        .map_err(|err| ConnectError(super::super::db::DbError::from(err).to_string()))
}
