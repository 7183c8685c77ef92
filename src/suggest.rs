//! "Did you mean": the recorded names closest to one the store does not hold. Pure.

use crate::report::escape::Term;

/// How many names a suggestion offers at most.
const SHOWN: usize = 3;

/// How alike (Jaro-Winkler, 0 to 1) a name must be to be suggested, unless one holds the other.
const ALIKE: f64 = 0.8;

/// How far below the best a suggestion may score.
const NEAR_BEST: f64 = 0.03;

/// The candidates closest to `query`, best first, at most three: those alike enough, or that
/// hold it or are held by it (`forks` for `forks-pr`). `query` itself is never suggested.
pub fn closest<'a>(query: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let lower = query.to_lowercase();
    let mut scored: Vec<(f64, &str)> = candidates
        .into_iter()
        .filter(|c| *c != query && !c.is_empty())
        .filter_map(|c| {
            let score = strsim::jaro_winkler(&lower, &c.to_lowercase());
            let holds = {
                let c = c.to_lowercase();
                !lower.is_empty() && (c.contains(&lower) || lower.contains(&c))
            };
            (score >= ALIKE || holds).then_some((score + f64::from(u8::from(holds)), c))
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored.dedup_by(|a, b| a.1 == b.1);
    // Names that share a long prefix (`registry/repo:...`) all score high: only those about as
    // close as the best are worth reading.
    let best = scored.first().map_or(0.0, |s| s.0);
    scored
        .into_iter()
        .take_while(|s| s.0 >= best - NEAR_BEST)
        .take(SHOWN)
        .map(|(_, c)| c)
        .collect()
}

/// `; did you mean `a`, `b` or `c`?`, each name escaped, or nothing when there is none.
pub fn did_you_mean(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{}`", Term(n))).collect();
    match quoted.as_slice() {
        [] => String::new(),
        [one] => format!("; did you mean {one}?"),
        [init @ .., last] => format!("; did you mean {} or {last}?", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prefix of a recorded name finds it, as `forks` finds `forks-pr`.
    #[test]
    fn a_prefix_finds_the_name() {
        let names = ["docs", "forks-pr", "web-release", "api-release"];
        assert_eq!(closest("forks", names), ["forks-pr"]);
    }

    /// A typo finds the name; unrelated names are not offered.
    #[test]
    fn a_typo_finds_the_name_and_nothing_unrelated() {
        let names = ["web-release", "api-release", "docs"];
        assert_eq!(closest("web-relase", names)[0], "web-release");
        assert!(closest("zzzz", names).is_empty());
    }

    /// Among names sharing a long prefix, only those about as close as the best are offered.
    #[test]
    fn only_names_near_the_best_are_offered() {
        let names = [
            "registry.acme.dev/web/cache:main",
            "registry.acme.dev/web:100",
            "registry.acme.dev/web:101",
        ];
        assert_eq!(
            closest("registry.acme.dev/web/cache:mian", names),
            ["registry.acme.dev/web/cache:main"]
        );
    }

    /// At most three names, best first, each escaped: a recorded name cannot forge output.
    #[test]
    fn suggestions_are_few_and_escaped() {
        let names = ["ci-1", "ci-2", "ci-3", "ci-4"];
        assert_eq!(closest("ci", names).len(), 3);
        assert_eq!(did_you_mean(&["a\u{1b}[2J"]), "; did you mean `a\\x1b[2J`?");
        assert_eq!(
            did_you_mean(&["a", "b", "c"]),
            "; did you mean `a`, `b` or `c`?"
        );
        assert_eq!(did_you_mean(&[]), "");
    }
}
