//! Exit statuses and the typed errors that choose them.
//!
//! Core modules return typed errors ([`InputError`], [`crate::store::StoreError`], ...).
//! Commands wrap them with `anyhow::Context`; [`exit_status_of`] walks the chain to find the
//! most specific kind.

use std::io;

use crate::store::StoreError;

/// The documented exit statuses of every command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Success: the command did what it was asked (an empty result is still success).
    Success,
    /// Findings or partial failure: an audit found something, a purge left actions failed.
    Findings,
    /// Usage error or bad input: malformed JSON, an invalid reference, digest or time, a
    /// missing file, an invalid config, an unknown pipeline or run.
    BadInput,
    /// The store cannot be used: locked beyond the busy timeout, unreadable, or written by a
    /// newer cachewarden.
    Store,
    /// A remote service (registry, Docker Engine, BuildKit) could not be reached or refused.
    Remote,
    /// Refused by policy: out of scope, or a tainted input while an incident is open.
    Refused,
    /// A bug or an unexpected environment failure.
    Internal,
    /// `wrap` passes on its command's own status.
    Child(u8),
}

impl ExitStatus {
    pub fn from_child(code: u8) -> Self {
        Self::Child(code)
    }

    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Findings => 1,
            Self::BadInput => 2,
            Self::Store => 3,
            Self::Remote => 4,
            Self::Refused => 5,
            Self::Internal => 70,
            Self::Child(code) => code,
        }
    }
}

/// Bad input from the user: a file, a flag, a line of JSON. The message names the value and
/// where it came from.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    /// An output file the user named (`-o`, `--metrics-file`) that cannot be written.
    #[error("cannot write `{path}`: {source}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl InputError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}

/// A remote service failed in a way that retrying now will not fix. The kind is what the
/// purge's circuit breaker and exit statuses decide on; the message is for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    pub kind: RemoteKind,
    pub message: String,
}

/// Why a remote call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteKind {
    /// The service could not be reached at all: refused, timed out, no route.
    Unreachable,
    /// The service answered with this HTTP status (or the gRPC equivalent).
    Status(u16),
    /// The service refused the credentials, or they lack the permission.
    Auth,
    /// The service answered something that is not what the protocol says.
    Protocol,
    /// On this side: a setting, a file, a command run here.
    Local,
}

impl RemoteError {
    pub fn new(kind: RemoteKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn unreachable(message: impl Into<String>) -> Self {
        Self::new(RemoteKind::Unreachable, message)
    }

    pub fn status(code: u16, message: impl Into<String>) -> Self {
        Self::new(RemoteKind::Status(code), message)
    }

    pub fn auth(message: impl Into<String>) -> Self {
        Self::new(RemoteKind::Auth, message)
    }

    pub fn protocol(message: impl Into<String>) -> Self {
        Self::new(RemoteKind::Protocol, message)
    }

    pub fn local(message: impl Into<String>) -> Self {
        Self::new(RemoteKind::Local, message)
    }

    /// Whether the place could not be reached at all (what trips the circuit breaker).
    pub fn is_unreachable(&self) -> bool {
        self.kind == RemoteKind::Unreachable
    }
}

/// A policy refused the action.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RefusedError(pub String);

/// The command `wrap` runs could not be started: it exits as a shell would, 127 when the
/// program is not found, 126 when it cannot be run.
#[derive(Debug, thiserror::Error)]
#[error("cannot run `{program}`: {reason}")]
pub struct SpawnError {
    pub program: String,
    pub reason: String,
    pub status: u8,
}

impl SpawnError {
    pub fn new(program: &str, err: &std::io::Error) -> Self {
        Self {
            program: program.to_owned(),
            reason: err.to_string(),
            status: if err.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            },
        }
    }
}

/// Picks the exit status for an error by the most specific typed error in its chain.
pub fn exit_status_of(err: &anyhow::Error) -> ExitStatus {
    for cause in err.chain() {
        if cause.is::<InputError>()
            || cause.is::<crate::model::ParseError>()
            || cause.is::<crate::config::ConfigError>()
            || cause.is::<crate::ingest::IngestError>()
        {
            return ExitStatus::BadInput;
        }
        if let Some(store) = cause.downcast_ref::<StoreError>() {
            return store_status(store);
        }
        if cause.is::<RemoteError>() {
            return ExitStatus::Remote;
        }
        if cause.is::<RefusedError>() {
            return ExitStatus::Refused;
        }
        if let Some(spawn) = cause.downcast_ref::<SpawnError>() {
            return ExitStatus::from_child(spawn.status);
        }
    }
    ExitStatus::Internal
}

/// A store error is the store's trouble, unless it names something the user asked for that
/// is not there or not valid.
fn store_status(err: &StoreError) -> ExitStatus {
    match err {
        StoreError::NotFound(_) | StoreError::Input(_) | StoreError::Conflict(_) => {
            ExitStatus::BadInput
        }
        _ => ExitStatus::Store,
    }
}

/// A closed stdout (`cachewarden trace | head`) ends the command quietly.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A store that cannot be used exits 3; a missing or invalid value the user named exits 2,
    /// however deep in the context chain the store's error sits.
    #[test]
    fn store_errors_exit_as_store_trouble_or_bad_input() {
        let path = PathBuf::from("db.sqlite");
        let trouble = [
            StoreError::Missing { path: path.clone() },
            StoreError::Older {
                path: path.clone(),
                found: 4,
                supported: 5,
            },
            StoreError::Corrupt {
                path: path.clone(),
                found: -1,
            },
            StoreError::Locked { path },
        ];
        for err in trouble {
            let err = anyhow::Error::from(err).context("opening the store");
            assert_eq!(exit_status_of(&err), ExitStatus::Store, "{err:#}");
        }
        for err in [
            StoreError::NotFound("no incident 9".into()),
            StoreError::Input("bad".into()),
        ] {
            let err = anyhow::Error::from(err).context("reading");
            assert_eq!(exit_status_of(&err), ExitStatus::BadInput, "{err:#}");
        }
    }
}
