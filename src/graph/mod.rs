//! Taint traversal over the provenance graph. Pure: it reads through [`Source`] and does no IO
//! of its own.

pub mod source;

pub use source::Source;
