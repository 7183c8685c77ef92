//! Rendering results for people (text), programs (JSON with a schema under `schema/`) and
//! Graphviz. Rendering writes to any [`std::io::Write`]; choosing stdout is the caller's.

#[cfg(test)]
mod tests;
pub mod incident;
pub mod trace;
