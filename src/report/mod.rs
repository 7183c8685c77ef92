//! Rendering results for people (text), programs (JSON with a schema under `schema/`) and
//! Graphviz. Rendering writes to any [`std::io::Write`]; choosing stdout is the caller's.

pub mod escape;
pub mod incident;
pub mod ls;
pub mod trace;
#[cfg(test)]
mod trace_tests;
