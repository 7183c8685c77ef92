//! Inputs of the CI hook: Dockerfiles, buildx metadata files, provenance, CI environments,
//! cache flags and `docker build` command lines. All parsing here is pure.

use std::fmt;

use crate::report::escape::Line;

pub mod builder;
pub mod cache_flag;
pub mod ci;
pub mod command;
pub mod dockerfile;
#[cfg(test)]
mod dockerfile_fuzz;
pub mod history;
pub mod metadata;
pub mod progress;

/// An input that does not parse: names the file (or flag) and, where known, the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct IngestError {
    /// The file path or flag the input came from.
    pub source_name: String,
    /// 1-based line number, where one applies.
    pub line: Option<usize>,
    pub message: String,
}

impl IngestError {
    pub fn new(
        source_name: impl Into<String>,
        line: Option<usize>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            source_name: source_name.into(),
            line,
            message: message.into(),
        }
    }
}

/// One line whatever the input held: messages quote values from the input, and those are
/// shown with their control characters escaped (`report::escape::Line`).
impl fmt::Display for IngestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (source, message) = (Line(&self.source_name), Line(&self.message));
        match self.line {
            Some(line) => write!(f, "`{source}` line {line}: {message}"),
            None => write!(f, "`{source}`: {message}"),
        }
    }
}
