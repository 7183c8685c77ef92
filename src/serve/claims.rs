//! What a verified token says about the run: pipeline, project, run id, commit, ref and trust.
//!
//! The claims are read through the same CI detection `record` uses on a runner
//! ([`crate::ingest::ci`]): each claim stands in for the environment variable the runner would
//! have set, so a run sent with a token is named exactly as a run recorded on the runner.
//!
//! | kind | pipeline | project | run id | commit | git ref | untrusted when |
//! | --- | --- | --- | --- | --- | --- | --- |
//! | `github` | `<repository>/<workflow>` | `repository` | `<run_id>-<run_attempt>` | `sha` | `ref` | `event_name` is `pull_request` or `pull_request_target`, or `ref_protected` is `false` or missing |
//! | `gitlab` | `project_path` | `project_path` | `<pipeline_id>-<job_id>` | `sha` | `ref` | `pipeline_source` is `merge_request_event` or `external_pull_request_event`, or `ref_protected` is `false` or missing |
//! | `generic` | `sub`, or the issuer's `pipeline_claim` | — | from the hook | — | — | never (the pipeline's ceiling applies) |
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

/// Reads the run out of verified claims; the error names what is missing.
/// `pipeline_claim` names the pipeline claim of a generic issuer (`sub` when `None`).
pub fn claimed_run(
    kind: IssuerKind,
    pipeline_claim: Option<&str>,
    claims: &Map<String, Value>,
) -> Result<ClaimedRun, String> {
    let (marker, table) = match kind {
        IssuerKind::Github => ("GITHUB_ACTIONS", GITHUB),
        IssuerKind::Gitlab => ("GITLAB_CI", GITLAB),
        IssuerKind::Generic => {
            let name = pipeline_claim.unwrap_or("sub");
            let pipeline = claim_text(claims, name)
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| format!("the token has no `{name}` claim"))?;
            return Ok(ClaimedRun {
                pipeline,
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
            // A token that does not say its ref is protected is not taken as protected.
            untrusted: context.untrusted.or_else(|| {
                claim_text(claims, "ref_protected")
                    .is_none()
                    .then(|| "the token has no `ref_protected` claim".to_owned())
            }),
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
            None,
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
                None,
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
            None,
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
            None,
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
            None,
            &claims(serde_json::json!({
                "project_path": "g/web", "pipeline_id": "7", "job_id": "99",
                "pipeline_source": "push"
            })),
        )
        .unwrap();
        assert!(run.untrusted.is_some(), "{run:?}");
    }

    /// A generic issuer names the pipeline by `sub`, or by the claim the config names.
    #[test]
    fn generic_tokens_name_the_pipeline_by_the_configured_claim() {
        let token = claims(serde_json::json!({
            "sub": "organization:acme:pipeline:web:ref:refs/heads/main",
            "pipeline_slug": "web"
        }));
        let by_sub = claimed_run(IssuerKind::Generic, None, &token).unwrap();
        assert_eq!(
            by_sub.pipeline,
            "organization:acme:pipeline:web:ref:refs/heads/main"
        );
        let by_slug = claimed_run(IssuerKind::Generic, Some("pipeline_slug"), &token).unwrap();
        assert_eq!(by_slug.pipeline, "web");
        assert_eq!(by_slug.run_id, None, "the run comes from the hook");
    }

    /// A token that does not name its run cannot be used to record one the hook names.
    #[test]
    fn tokens_without_run_claims_are_refused() {
        let err = claimed_run(
            IssuerKind::Github,
            None,
            &claims(serde_json::json!({"repository": "acme/web", "workflow": "build"})),
        )
        .unwrap_err();
        assert!(
            err.contains("`run_id`") && err.contains("`run_attempt`"),
            "{err}"
        );
        let err = claimed_run(
            IssuerKind::Gitlab,
            None,
            &claims(serde_json::json!({"project_path": "g/web", "pipeline_id": "7"})),
        )
        .unwrap_err();
        assert!(err.contains("`job_id`"), "{err}");
        assert!(claimed_run(IssuerKind::Generic, None, &claims(serde_json::json!({}))).is_err());
    }
}
