//! Inputs of the CI hook: Dockerfiles, buildx metadata files, provenance, CI environments,
//! cache flags and `docker build` command lines. All parsing here is pure.

use std::fmt;

pub mod builder;
pub mod cache_flag;
pub mod ci;
pub mod command;
pub mod dockerfile;
pub mod metadata;

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

impl fmt::Display for IngestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "`{}` line {line}: {}", self.source_name, self.message),
            None => write!(f, "`{}`: {}", self.source_name, self.message),
        }
    }
}
