//! Every JSON document cachewarden writes validates against its schema under `schema/`.

use crate::common::{Env, ok};

fn schema(name: &str) -> serde_json::Value {
    let path = format!("{}/schema/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub(crate) fn assert_valid(schema_name: &str, doc: &serde_json::Value) {
    let mut schema = schema(schema_name);
    // The report embeds the trace schema by file name; inline it for the validator.
    if schema_name == "report.schema.json" {
        schema["properties"]["trace"] = self::schema("trace.schema.json");
    }
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{schema_name}: {errors:#?}\n{doc:#}");
}

/// Export lines, trace JSON, `ls` lists and the incident report match their schemas.
#[test]
fn documents_match_their_schemas() {
    let env = Env::new();
    let history = format!(
        "{}/examples/incident-history.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    ok(env.cmd().args(["import", &history]));
    ok(env.cmd().args([
        "mark-purged",
        "--builder",
        "ci-1",
        "--mount",
        "/root/.npm",
        "--at",
        "2026-11-06T00:00:00Z",
    ]));
    for line in ok(env.cmd().arg("export")).lines() {
        assert_valid(
            "provenance-line.schema.json",
            &serde_json::from_str(line).unwrap(),
        );
    }
    let trace = ok(env
        .cmd()
        .args(["trace", "--pipeline", "forks-pr", "--format", "json"]));
    assert_valid("trace.schema.json", &serde_json::from_str(&trace).unwrap());
    ok(env
        .cmd()
        .args(["incident", "open", "--pipeline", "forks-pr"]));
    for what in ["pipelines", "runs", "builders", "mounts", "incidents"] {
        let listed = ok(env.cmd().args(["ls", what, "--format", "json"]));
        assert_valid("ls.schema.json", &serde_json::from_str(&listed).unwrap());
    }
    let report = ok(env
        .cmd()
        .args(["incident", "report", "1", "--format", "json"]));
    assert_valid(
        "report.schema.json",
        &serde_json::from_str(&report).unwrap(),
    );
}
