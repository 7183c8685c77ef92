//! Rendering results for people (text), programs (JSON with a schema under `schema/`) and
//! Graphviz. Rendering writes to any [`std::io::Write`]; choosing stdout is the caller's.

/// `n` and the noun that agrees with it: `1 record`, `2 records`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// When a prune's records were made from: `since TIME`, or `at any time` for a run whose
/// times prove nothing (the smallest time).
pub fn made_since(t: crate::time::Micros) -> String {
    match t {
        crate::time::Micros::MIN => "at any time".to_owned(),
        t => format!("since {}", crate::time::format(t)),
    }
}

/// The first `shown` of `names`, each in backticks, then how many more there are:
/// `` `a`, `b`, `c` and 2 more``.
pub fn some_names<T: std::fmt::Display>(
    names: impl ExactSizeIterator<Item = T>,
    shown: usize,
) -> String {
    let more = names.len().saturating_sub(shown);
    let listed = names
        .take(shown)
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match more {
        0 => listed,
        n => format!("{listed} and {n} more"),
    }
}

pub mod escape;
pub mod incident;
pub mod json;
pub mod ls;
pub mod trace;
#[cfg(test)]
mod trace_tests;

#[cfg(test)]
mod tests {
    #[test]
    fn some_names_lists_the_first_and_counts_the_rest() {
        let names = |n: usize| (1..=n).map(|i| format!("r{i}")).collect::<Vec<_>>();
        assert_eq!(super::some_names(names(1).iter(), 3), "`r1`");
        assert_eq!(super::some_names(names(3).iter(), 3), "`r1`, `r2`, `r3`");
        assert_eq!(
            super::some_names(names(5).iter(), 3),
            "`r1`, `r2`, `r3` and 2 more"
        );
    }
}
