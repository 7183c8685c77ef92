//! Property-based fuzzing of the import line parser: whatever a line holds, parsing it never
//! panics, and a refusal is one line naming the input. Cases are bounded (proptest's default
//! of 256, or `PROPTEST_CASES`) so CI stays fast.

use proptest::prelude::*;

use super::provenance::parse_line;
use crate::ingest::IngestError;

/// The error as `import` reports it, for a line of `fuzz.jsonl`.
fn reported(message: String) -> String {
    IngestError::new("fuzz.jsonl", Some(7), message).to_string()
}

fn assert_one_line(message: String) -> Result<(), TestCaseError> {
    let shown = reported(message);
    prop_assert!(
        shown.starts_with("`fuzz.jsonl` line 7: "),
        "does not name the input: {shown}"
    );
    prop_assert!(
        !shown.chars().any(char::is_control),
        "not one line: {shown:?}"
    );
    Ok(())
}

/// Field names of the format, so generated objects reach past the first `match`.
const KEYS: &[&str] = &[
    "v",
    "type",
    "pipeline",
    "run",
    "step",
    "builder",
    "name",
    "project",
    "trust_level",
    "commit",
    "git_ref",
    "started_at",
    "finished_at",
    "status",
    "imported",
    "exported",
    "produced",
    "base_images",
    "mounts",
    "records",
    "id",
    "namespace",
    "target",
    "sharing",
    "readonly",
    "backend",
    "locator",
    "digest",
    "key",
    "tag",
    "created",
    "reused",
    "overlapped",
    "mount",
    "at",
    "source",
    "driver",
    "endpoint",
    "truncated",
    "type",
];

/// Strings the format gives meaning to, and some it does not.
fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("run".to_owned()),
        Just("pipeline".to_owned()),
        Just("builder".to_owned()),
        Just("purge".to_owned()),
        Just("2026-01-01T00:00:00Z".to_owned()),
        Just("registry".to_owned()),
        Just("gha".to_owned()),
        Just("local-image".to_owned()),
        Just("//root/.cache/pip".to_owned()),
        Just(format!("reg.io/a/b:t@sha256:{}", "a".repeat(64))),
        Just(format!("sha256:{}", "b".repeat(64))),
        Just("x".repeat(1100)),
        "\\PC{0,12}",
        ".{0,8}",
        "[\\x00-\\x1f\\x7f\\u{9b}\\u{202e}a-z:/@.]{0,16}",
    ]
}

/// A JSON value, nested a few levels, with keys of the format.
fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        prop_oneof![Just(1u32), Just(0), Just(2)].prop_map(serde_json::Value::from),
        arb_text().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(prop::sample::select(KEYS), inner, 0..10).prop_map(|map| {
                serde_json::Value::Object(map.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

/// A valid run line with one field replaced: close to valid, so deep checks run.
fn arb_near_valid() -> impl Strategy<Value = String> {
    let base = serde_json::json!({
        "v": 1, "type": "run", "pipeline": "web", "run": "7-1", "step": "Dockerfile",
        "builder": "ci-1", "started_at": "2026-01-01T00:00:00Z",
        "finished_at": "2026-01-01T00:05:00Z",
        "imported": [format!("localhost:5000/web:cache@sha256:{}", "a".repeat(64))],
        "exported": [{"backend": "gha", "key": "web-main"}],
        "mounts": [{"id": "//root/.cache/pip", "sharing": "locked"}],
        "records": {"created": [{"id": "r1", "type": "regular"}]},
    });
    (prop::sample::select(KEYS), arb_json()).prop_map(move |(key, value)| {
        let mut line = base.clone();
        line[key] = value;
        line.to_string()
    })
}

proptest! {
    /// Any text: no panic; a refusal is one line naming the input.
    #[test]
    fn any_text_is_parsed_or_refused_in_one_line(
        line in "\\PC{0,200}|.{0,64}|[\\x00-\\x1f\\x7f\\u{202e}\"{}:,\\[\\]a-z0-9]{0,64}"
    ) {
        if let Err(message) = parse_line(&line) {
            assert_one_line(message)?;
        }
    }

    /// JSON shaped like the format, and valid lines with one field changed: no panic, and a
    /// refusal is one line naming the input.
    #[test]
    fn format_shaped_json_is_parsed_or_refused_in_one_line(
        line in prop_oneof![arb_json().prop_map(|v| v.to_string()), arb_near_valid()]
    ) {
        if let Err(message) = parse_line(&line) {
            assert_one_line(message)?;
        }
    }
}
