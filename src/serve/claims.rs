//! What a verified token says about the run: pipeline, project, run id, commit, ref and trust.
//!
//! The claims are read through the same CI detection `record` uses on a runner
//! ([`crate::ingest::ci`]): each claim stands in for the environment variable the runner would
//! have set, so a run sent with a token is named exactly as a run recorded on the runner.
//!
//! | kind | pipeline | project | run id | commit | git ref | untrusted when |
//! | --- | --- | --- | --- | --- | --- | --- |
//! | `github` | `<repository>/<workflow>` | `repository` | `<run_id>-<run_attempt>` | `sha` | `ref` | `event_name` is missing, not a string, empty, `pull_request` or `pull_request_target`, or `ref_protected` is anything but `true` (`"true"` or the boolean) |
//! | `gitlab` | `project_path` | `project_path` | `<pipeline_id>-<job_id>` | `sha` | `ref` | `pipeline_source` is missing, not a string, empty, `merge_request_event` or `external_pull_request_event`, or `ref_protected` is anything but `true` |
//! | `generic` | `sub`, or the issuer's `pipeline_claim` | — | the issuer's `run_claim`; without one, from the hook | — | — | never (the pipeline's ceiling applies) |
//!
//! A GitHub or GitLab token without the claims that name its pipeline and run is refused: the
//! hook would otherwise name them itself.

use serde_json::{Map, Value};

use crate::config::IssuerKind;
use crate::ingest::ci;

/// The run a token vouches for. `None` fields are left to the hook.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimedRun {
    pub pipeline: String,
    pub project: Option<String>,
    pub run_id: Option<String>,
    pub commit: Option<String>,
    pub git_ref: Option<String>,
    /// Why the CI marks the run untrusted (`event_name=pull_request`), if it does.
    pub untrusted: Option<String>,
}

/// Claim name and the CI variable it stands for, per kind.
const GITHUB: &[(&str, &str)] = &[
    ("repository", "GITHUB_REPOSITORY"),
    ("workflow", "GITHUB_WORKFLOW"),
    ("run_id", "GITHUB_RUN_ID"),
    ("run_attempt", "GITHUB_RUN_ATTEMPT"),
    ("sha", "GITHUB_SHA"),
    ("ref", "GITHUB_REF"),
    ("event_name", "GITHUB_EVENT_NAME"),
    ("ref_protected", "GITHUB_REF_PROTECTED"),
];

const GITLAB: &[(&str, &str)] = &[
    ("project_path", "CI_PROJECT_PATH"),
    ("pipeline_id", "CI_PIPELINE_ID"),
    ("job_id", "CI_JOB_ID"),
    ("sha", "CI_COMMIT_SHA"),
    ("ref", "CI_COMMIT_REF_NAME"),
    ("pipeline_source", "CI_PIPELINE_SOURCE"),
    ("ref_protected", "CI_COMMIT_REF_PROTECTED"),
];

/// A claim as text: strings as they are, numbers and booleans written out.
fn claim_text(claims: &Map<String, Value>, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Why the claims do not clearly vouch for a protected push, if they do not: the event claim
/// (`event_name`, `pipeline_source`) must be a non-empty string, and `ref_protected` exactly
/// `true` (the boolean or the string). Anything else, a missing claim included, is untrusted.
/// The pull-request events themselves are [`ci::detect`]'s to name.
fn not_a_protected_push(kind: IssuerKind, claims: &Map<String, Value>) -> Option<String> {
    let event = match kind {
        IssuerKind::Github => "event_name",
        IssuerKind::Gitlab => "pipeline_source",
        IssuerKind::Generic => return None,
    };
    match claims.get(event) {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        None => return Some(format!("the token has no `{event}` claim")),
        Some(other) => {
            return Some(format!(
                "the token's `{event}` claim is {}, not an event name",
                shown(other)
            ));
        }
    }
    match claims.get("ref_protected") {
        Some(Value::Bool(true)) => None,
        Some(Value::String(s)) if s == "true" => None,
        None => Some("the token has no `ref_protected` claim".to_owned()),
        Some(other) => Some(format!(
            "the token's `ref_protected` claim is {}, not true",
            shown(other)
        )),
    }
}

/// A claim's value as JSON, cut short: it is quoted in refusals and warnings.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(64) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text,
    }
}

/// Reads the run out of verified claims; the error names what is missing.
/// For a generic issuer, `pipeline_claim` names the pipeline claim (`sub` when `None`), and
/// `run_claim` the run's (the hook names the run when `None`).
pub fn claimed_run(
    kind: IssuerKind,
    (pipeline_claim, run_claim): (Option<&str>, Option<&str>),
    claims: &Map<String, Value>,
) -> Result<ClaimedRun, String> {
    let (marker, table) = match kind {
        IssuerKind::Github => ("GITHUB_ACTIONS", GITHUB),
        IssuerKind::Gitlab => ("GITLAB_CI", GITLAB),
        IssuerKind::Generic => {
            let named = |name: &str| {
                claim_text(claims, name)
                    .map(|s| crate::model::limits::normalized_name(&s))
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| format!("the token has no `{name}` claim"))
            };
            return Ok(ClaimedRun {
                pipeline: named(pipeline_claim.unwrap_or("sub"))?,
                run_id: run_claim.map(named).transpose()?,
                ..ClaimedRun::default()
            });
        }
    };
    let var = |name: &str| -> Option<String> {
        if name == marker {
            return Some("true".to_owned());
        }
        let (claim, _) = table.iter().find(|(_, v)| *v == name)?;
        claim_text(claims, claim)
    };
    let context = ci::detect(&var).ok_or("no CI context")?;
    let required: &[&str] = match kind {
        IssuerKind::Github => &["repository", "workflow", "run_id"],
        _ => &["project_path", "pipeline_id", "job_id"],
    };
    if let (Some(pipeline), Some(run_id)) = (&context.pipeline, &context.run_id)
        && (kind != IssuerKind::Gitlab || claim_text(claims, "job_id").is_some())
        && (kind != IssuerKind::Github || claim_text(claims, "run_attempt").is_some())
    {
        return Ok(ClaimedRun {
            pipeline: pipeline.clone(),
            project: context.project,
            run_id: Some(run_id.clone()),
            commit: context.commit,
            git_ref: context.git_ref,
            untrusted: not_a_protected_push(kind, claims).or(context.untrusted),
        });
    }
    let mut missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|c| claim_text(claims, c).is_none_or(|v| v.trim().is_empty()))
        .collect();
    if kind == IssuerKind::Github && claim_text(claims, "run_attempt").is_none() {
        missing.push("run_attempt");
    }
    Err(format!(
        "the {} token lacks the claims {}",
        kind.as_str(),
        missing
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(value: serde_json::Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    /// A GitHub token names the run exactly as `record` does from the runner's environment.
    #[test]
    fn github_claims_name_the_run_as_the_environment_does() {
        let run = claimed_run(
            IssuerKind::Github,
            (None, None),
            &claims(serde_json::json!({
                "repository": "acme/web", "workflow": "build", "run_id": "4242",
                "run_attempt": "2", "sha": "abc", "ref": "refs/heads/main",
                "event_name": "push", "ref_protected": "true"
            })),
        )
        .unwrap();
        assert_eq!(run.pipeline, "acme/web/build");
        assert_eq!(run.project.as_deref(), Some("acme/web"));
        assert_eq!(run.run_id.as_deref(), Some("4242-2"));
        assert_eq!(run.commit.as_deref(), Some("abc"));
        assert_eq!(run.untrusted, None);
    }

    /// Pull-request tokens and unprotected refs are untrusted on GitHub and GitLab.
    #[test]
    fn pull_request_tokens_are_untrusted() {
        for event in ["pull_request", "pull_request_target"] {
            let run = claimed_run(
                IssuerKind::Github,
                (None, None),
                &claims(serde_json::json!({
                    "repository": "acme/web", "workflow": "build", "run_id": 1,
                    "run_attempt": 1, "event_name": event, "ref_protected": "true"
                })),
            )
            .unwrap();
            assert!(run.untrusted.is_some(), "{event}");
        }
        let run = claimed_run(
            IssuerKind::Gitlab,
            (None, None),
            &claims(serde_json::json!({
                "project_path": "g/web", "pipeline_id": "7", "job_id": "99",
                "pipeline_source": "push", "ref_protected": "false"
            })),
        )
        .unwrap();
        assert_eq!(run.run_id.as_deref(), Some("7-99"));
        assert_eq!(run.pipeline, "g/web");
        assert!(run.untrusted.is_some());
    }

    /// A GitHub or GitLab token that leaves out `ref_protected` (an older server, a claim
    /// dropped) records an untrusted run, not a trusted one.
    #[test]
    fn tokens_without_ref_protected_are_untrusted() {
        let run = claimed_run(
            IssuerKind::Github,
            (None, None),
            &claims(serde_json::json!({
                "repository": "acme/web", "workflow": "release", "run_id": 1,
                "run_attempt": 1, "event_name": "push", "ref": "refs/heads/x"
            })),
        )
        .unwrap();
        assert!(
            run.untrusted
                .as_deref()
                .is_some_and(|w| w.contains("ref_protected")),
            "{run:?}"
        );
        let run = claimed_run(
            IssuerKind::Gitlab,
            (None, None),
            &claims(serde_json::json!({
                "project_path": "g/web", "pipeline_id": "7", "job_id": "99",
                "pipeline_source": "push"
            })),
        )
        .unwrap();
        assert!(run.untrusted.is_some(), "{run:?}");
    }

    /// A generic issuer names the pipeline by `sub`, or by the claim the config names, and
    /// the run by the claim the config names, which the token must then carry.
    #[test]
    fn generic_tokens_name_the_pipeline_by_the_configured_claim() {
        let token = claims(serde_json::json!({
            "sub": "organization:acme:pipeline:web:ref:refs/heads/main",
            "pipeline_slug": "web",
            "build_id": "0191-build"
        }));
        let by_sub = claimed_run(IssuerKind::Generic, (None, None), &token).unwrap();
        assert_eq!(
            by_sub.pipeline,
            "organization:acme:pipeline:web:ref:refs/heads/main"
        );
        let by_slug =
            claimed_run(IssuerKind::Generic, (Some("pipeline_slug"), None), &token).unwrap();
        assert_eq!(by_slug.pipeline, "web");
        assert_eq!(by_slug.run_id, None, "the run comes from the hook");
        let by_build = claimed_run(
            IssuerKind::Generic,
            (Some("pipeline_slug"), Some("build_id")),
            &token,
        )
        .unwrap();
        assert_eq!(by_build.pipeline, "web");
        assert_eq!(by_build.run_id.as_deref(), Some("0191-build"));
        let err = claimed_run(IssuerKind::Generic, (None, Some("job_id")), &token).unwrap_err();
        assert!(err.contains("`job_id`"), "{err}");
    }

    /// A token that does not name its run cannot be used to record one the hook names.
    #[test]
    fn tokens_without_run_claims_are_refused() {
        let err = claimed_run(
            IssuerKind::Github,
            (None, None),
            &claims(serde_json::json!({"repository": "acme/web", "workflow": "build"})),
        )
        .unwrap_err();
        assert!(
            err.contains("`run_id`") && err.contains("`run_attempt`"),
            "{err}"
        );
        let err = claimed_run(
            IssuerKind::Gitlab,
            (None, None),
            &claims(serde_json::json!({"project_path": "g/web", "pipeline_id": "7"})),
        )
        .unwrap_err();
        assert!(err.contains("`job_id`"), "{err}");
        assert!(
            claimed_run(
                IssuerKind::Generic,
                (None, None),
                &claims(serde_json::json!({}))
            )
            .is_err()
        );
    }

    /// Only a clearly protected push is trusted: a `ref_protected` other than `true` or
    /// `"true"` (empty, `"0"`, `"no"`, `0`, `1`, `false`, `null`, `"TRUE"`) and an event that
    /// is missing, empty or not a string each record an untrusted run, naming the claim.
    #[test]
    fn anything_but_a_clearly_protected_push_is_untrusted() {
        use serde_json::json;
        let github = |event: Value, protected: Value| {
            let mut token = serde_json::json!({
                "repository": "acme/web", "workflow": "build", "run_id": "1",
                "run_attempt": "1", "event_name": event, "ref_protected": protected
            });
            let map = token.as_object_mut().unwrap();
            map.retain(|_, v| *v != serde_json::json!("<absent>"));
            claimed_run(IssuerKind::Github, (None, None), map)
                .unwrap()
                .untrusted
        };
        for protected in [
            json!(""),
            json!("0"),
            json!("no"),
            json!("TRUE"),
            json!(0),
            json!(1),
            json!(false),
            json!(null),
            json!("false"),
        ] {
            let why = github(json!("push"), protected.clone());
            assert!(
                why.as_deref()
                    .is_some_and(|w| w.contains("`ref_protected`")),
                "{protected}: {why:?}"
            );
        }
        for event in [
            json!(""),
            json!(" "),
            json!(5),
            json!(true),
            json!(null),
            json!("<absent>"),
        ] {
            let why = github(event.clone(), json!("true"));
            assert!(
                why.as_deref().is_some_and(|w| w.contains("`event_name`")),
                "{event}: {why:?}"
            );
        }
        assert_eq!(github(json!("push"), json!("true")), None);
        assert_eq!(github(json!("push"), json!(true)), None);
        let gitlab = |source: Value, protected: Value| {
            let token = serde_json::json!({
                "project_path": "g/web", "pipeline_id": "7", "job_id": "99",
                "pipeline_source": source, "ref_protected": protected
            });
            claimed_run(IssuerKind::Gitlab, (None, None), token.as_object().unwrap())
                .unwrap()
                .untrusted
        };
        assert!(gitlab(json!("push"), json!("")).is_some());
        assert!(gitlab(json!("push"), json!(0)).is_some());
        assert!(gitlab(json!(""), json!("true")).is_some());
        assert!(gitlab(json!(7), json!("true")).is_some());
        assert_eq!(gitlab(json!("push"), json!("true")), None);
    }
}
