//! Where a `--db` value points, and connecting to PostgreSQL as libpq would.
//!
//! `postgresql://` and `postgres://` URLs follow libpq's conventions: host, port, user,
//! dbname, `sslmode`, unix-socket hosts (`?host=/dir` or a percent-encoded host). What
//! tokio-postgres leaves to libpq is done here, in libpq's order: a component the URL omits
//! comes from `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT`, else
//! libpq's defaults (the socket directory, port 5432, the login name, a database named after
//! the user); a password the URL omits comes from `PGPASSWORD`, then the password file
//! (`passfile`, `PGPASSFILE`, `~/.pgpass`). `sslmode=allow` is taken as `prefer` (TLS
//! first). When several hosts are given, the password file is matched against the first.
//!
//! A URL may hold a password, so no message ever shows one: errors name the scheme, or the
//! [`PgUrl::redacted`] form.
//!
//! Timeouts. The connect timeout bounds the whole connection, the TLS and authentication
//! exchanges included (tokio-postgres's own bounds only the socket's `connect`): a server that
//! accepts and never answers is given up on after it. The statement timeout is set with
//! `SET LOCAL` at the start of each transaction ([`transaction`]) rather than per session or as
//! an `options` startup parameter: behind PgBouncer in transaction pooling mode a session
//! setting would leak to other clients' transactions, or be lost when the next transaction
//! lands on another server connection, and PgBouncer refuses an `options` startup parameter it
//! has not been told to ignore.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use postgres::Client;
use postgres::config::{Host, SslMode as WireSslMode};

use super::pgpass;
use super::tls::{self, RootCert};
use crate::config::StoreConfig;

/// libpq's default socket directory on Debian.
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";
/// The port when neither the URL nor `PGPORT` names one.
pub const DEFAULT_PORT: u16 = 5432;
/// How long a connection may take when the config sets nothing.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one statement may run when the config sets nothing.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the store is.
#[derive(Debug)]
pub enum Location {
    /// An SQLite file.
    File(PathBuf),
    /// A PostgreSQL database.
    Postgres(Box<PgUrl>),
}

#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error(
        "`{scheme}://...` is a URL, and cachewarden stores only to an SQLite file or to \
         PostgreSQL (`postgresql://...`): give a file path or a PostgreSQL URL"
    )]
    OtherScheme { scheme: String },
    #[error("`{scheme}://...` is not a valid PostgreSQL URL: {reason}")]
    InvalidUrl { scheme: String, reason: String },
    /// SQLite would read the value as a URI (`file:x.db?mode=memory` records into memory),
    /// not as the file it looks like.
    #[error(
        "`{value}` is an SQLite URI, which --db does not take: give a file path (`./{value}` \
         for a file whose name starts with `file:`)"
    )]
    FileUri { value: String },
}

/// Reads a `--db` value: a PostgreSQL URL, a URL of another scheme (refused, naming only the
/// scheme), an SQLite `file:` URI (refused), or a file path. Environment defaults come from the
/// process's environment.
pub fn classify(value: &str) -> Result<Location, LocationError> {
    classify_with(value, &|name| std::env::var(name).ok())
}

/// [`classify`] with the environment given as a lookup.
pub fn classify_with(value: &str, env: &Env<'_>) -> Result<Location, LocationError> {
    if value
        .get(..5)
        .is_some_and(|head| head.eq_ignore_ascii_case("file:"))
    {
        return Err(LocationError::FileUri {
            value: crate::report::escape::Term(value).to_string(),
        });
    }
    match url_scheme(value) {
        None => Ok(Location::File(PathBuf::from(value))),
        Some(scheme)
            if scheme.eq_ignore_ascii_case("postgresql")
                || scheme.eq_ignore_ascii_case("postgres") =>
        {
            PgUrl::parse_with(value, env).map(|url| Location::Postgres(Box::new(url)))
        }
        Some(scheme) => Err(LocationError::OtherScheme { scheme }),
    }
}

/// An environment variable lookup.
pub type Env<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// The scheme of a value that reads as a URL: letters, digits, `+`, `-` or `.` after a
/// letter, then `://`.
pub fn url_scheme(value: &str) -> Option<String> {
    let (scheme, _) = value.split_once("://")?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then(|| scheme.to_owned())
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    fn wire(self) -> WireSslMode {
        match self {
            Self::Disable => WireSslMode::Disable,
            Self::Allow | Self::Prefer => WireSslMode::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => WireSslMode::Require,
        }
    }
}

/// A PostgreSQL connection URL with libpq's defaults filled in and its password resolved.
#[derive(Clone)]
pub struct PgUrl {
    config: postgres::Config,
    scheme: String,
    ssl_mode: SslMode,
    root_cert: Option<RootCert>,
    warnings: Vec<String>,
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PgUrl").field(&self.redacted()).finish()
    }
}

/// Query parameters libpq knows and tokio-postgres does not, taken out before it parses.
#[derive(Default)]
struct LibpqParams {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    passfile: Option<String>,
}

impl PgUrl {
    /// Parses `value` with the process's environment.
    pub fn parse(value: &str) -> Result<Self, LocationError> {
        Self::parse_with(value, &|name| std::env::var(name).ok())
    }

    /// Parses `value`, filling in what it omits from `env` and libpq's defaults, and reads
    /// the password file when neither the URL nor `PGPASSWORD` gives a password.
    pub fn parse_with(value: &str, env: &Env<'_>) -> Result<Self, LocationError> {
        let scheme = url_scheme(value).unwrap_or_default();
        let invalid = |reason: String| LocationError::InvalidUrl {
            scheme: scheme.clone(),
            reason,
        };
        // tokio-postgres knows the scheme in lower case only.
        let rest = &value[scheme.len()..];
        let (base, query) = match rest.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (rest, None),
        };
        let mut libpq = LibpqParams::default();
        let mut kept = Vec::new();
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match key {
                "sslmode" => &mut libpq.sslmode,
                "sslrootcert" => &mut libpq.sslrootcert,
                "passfile" => &mut libpq.passfile,
                _ => {
                    kept.push(pair);
                    continue;
                }
            };
            *slot = Some(percent_decode(raw).ok_or_else(|| {
                invalid(format!(
                    "the value of `{key}` is not valid percent-encoded UTF-8"
                ))
            })?);
        }
        let env_ports = match env("PGPORT").filter(|p| !p.is_empty()) {
            Some(ports) => ports
                .split(',')
                .map(|port| {
                    port.trim()
                        .parse::<u16>()
                        .map_err(|_| invalid(format!("PGPORT `{port}` is not a port number")))
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let port_in_query = kept.iter().any(|pair| pair.starts_with("port="));
        let base = with_default_ports(base, &env_ports, port_in_query);
        let mut text = format!("{}{base}", scheme.to_ascii_lowercase());
        if !kept.is_empty() {
            text.push('?');
            text.push_str(&kept.join("&"));
        }
        let mut config: postgres::Config = text.parse().map_err(|err: postgres::Error| {
            invalid(
                err.to_string()
                    .trim_start_matches("invalid configuration: ")
                    .to_owned(),
            )
        })?;

        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            match env("PGHOST").filter(|h| !h.is_empty()) {
                Some(hosts) => {
                    for host in hosts.split(',') {
                        if host.starts_with('/') {
                            config.host_path(host);
                        } else {
                            config.host(host);
                        }
                    }
                }
                None => {
                    config.host_path(DEFAULT_SOCKET_DIR);
                }
            }
        }
        if config.get_ports().is_empty() {
            for port in &env_ports {
                config.port(*port);
            }
        }
        if config.get_user().is_none() {
            let user = env("PGUSER")
                .filter(|u| !u.is_empty())
                .or_else(|| whoami::username().ok())
                .ok_or_else(|| invalid("no user: the URL names none, nor does PGUSER".into()))?;
            config.user(&user);
        }
        if config.get_dbname().is_none() {
            let dbname = env("PGDATABASE")
                .filter(|d| !d.is_empty())
                .or_else(|| config.get_user().map(str::to_owned))
                .unwrap_or_default();
            config.dbname(&dbname);
        }
        let ssl_mode = match libpq
            .sslmode
            .or_else(|| env("PGSSLMODE").filter(|m| !m.is_empty()))
        {
            Some(mode) => SslMode::parse(&mode).ok_or_else(|| {
                invalid(format!(
                    "sslmode `{mode}` is none of disable, allow, prefer, require, verify-ca, \
                     verify-full"
                ))
            })?,
            None => SslMode::Prefer,
        };
        config.ssl_mode(ssl_mode.wire());
        let home = env("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
        let root_cert = match libpq
            .sslrootcert
            .or_else(|| env("PGSSLROOTCERT").filter(|r| !r.is_empty()))
        {
            Some(root) if root == "system" => Some(RootCert::System),
            Some(root) => Some(RootCert::File(PathBuf::from(root))),
            None => home
                .as_ref()
                .map(|home| home.join(".postgresql/root.crt"))
                .filter(|path| path.is_file())
                .map(RootCert::File),
        };
        if config.get_application_name().is_none() {
            config.application_name("cachewarden");
        }

        let mut warnings = Vec::new();
        // libpq takes an empty password as none given.
        if config.get_password().is_none_or(<[u8]>::is_empty) {
            if let Some(password) = env("PGPASSWORD").filter(|p| !p.is_empty()) {
                config.password(password);
            } else {
                let passfile = libpq
                    .passfile
                    .or_else(|| env("PGPASSFILE").filter(|p| !p.is_empty()))
                    .map(PathBuf::from)
                    .or_else(|| home.map(|home| home.join(".pgpass")));
                if let Some(path) = passfile {
                    let found = read_passfile(&config, &path);
                    warnings.extend(found.warning);
                    if let Some(password) = found.password {
                        config.password(password);
                    }
                }
            }
        }
        Ok(Self {
            config,
            scheme: scheme.to_ascii_lowercase(),
            ssl_mode,
            root_cert,
            warnings,
        })
    }

    /// The URL without its password: scheme, user, hosts, ports, database.
    pub fn redacted(&self) -> String {
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .map(|host| match host {
                Host::Tcp(name) if name.contains(':') => format!("[{name}]"),
                Host::Tcp(name) => encode(name),
                Host::Unix(path) => encode(&path.to_string_lossy()),
            })
            // A `hostaddr` is the address of the host of the same place: shown alone only.
            .chain(
                self.config
                    .get_hosts()
                    .is_empty()
                    .then_some(())
                    .into_iter()
                    .flat_map(|()| self.config.get_hostaddrs().iter())
                    .map(|ip| match ip {
                        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                        std::net::IpAddr::V4(ip) => ip.to_string(),
                    }),
            )
            .collect();
        let ports = self.config.get_ports();
        let hosts = hosts
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let port = ports.get(i).or(ports.first()).copied();
                format!("{host}:{}", port.unwrap_or(DEFAULT_PORT))
            })
            .collect::<Vec<_>>()
            .join(",");
        format!(
            "{}://{}@{hosts}/{}",
            self.scheme,
            encode(self.config.get_user().unwrap_or_default()),
            encode(self.config.get_dbname().unwrap_or_default()),
        )
    }

    /// The user the connection logs in as.
    pub fn user(&self) -> &str {
        self.config.get_user().unwrap_or_default()
    }

    /// The database.
    pub fn dbname(&self) -> &str {
        self.config.get_dbname().unwrap_or_default()
    }

    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// Whether a password was found (in the URL, `PGPASSWORD` or the password file).
    pub fn has_password(&self) -> bool {
        self.config.get_password().is_some()
    }

    /// What the user should hear about, such as a password file ignored for its
    /// permissions.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// `base` (`://[userinfo@]hosts[/db]`) with `PGPORT`'s ports given to hosts the URL names
/// without one, as libpq does (tokio-postgres would take 5432 for them).
fn with_default_ports(base: &str, ports: &[u16], port_in_query: bool) -> String {
    let Some(after) = base.strip_prefix("://") else {
        return base.to_owned();
    };
    let end = after.find('/').unwrap_or(after.len());
    let (authority, path) = after.split_at(end);
    let (userinfo, hosts) = match authority.find('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    let has_port = |chunk: &str| match chunk.strip_prefix('[') {
        Some(rest) => rest
            .split_once(']')
            .is_some_and(|(_, r)| r.starts_with(':')),
        None => chunk.contains(':'),
    };
    if ports.is_empty() || hosts.is_empty() || port_in_query || hosts.split(',').any(has_port) {
        return base.to_owned();
    }
    let hosts: Vec<String> = hosts
        .split(',')
        .enumerate()
        .map(|(i, host)| format!("{host}:{}", ports.get(i).unwrap_or(&ports[0])))
        .collect();
    format!("://{userinfo}{}{path}", hosts.join(","))
}

fn read_passfile(config: &postgres::Config, path: &Path) -> pgpass::Lookup {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        Some(Host::Unix(path)) => path.to_string_lossy().into_owned(),
        None => match config.get_hostaddrs().first() {
            Some(ip) => ip.to_string(),
            None => return pgpass::Lookup::default(),
        },
    };
    let default_socket = matches!(
        config.get_hosts().first(),
        Some(Host::Unix(path)) if path == Path::new(DEFAULT_SOCKET_DIR)
    );
    let target = pgpass::Target {
        host: &host,
        default_socket,
        port: config.get_ports().first().copied().unwrap_or(DEFAULT_PORT),
        dbname: config.get_dbname().unwrap_or_default(),
        user: config.get_user().unwrap_or_default(),
    };
    pgpass::read(path, &target)
}

/// Percent-encodes all but unreserved characters, for display.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// How long a connection and a statement may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The whole connection: socket, TLS, authentication.
    pub connect: Duration,
    /// Each statement; zero for none.
    pub statement: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: DEFAULT_CONNECT_TIMEOUT,
            statement: DEFAULT_STATEMENT_TIMEOUT,
        }
    }
}

impl Timeouts {
    /// `[store] connect_timeout` and `statement_timeout`, else the defaults.
    pub fn from_config(store: &StoreConfig) -> Self {
        Self {
            connect: store.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            statement: store.statement_timeout.unwrap_or(DEFAULT_STATEMENT_TIMEOUT),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to `{target}`: no answer within {}", humantime::format_duration(*.after))]
    Timeout { target: String, after: Duration },
    /// `detail` is the whole cause chain of `error`, which is kept for its SQLSTATE.
    #[error("cannot connect to `{target}`: {detail}")]
    Connect {
        target: String,
        detail: String,
        error: postgres::Error,
    },
    #[error("cannot connect to `{target}`: TLS: {message}")]
    Tls { target: String, message: String },
    #[error("cannot connect to `{target}`: {message}")]
    Failed { target: String, message: String },
}

impl ConnectError {
    /// The server could not be reached (no answer, refused, cut off), as against one that
    /// answered and said no (authentication, a missing database) or a TLS setting in error.
    pub fn unreachable(&self) -> bool {
        match self {
            Self::Timeout { .. } => true,
            Self::Connect { error, .. } => {
                // tokio-rustls reports a refused certificate as an io error wrapping it.
                let tls_refusal = cause_chain(error).any(|cause| {
                    cause.is::<tokio_rustls::rustls::Error>()
                        || cause
                            .downcast_ref::<std::io::Error>()
                            .and_then(|io| io.get_ref())
                            .is_some_and(|inner| inner.is::<tokio_rustls::rustls::Error>())
                });
                !tls_refusal
                    && (error.is_closed()
                        || cause_chain(error).any(|cause| cause.is::<std::io::Error>()))
            }
            Self::Tls { .. } | Self::Failed { .. } => false,
        }
    }
}

/// Connects, giving up after `timeouts.connect` (unless the URL's own `connect_timeout`
/// says otherwise). The statement timeout is for [`transaction`].
///
/// The attempt runs on a thread of its own, as the blocking client offers no bound on the
/// exchanges after the socket's `connect`; one that times out is left to end when the server
/// closes or the process exits.
pub fn connect(url: &PgUrl, timeouts: &Timeouts) -> Result<Client, ConnectError> {
    let target = url.redacted();
    let tls = tls::connector(url.ssl_mode, url.root_cert.as_ref()).map_err(|message| {
        ConnectError::Tls {
            target: target.clone(),
            message,
        }
    })?;
    let mut config = url.config.clone();
    let limit = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(timeouts.connect);
    config.connect_timeout(limit);
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("postgres-connect".into())
        .spawn(move || {
            let _ = tx.send(config.connect(tls));
        });
    if let Err(err) = spawned {
        return Err(ConnectError::Failed {
            target,
            message: format!("cannot start the connecting thread: {err}"),
        });
    }
    match rx.recv_timeout(limit) {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(error)) => Err(ConnectError::Connect {
            target,
            detail: describe(&error),
            error,
        }),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(ConnectError::Timeout {
            target,
            after: limit,
        }),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(ConnectError::Failed {
            target,
            message: "the connecting thread ended without an answer".into(),
        }),
    }
}

/// The error and its causes, each of them once, as one line; a missing password said as
/// where it was looked for.
fn describe(error: &postgres::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in cause_chain(error) {
        let text = cause.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
    }
    let detail = parts.join(": ");
    if detail.ends_with("password missing") {
        return "the server asks for a password and none was found: not in the URL, nor in \
                PGPASSWORD, nor in the password file"
            .to_owned();
    }
    detail
}

fn cause_chain(
    error: &postgres::Error,
) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    })
}

/// Begins a transaction with the statement timeout set for it alone (`SET LOCAL`), which
/// holds behind PgBouncer's transaction pooling.
pub fn transaction<'a>(
    client: &'a mut Client,
    timeouts: &Timeouts,
) -> Result<postgres::Transaction<'a>, postgres::Error> {
    let mut tx = client.transaction()?;
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = {}",
        timeouts.statement.as_millis()
    ))?;
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    fn pg(value: &str, vars: &[(&str, &str)]) -> PgUrl {
        match classify_with(value, &env(vars)).unwrap() {
            Location::Postgres(url) => *url,
            other => panic!("{other:?}"),
        }
    }

    /// Both PostgreSQL schemes are URLs, another scheme is refused naming only the scheme
    /// (never the password), and anything else is a file path.
    #[test]
    fn classify_tells_urls_from_paths() {
        let url = pg("postgresql://u:pw@db.example:6432/store", &[]);
        assert_eq!(url.redacted(), "postgresql://u@db.example:6432/store");
        let url = pg("postgres://u@db.example/store", &[]);
        assert_eq!(url.redacted(), "postgres://u@db.example:5432/store");
        let url = pg("PostgreSQL://u@h/d", &[]);
        assert_eq!(url.redacted(), "postgresql://u@h:5432/d");

        let err = classify_with("mysql://root:hunter2@db/x", &env(&[])).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("`mysql://...`"), "{message}");
        assert!(!message.contains("hunter2") && !message.contains("db/x"));

        for path in [
            "store.db",
            "./postgresql:/store.db",
            "/var/lib/x.db",
            "a:/b",
        ] {
            match classify_with(path, &env(&[])).unwrap() {
                Location::File(file) => assert_eq!(file, PathBuf::from(path)),
                other => panic!("{path}: {other:?}"),
            }
        }
    }

    /// A value SQLite would read as a URI (`file:`, any case) is refused, naming it; a path
    /// that only holds `file:` further on is a path.
    #[test]
    fn classify_refuses_sqlite_uris() {
        for uri in [
            "file:m.db?mode=memory",
            "file:/x/f.db",
            "FILE:store.db",
            "File://localhost/x.db",
            "file:",
        ] {
            let err = classify_with(uri, &env(&[])).unwrap_err();
            assert!(matches!(err, LocationError::FileUri { .. }), "{uri}: {err}");
            assert!(
                err.to_string()
                    .starts_with(&format!("`{uri}` is an SQLite URI"))
            );
        }
        for path in ["./file:x.db", "/srv/file:x.db", "files.db", "file"] {
            assert!(
                matches!(classify_with(path, &env(&[])), Ok(Location::File(_))),
                "{path}"
            );
        }
    }

    /// A malformed PostgreSQL URL is refused without echoing it.
    #[test]
    fn an_invalid_url_is_refused_without_its_password() {
        for bad in [
            "postgresql://u:hunter2@h/d?sslmode=sometimes",
            "postgresql://u:hunter2@h:notaport/d",
            "postgresql://u:hunter2@h/d?frobnicate=1",
        ] {
            let message = classify_with(bad, &env(&[])).unwrap_err().to_string();
            assert!(
                message.starts_with("`postgresql://...` is not a valid"),
                "{message}"
            );
            assert!(!message.contains("hunter2"), "{message}");
        }
    }

    /// The redacted form never holds the password, wherever the password came from, and
    /// neither does `Debug`.
    #[test]
    fn redaction_drops_every_password() {
        let url = pg("postgresql://u:hunter2@h/d?password=also-secret", &[]);
        assert!(url.has_password());
        let shown = format!("{} {url:?}", url.redacted());
        assert!(
            !shown.contains("hunter2") && !shown.contains("also-secret"),
            "{shown}"
        );
        let url = pg("postgresql://u@h/d", &[("PGPASSWORD", "from-env")]);
        assert!(url.has_password());
        assert!(!format!("{} {url:?}", url.redacted()).contains("from-env"));
    }

    /// What the URL omits comes from PGHOST, PGPORT, PGUSER and PGDATABASE; what it names
    /// wins over them; without either, libpq's defaults.
    #[test]
    fn environment_fills_what_the_url_omits() {
        let vars = [
            ("PGHOST", "env-host"),
            ("PGPORT", "7000"),
            ("PGUSER", "env-user"),
            ("PGDATABASE", "env-db"),
        ];
        let url = pg("postgresql://", &vars);
        assert_eq!(url.redacted(), "postgresql://env-user@env-host:7000/env-db");
        let url = pg("postgresql://u@h:1/d", &vars);
        assert_eq!(url.redacted(), "postgresql://u@h:1/d");
        let url = pg("postgresql:///d", &[("PGUSER", "me")]);
        assert_eq!(
            url.redacted(),
            "postgresql://me@%2Fvar%2Frun%2Fpostgresql:5432/d"
        );
        let url = pg("postgresql://u@h", &[]);
        assert_eq!(url.dbname(), "u");
        let url = pg("postgresql://u@h/d", &[("PGPORT", "7000")]);
        assert_eq!(url.redacted(), "postgresql://u@h:7000/d");
        let url = pg("postgresql://u@h/d?hostaddr=10.0.0.1", &[]);
        assert_eq!(url.redacted(), "postgresql://u@h:5432/d");
        let url = pg("postgresql://u@/d?hostaddr=10.0.0.1&port=6", &[]);
        assert_eq!(url.redacted(), "postgresql://u@10.0.0.1:6/d");
        let url = pg("postgresql://u@h:1,[::1]/d", &[("PGPORT", "7000")]);
        assert_eq!(url.redacted(), "postgresql://u@h:1,[::1]:5432/d");
        let err = classify_with("postgresql://h/d", &env(&[("PGPORT", "x")])).unwrap_err();
        assert!(err.to_string().contains("PGPORT `x`"));
    }

    /// Unix-socket hosts, by query parameter or percent-encoded host.
    #[test]
    fn unix_socket_hosts() {
        let url = pg("postgresql://u@%2Ftmp%2Fsock/d", &[]);
        assert_eq!(url.redacted(), "postgresql://u@%2Ftmp%2Fsock:5432/d");
        let url = pg("postgresql:///d?host=/tmp/sock&user=u", &[]);
        assert_eq!(url.redacted(), "postgresql://u@%2Ftmp%2Fsock:5432/d");
        let url = pg("postgresql:///d?user=u", &[("PGHOST", "/run/pg")]);
        assert_eq!(url.redacted(), "postgresql://u@%2Frun%2Fpg:5432/d");
    }

    /// sslmode takes libpq's six values from the URL, else PGSSLMODE, else prefer.
    #[test]
    fn sslmode_follows_libpq() {
        assert_eq!(pg("postgresql://u@h/d", &[]).ssl_mode(), SslMode::Prefer);
        assert_eq!(
            pg("postgresql://u@h/d?sslmode=verify-full", &[]).ssl_mode(),
            SslMode::VerifyFull
        );
        assert_eq!(
            pg("postgresql://u@h/d", &[("PGSSLMODE", "require")]).ssl_mode(),
            SslMode::Require
        );
        assert_eq!(
            pg(
                "postgresql://u@h/d?sslmode=disable",
                &[("PGSSLMODE", "require")]
            )
            .ssl_mode(),
            SslMode::Disable
        );
    }

    /// verify-ca and verify-full without root certificates are refused before connecting.
    #[test]
    fn verification_needs_roots() {
        let url = pg(
            "postgresql://u@h/d?sslmode=verify-full",
            &[("HOME", "/nonexistent")],
        );
        let Err(err) = connect(&url, &Timeouts::default()) else {
            panic!("connected without roots");
        };
        assert!(matches!(err, ConnectError::Tls { .. }), "{err}");
        assert!(err.to_string().contains("sslrootcert"), "{err}");
    }

    /// The password comes from the URL, then PGPASSWORD, then the password file, whose path
    /// is `passfile`, PGPASSFILE or ~/.pgpass, and which is ignored (with a warning) when
    /// others may read it.
    #[test]
    fn password_sources_in_libpq_order() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let pgpass = home.path().join(".pgpass");
        std::fs::write(&pgpass, "h:5432:d:u:from-file\n").unwrap();
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
        let home_var = home.path().to_str().unwrap();
        let password = |url: &PgUrl| {
            url.config
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned())
        };

        let vars = [("HOME", home_var), ("PGPASSWORD", "")];
        assert_eq!(
            password(&pg("postgresql://u@h/d", &vars)).unwrap(),
            "from-file"
        );
        assert_eq!(
            password(&pg("postgresql://u:@h/d", &vars)).unwrap(),
            "from-file"
        );
        let vars = [("HOME", home_var), ("PGPASSWORD", "from-env")];
        assert_eq!(
            password(&pg("postgresql://u:in-url@h/d", &vars)).unwrap(),
            "in-url"
        );
        assert_eq!(
            password(&pg("postgresql://u@h/d", &vars)).unwrap(),
            "from-env"
        );
        let vars = [("HOME", home_var)];
        assert_eq!(
            password(&pg("postgresql://u@h/d", &vars)).unwrap(),
            "from-file"
        );
        assert_eq!(password(&pg("postgresql://other@h/d", &vars)), None);

        let elsewhere = home.path().join("elsewhere");
        std::fs::write(&elsewhere, "*:*:*:*:elsewhere\n").unwrap();
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o600)).unwrap();
        let elsewhere_var = elsewhere.to_str().unwrap();
        let vars = [("HOME", home_var), ("PGPASSFILE", elsewhere_var)];
        assert_eq!(
            password(&pg("postgresql://u@h/d", &vars)).unwrap(),
            "elsewhere"
        );
        let by_param = format!("postgresql://u@h/d?passfile={elsewhere_var}");
        assert_eq!(
            password(&pg(&by_param, &[("HOME", home_var)])).unwrap(),
            "elsewhere"
        );

        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).unwrap();
        let url = pg("postgresql://u@h/d", &[("HOME", home_var)]);
        assert_eq!(password(&url), None);
        assert_eq!(url.warnings().len(), 1);
        assert!(url.warnings()[0].contains(".pgpass"));
    }

    /// The config's timeouts are used, and the defaults are short.
    #[test]
    fn timeouts_from_config() {
        let store = StoreConfig {
            connect_timeout: Some(Duration::from_secs(2)),
            statement_timeout: None,
        };
        assert_eq!(
            Timeouts::from_config(&store),
            Timeouts {
                connect: Duration::from_secs(2),
                statement: DEFAULT_STATEMENT_TIMEOUT
            }
        );
        assert_eq!(
            Timeouts::from_config(&StoreConfig::default()),
            Timeouts::default()
        );
    }
}
