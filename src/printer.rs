//! Where text goes: data to stdout, everything else to stderr, at the chosen verbosity.
//! Every message is written as one line ([`Line`]): messages carry names from the store, and
//! a name must not forge a line or drive the terminal.

use std::io::{IsTerminal, Write};

use crate::cli::GlobalArgs;
use crate::report::escape::Line;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

/// Writes messages to stderr and decides whether progress bars show.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub verbosity: Verbosity,
    pub progress: bool,
    pub color: bool,
}

impl Printer {
    pub fn new(global: &GlobalArgs) -> Self {
        let verbosity = if global.quiet {
            Verbosity::Quiet
        } else if global.verbose {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        };
        let stderr_tty = std::io::stderr().is_terminal();
        Self {
            verbosity,
            progress: !global.no_progress && verbosity != Verbosity::Quiet && stderr_tty,
            color: stderr_tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    /// A status line on stderr, hidden by `--quiet`.
    pub fn status(&self, message: impl std::fmt::Display) {
        if self.verbosity != Verbosity::Quiet {
            let _ = writeln!(std::io::stderr(), "{}", Line(&message.to_string()));
        }
    }

    /// Detail on stderr, shown only with `--verbose`.
    pub fn detail(&self, message: impl std::fmt::Display) {
        if self.verbosity == Verbosity::Verbose {
            let _ = writeln!(std::io::stderr(), "{}", Line(&message.to_string()));
        }
    }

    /// A warning on stderr: always shown, even with `--quiet`.
    pub fn warn(&self, message: impl std::fmt::Display) {
        let prefix = if self.color {
            "\x1b[33mwarning\x1b[0m"
        } else {
            "warning"
        };
        let _ = writeln!(
            std::io::stderr(),
            "{prefix}: {}",
            Line(&message.to_string())
        );
    }

    /// The error and its causes, on one line.
    pub fn error(&self, err: &anyhow::Error) {
        let prefix = if self.color {
            "\x1b[31merror\x1b[0m"
        } else {
            "error"
        };
        let _ = writeln!(std::io::stderr(), "{prefix}: {}", Line(&one_line(err)));
    }
}

/// An error and its causes as one line, each cause that the line does not already show added
/// after a colon (a typed error often shows its source in its own message).
pub fn one_line(err: &anyhow::Error) -> String {
    let mut line = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::one_line;
    use crate::error::InputError;

    /// A cause the error's own message shows is not written twice; one it does not is added.
    #[test]
    fn one_line_shows_each_cause_once() {
        let read = InputError::Read {
            path: "ctx/Dockerfile".to_owned(),
            source: std::io::Error::other("stream did not contain valid UTF-8"),
        };
        let err = anyhow::Error::new(read);
        assert_eq!(
            one_line(&err),
            "cannot read `ctx/Dockerfile`: stream did not contain valid UTF-8"
        );
        let err = err.context("the build will not be recorded");
        assert_eq!(
            one_line(&err),
            "the build will not be recorded: cannot read `ctx/Dockerfile`: stream did not \
             contain valid UTF-8"
        );
    }
}
