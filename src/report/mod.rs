//! Rendering results for people (text), programs (JSON with a schema under `schema/`) and
//! Graphviz. Rendering writes to any [`std::io::Write`]; choosing stdout is the caller's.

/// `n` and the noun that agrees with it: `1 record`, `2 records`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub mod escape;
pub mod incident;
pub mod json;
pub mod ls;
pub mod trace;
#[cfg(test)]
mod trace_tests;
