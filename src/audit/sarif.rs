//! SARIF 2.1.0 output, for code-scanning dashboards. Every code is a rule; a finding's
//! reference is a logical location, and its fingerprint a partial fingerprint, so a dashboard
//! tracks one finding across audits.

use serde_json::{Value, json};

use super::finding::Code;
use super::render::{AuditResult, Reported};
use crate::time::{self, Micros};

pub const SARIF_VERSION: &str = "2.1.0";
pub const SARIF_SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

pub fn document(result: &AuditResult) -> Value {
    let errors: Vec<&str> = result
        .registries
        .iter()
        .filter_map(|r| r.error.as_deref())
        .collect();
    document_of(
        &Code::REGISTRY,
        &result.findings,
        result.started_at,
        &errors,
    )
}

/// The SARIF log of one audit: its rules, findings and the errors that kept it from looking
/// everywhere.
pub fn document_of(
    codes: &[Code],
    findings: &[Reported],
    started_at: Micros,
    errors: &[&str],
) -> Value {
    let rules: Vec<Value> = codes
        .iter()
        .map(|code| {
            json!({
                "id": code.id(),
                "name": code.name(),
                "shortDescription": {"text": code.summary()},
                "help": {"text": code.help()},
                "defaultConfiguration": {"level": code.severity().as_str()},
            })
        })
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|r| {
            let f = &r.finding;
            let index = codes.iter().position(|c| *c == f.code).unwrap_or(0);
            let mut properties = serde_json::Map::new();
            properties.insert("findingId".into(), json!(r.id));
            properties.insert("new".into(), json!(r.new));
            properties.insert("registry".into(), json!(f.registry));
            properties.insert("repository".into(), json!(f.repository));
            properties.insert("tag".into(), json!(f.tag));
            properties.insert("digest".into(), json!(f.digest));
            properties.insert("firstSeen".into(), json!(time::format(f.first_seen)));
            for (key, value) in &f.detail {
                properties.insert(key.clone(), json!(value));
            }
            json!({
                "ruleId": f.code.id(),
                "ruleIndex": index,
                "level": f.code.severity().as_str(),
                "message": {"text": f.message},
                "locations": [{
                    "logicalLocations": [{"fullyQualifiedName": f.reference(), "kind": "resource"}],
                }],
                "partialFingerprints": {"cachewarden/v1": f.fingerprint()},
                "properties": properties,
            })
        })
        .collect();
    let notifications: Vec<Value> = errors
        .iter()
        .map(|error| json!({"level": "error", "message": {"text": error}}))
        .collect();
    json!({
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [{
            "tool": {"driver": {
                "name": "cachewarden",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "invocations": [{
                "executionSuccessful": notifications.is_empty(),
                "startTimeUtc": time::format(started_at),
                "toolExecutionNotifications": notifications,
            }],
            "results": results,
        }],
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::audit::finding::Finding;
    use crate::audit::render::{RegistryResult, Reported};

    /// Results point at their rule, carry fingerprints, and errors fail the invocation.
    #[test]
    fn results_point_at_their_rule_and_carry_fingerprints() {
        let result = AuditResult {
            findings: vec![Reported {
                id: 7,
                new: true,
                finding: Finding {
                    code: Code::TagMovedUnrecorded,
                    registry: "r.io".into(),
                    repository: "a".into(),
                    tag: Some("main".into()),
                    digest: Some("sha256:aa".into()),
                    first_seen: 0,
                    message: "moved".into(),
                    detail: BTreeMap::from([(
                        "previous_digest".to_owned(),
                        "sha256:bb".to_owned(),
                    )]),
                },
            }],
            registries: vec![RegistryResult {
                host: "down.io".into(),
                error: Some("cannot connect".into()),
                ..RegistryResult::default()
            }],
            ..AuditResult::default()
        };
        let doc = document(&result);
        assert_eq!(doc["version"], "2.1.0");
        let run = &doc["runs"][0];
        let result = &run["results"][0];
        let index = result["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(
            run["tool"]["driver"]["rules"][index]["id"],
            result["ruleId"]
        );
        assert_eq!(result["ruleId"], "CW003");
        assert_eq!(
            result["partialFingerprints"]["cachewarden/v1"],
            "CW003 r.io/a:main@sha256:aa"
        );
        assert_eq!(result["properties"]["previous_digest"], "sha256:bb");
        assert_eq!(run["invocations"][0]["executionSuccessful"], false);
    }
}
