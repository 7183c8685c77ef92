//! CI environment detection: fills in pipeline, run and commit when flags are absent.
//!
//! The first system whose marker variable is set gives the fields, in the order of this table.
//! An empty variable counts as absent. A field whose variables are absent stays empty, and the
//! flag (`--pipeline`, `--run`, ...) has to supply it.
//!
//! | system | marker | pipeline | project | run id | job | commit | git ref |
//! | --- | --- | --- | --- | --- | --- | --- | --- |
//! | GitHub Actions (`github-actions`) | `GITHUB_ACTIONS=true` | `$GITHUB_REPOSITORY/$GITHUB_WORKFLOW` | `GITHUB_REPOSITORY` | `$GITHUB_RUN_ID-$GITHUB_RUN_ATTEMPT` | `GITHUB_JOB` | `GITHUB_SHA` | `GITHUB_REF` |
//! | GitLab CI (`gitlab-ci`) | `GITLAB_CI=true` | `CI_PROJECT_PATH` | `CI_PROJECT_PATH` | `$CI_PIPELINE_ID-$CI_JOB_ID` | `CI_JOB_NAME` | `CI_COMMIT_SHA` | `CI_COMMIT_REF_NAME` |
//! | Buildkite (`buildkite`) | `BUILDKITE=true` | `BUILDKITE_PIPELINE_SLUG` | — | `$BUILDKITE_BUILD_NUMBER-$BUILDKITE_RETRY_COUNT` | `BUILDKITE_STEP_KEY`, else `BUILDKITE_LABEL` | `BUILDKITE_COMMIT` | `BUILDKITE_BRANCH` |
//! | CircleCI (`circleci`) | `CIRCLECI=true` | `$CIRCLE_PROJECT_USERNAME/$CIRCLE_PROJECT_REPONAME` | the same | `CIRCLE_WORKFLOW_ID`, else `CIRCLE_BUILD_NUM` | `CIRCLE_JOB` | `CIRCLE_SHA1` | `CIRCLE_BRANCH`, else `CIRCLE_TAG` |
//! | Jenkins (`jenkins`) | `JENKINS_URL` set | `JOB_NAME` | — | `BUILD_NUMBER` | `STAGE_NAME` | `GIT_COMMIT` | `GIT_BRANCH`, else `BRANCH_NAME` |
//!
//! Notes on the choices:
//! - A pipeline or project joined from two variables is set only when both are.
//! - GitHub: the run id has the attempt appended when `GITHUB_RUN_ATTEMPT` is set, so a
//!   re-run is a run of its own; without it the run id is `GITHUB_RUN_ID` alone.
//! - GitLab: a retried job runs again in the same pipeline, and GitLab gives it no attempt
//!   number, only a new job id; the run id is the pipeline id with the job id appended (the
//!   pipeline id alone when `CI_JOB_ID` is unset), so a retry is a run of its own rather than
//!   a second recording of the first attempt's run key with other facts, which is refused.
//!   Each job of a pipeline is then its own run.
//! - Buildkite: `BUILDKITE_RETRY_COUNT` is appended when set (`0` on a first attempt).
//!   `BUILDKITE_COMMIT` can be the symbolic `HEAD` before checkout; that counts as absent.
//! - CircleCI: a re-run gets a new workflow id, so the workflow id needs no attempt.
//! - Jenkins: a rebuild gets a new build number; `JOB_NAME` includes the folders, and for
//!   multibranch jobs the branch.
//!
//! Runs the CI marks as untrusted: pull-request builds and builds of unprotected refs run code
//! that anyone who can open a pull request wrote. Such a run is recorded at the lowest trust
//! level (`untrusted`, or the config's first `trust_levels` entry), whatever `--trust-level`
//! asks. Any other run takes `--trust-level`, else its pipeline's ceiling.
//!
//! When the markers of several systems are set, the untrusted markers of every one of them are
//! checked, not only of the one that gives the fields: a pull request's job can set another
//! system's variables (`GITHUB_ACTIONS=true` in a GitLab merge-request job), and one system
//! saying the run is untrusted is enough. The other systems are kept in
//! [`CiContext::also_detected`], for a warning.
//!
//! | system | untrusted when |
//! | --- | --- |
//! | GitHub Actions | `GITHUB_EVENT_NAME` is unset, empty, `pull_request` or `pull_request_target`, or `GITHUB_REF_PROTECTED` is anything but exactly `true` (unset, empty, `false`, `0`, `no`) |
//! | GitLab CI | `CI_PIPELINE_SOURCE` is unset, empty, `merge_request_event` or `external_pull_request_event`, or `CI_COMMIT_REF_PROTECTED` is anything but exactly `true` |
//! | Buildkite | `BUILDKITE_PULL_REQUEST` is set and not `false` |
//! | CircleCI | `CIRCLE_PULL_REQUEST` is set |
//! | Jenkins | `CHANGE_ID` is set (a multibranch pull-request build) |
//!
//! GitHub and GitLab always set both variables on their runners, so a run of theirs is trusted
//! only when they clearly say it is a protected push: a variable left unset or empty, or a
//! value other than exactly `true`, leaves it untrusted.

/// What the CI environment says about the current job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CiContext {
    /// `github-actions`, `gitlab-ci`, `buildkite`, `jenkins`, `circleci`.
    pub system: &'static str,
    pub pipeline: Option<String>,
    pub project: Option<String>,
    /// The run id with its attempt, e.g. `1234-2`.
    pub run_id: Option<String>,
    pub job: Option<String>,
    pub commit: Option<String>,
    pub git_ref: Option<String>,
    /// Why the CI marks this run as untrusted (`GITHUB_EVENT_NAME=pull_request`), if it does:
    /// the first reason of any system detected, not only of `system`.
    pub untrusted: Option<String>,
    /// The other systems whose marker variables are set, in the order of the table; their
    /// untrusted markers count, their fields do not.
    pub also_detected: Vec<&'static str>,
}

/// Detects the CI system from environment variables read through `var`: the fields of the
/// first system detected, and the untrusted markers of all of them.
pub fn detect(var: &dyn Fn(&str) -> Option<String>) -> Option<CiContext> {
    let env = Env(var);
    let systems: [(bool, System); 5] = [
        (env.flag("GITHUB_ACTIONS"), github_actions),
        (env.flag("GITLAB_CI"), gitlab_ci),
        (env.flag("BUILDKITE"), buildkite),
        (env.flag("CIRCLECI"), circleci),
        (env.get("JENKINS_URL").is_some(), jenkins),
    ];
    let mut detected = systems
        .iter()
        .filter(|(marked, _)| *marked)
        .map(|(_, context)| context(&env));
    let mut first = detected.next()?;
    for other in detected {
        first.untrusted = first.untrusted.or(other.untrusted);
        first.also_detected.push(other.system);
    }
    Some(first)
}

/// Reads one system's fields and untrusted markers.
type System = fn(&Env) -> CiContext;

/// Environment access where empty values are absent.
struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
            .map(|v| crate::model::limits::normalized_name(&v))
            .filter(|v| !v.is_empty())
    }

    fn flag(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// The first of `names` that is set.
    fn first(&self, names: &[&str]) -> Option<String> {
        names.iter().find_map(|name| self.get(name))
    }

    /// `a<sep>b` when both are set.
    fn both(&self, a: &str, sep: char, b: &str) -> Option<String> {
        Some(format!("{}{sep}{}", self.get(a)?, self.get(b)?))
    }

    /// `NAME=value` when the variable is set to one of `values` (compared without case).
    fn is_one_of(&self, name: &str, values: &[&str]) -> Option<String> {
        let value = self.get(name)?;
        values
            .iter()
            .any(|v| value.eq_ignore_ascii_case(v))
            .then(|| format!("{name}={value}"))
    }

    /// Why a run is not clearly a protected push, if it is not: its event variable is unset,
    /// empty, or one of the pull-request `events`, or its ref-protected variable is anything
    /// but exactly `true` (unset, empty, `0`, `no`, `TRUE`).
    fn not_a_protected_push(
        &self,
        (event, events): (&str, &[&str]),
        protected: &str,
    ) -> Option<String> {
        if self.get(event).is_none() {
            return Some(format!("{event} is unset or empty"));
        }
        if let Some(why) = self.is_one_of(event, events) {
            return Some(why);
        }
        match (self.0)(protected) {
            Some(value) if value == "true" => None,
            Some(value) if value.is_empty() => Some(format!("{protected} is empty")),
            Some(value) => Some(format!("{protected}={value}")),
            None => Some(format!("{protected} is unset")),
        }
    }

    /// `NAME=value` when the variable is set (and, with `unless`, not to that value).
    fn is_set(&self, name: &str, unless: Option<&str>) -> Option<String> {
        let value = self.get(name)?;
        (unless != Some(value.to_ascii_lowercase().as_str())).then(|| format!("{name}={value}"))
    }

    /// `base-suffix`, or `base` alone when the suffix is absent.
    fn with_suffix(&self, base: &str, suffix: &str) -> Option<String> {
        let base = self.get(base)?;
        Some(match self.get(suffix) {
            Some(suffix) => format!("{base}-{suffix}"),
            None => base,
        })
    }
}

fn github_actions(env: &Env) -> CiContext {
    CiContext {
        system: "github-actions",
        pipeline: env.both("GITHUB_REPOSITORY", '/', "GITHUB_WORKFLOW"),
        project: env.get("GITHUB_REPOSITORY"),
        run_id: env.with_suffix("GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT"),
        job: env.get("GITHUB_JOB"),
        commit: env.get("GITHUB_SHA"),
        git_ref: env.get("GITHUB_REF"),
        untrusted: env.not_a_protected_push(
            (
                "GITHUB_EVENT_NAME",
                &["pull_request", "pull_request_target"],
            ),
            "GITHUB_REF_PROTECTED",
        ),
        also_detected: Vec::new(),
    }
}

fn gitlab_ci(env: &Env) -> CiContext {
    CiContext {
        system: "gitlab-ci",
        pipeline: env.get("CI_PROJECT_PATH"),
        project: env.get("CI_PROJECT_PATH"),
        run_id: env.with_suffix("CI_PIPELINE_ID", "CI_JOB_ID"),
        job: env.get("CI_JOB_NAME"),
        commit: env.get("CI_COMMIT_SHA"),
        git_ref: env.get("CI_COMMIT_REF_NAME"),
        untrusted: env.not_a_protected_push(
            (
                "CI_PIPELINE_SOURCE",
                &["merge_request_event", "external_pull_request_event"],
            ),
            "CI_COMMIT_REF_PROTECTED",
        ),
        also_detected: Vec::new(),
    }
}

fn buildkite(env: &Env) -> CiContext {
    CiContext {
        system: "buildkite",
        pipeline: env.get("BUILDKITE_PIPELINE_SLUG"),
        project: None,
        run_id: env.with_suffix("BUILDKITE_BUILD_NUMBER", "BUILDKITE_RETRY_COUNT"),
        job: env.first(&["BUILDKITE_STEP_KEY", "BUILDKITE_LABEL"]),
        commit: env.get("BUILDKITE_COMMIT").filter(|c| c != "HEAD"),
        git_ref: env.get("BUILDKITE_BRANCH"),
        untrusted: env.is_set("BUILDKITE_PULL_REQUEST", Some("false")),
        also_detected: Vec::new(),
    }
}

fn circleci(env: &Env) -> CiContext {
    let repository = env.both("CIRCLE_PROJECT_USERNAME", '/', "CIRCLE_PROJECT_REPONAME");
    CiContext {
        system: "circleci",
        pipeline: repository.clone(),
        project: repository,
        run_id: env.first(&["CIRCLE_WORKFLOW_ID", "CIRCLE_BUILD_NUM"]),
        job: env.get("CIRCLE_JOB"),
        commit: env.get("CIRCLE_SHA1"),
        git_ref: env.first(&["CIRCLE_BRANCH", "CIRCLE_TAG"]),
        untrusted: env.is_set("CIRCLE_PULL_REQUEST", None),
        also_detected: Vec::new(),
    }
}

fn jenkins(env: &Env) -> CiContext {
    CiContext {
        system: "jenkins",
        pipeline: env.get("JOB_NAME"),
        project: None,
        run_id: env.get("BUILD_NUMBER"),
        job: env.get("STAGE_NAME"),
        commit: env.get("GIT_COMMIT"),
        git_ref: env.first(&["GIT_BRANCH", "BRANCH_NAME"]),
        untrusted: env.is_set("CHANGE_ID", None),
        also_detected: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn detect_in(vars: &[(&str, &str)]) -> Option<CiContext> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        detect(&|name| map.get(name).cloned())
    }

    fn some(value: &str) -> Option<String> {
        Some(value.to_owned())
    }

    /// GitHub Actions: pipeline is repository plus workflow, and the run id carries the attempt.
    #[test]
    fn github_actions_context() {
        let ctx = detect_in(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_REPOSITORY", "acme/web"),
            ("GITHUB_WORKFLOW", "Release images"),
            ("GITHUB_RUN_ID", "9876543210"),
            ("GITHUB_RUN_ATTEMPT", "2"),
            ("GITHUB_JOB", "build"),
            ("GITHUB_SHA", "3f1c2b9d0e8a7f6b5c4d3e2f1a0b9c8d7e6f5a4b"),
            ("GITHUB_REF", "refs/heads/main"),
            ("GITHUB_EVENT_NAME", "push"),
            ("GITHUB_REF_PROTECTED", "true"),
        ])
        .unwrap();
        assert_eq!(
            ctx,
            CiContext {
                system: "github-actions",
                pipeline: some("acme/web/Release images"),
                project: some("acme/web"),
                run_id: some("9876543210-2"),
                job: some("build"),
                commit: some("3f1c2b9d0e8a7f6b5c4d3e2f1a0b9c8d7e6f5a4b"),
                git_ref: some("refs/heads/main"),
                untrusted: None,
                also_detected: Vec::new(),
            }
        );
    }

    /// Names are read without white space at their ends and in normalization form C, as the
    /// collector reads them from a token: a workflow named `"Caf\u{65}\u{301} "` is one pipeline.
    #[test]
    fn names_are_read_trimmed_and_composed() {
        let ctx = detect_in(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_REPOSITORY", "acme/web"),
            ("GITHUB_WORKFLOW", "Cafe\u{301} "),
            ("GITHUB_RUN_ID", "1"),
        ])
        .unwrap();
        assert_eq!(ctx.pipeline.as_deref(), Some("acme/web/Caf\u{e9}"));
    }

    /// GitHub Actions without an attempt or workflow: the run id is the bare run, the pipeline
    /// is left to the flag.
    #[test]
    fn github_actions_partial() {
        let ctx = detect_in(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_REPOSITORY", "acme/web"),
            ("GITHUB_WORKFLOW", ""),
            ("GITHUB_RUN_ID", "77"),
        ])
        .unwrap();
        assert_eq!(ctx.pipeline, None);
        assert_eq!(ctx.project, some("acme/web"));
        assert_eq!(ctx.run_id, some("77"));
        assert_eq!(ctx.job, None);
    }

    /// GitLab CI: the project path names the pipeline, and the run is the pipeline id with the
    /// job id, which a retried job changes: a retry is not a re-recording of the first attempt.
    #[test]
    fn gitlab_ci_context() {
        let ctx = detect_in(&[
            ("GITLAB_CI", "true"),
            ("CI_PROJECT_PATH", "platform/payments"),
            ("CI_PIPELINE_ID", "104233"),
            ("CI_JOB_ID", "5521903"),
            ("CI_JOB_NAME", "docker-build"),
            ("CI_COMMIT_SHA", "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"),
            ("CI_COMMIT_REF_NAME", "v1.8.0"),
            ("CI_PIPELINE_SOURCE", "push"),
            ("CI_COMMIT_REF_PROTECTED", "true"),
        ])
        .unwrap();
        assert_eq!(
            ctx,
            CiContext {
                system: "gitlab-ci",
                pipeline: some("platform/payments"),
                project: some("platform/payments"),
                run_id: some("104233-5521903"),
                job: some("docker-build"),
                commit: some("a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"),
                git_ref: some("v1.8.0"),
                untrusted: None,
                also_detected: Vec::new(),
            }
        );
        let retry = detect_in(&[
            ("GITLAB_CI", "true"),
            ("CI_PIPELINE_ID", "104233"),
            ("CI_JOB_ID", "5521977"),
        ])
        .unwrap();
        assert_eq!(retry.run_id, some("104233-5521977"));
        let no_job = detect_in(&[("GITLAB_CI", "true"), ("CI_PIPELINE_ID", "104233")]).unwrap();
        assert_eq!(no_job.run_id, some("104233"));
    }

    /// Buildkite: the retry count joins the build number, the step key wins over the label,
    /// and a symbolic `HEAD` commit is not a commit.
    #[test]
    fn buildkite_context() {
        let ctx = detect_in(&[
            ("BUILDKITE", "true"),
            ("BUILDKITE_PIPELINE_SLUG", "storefront"),
            ("BUILDKITE_BUILD_NUMBER", "1432"),
            ("BUILDKITE_RETRY_COUNT", "1"),
            ("BUILDKITE_STEP_KEY", "image"),
            ("BUILDKITE_LABEL", ":docker: Build image"),
            ("BUILDKITE_COMMIT", "HEAD"),
            ("BUILDKITE_BRANCH", "main"),
        ])
        .unwrap();
        assert_eq!(
            ctx,
            CiContext {
                system: "buildkite",
                pipeline: some("storefront"),
                project: None,
                run_id: some("1432-1"),
                job: some("image"),
                commit: None,
                git_ref: some("main"),
                untrusted: None,
                also_detected: Vec::new(),
            }
        );

        let ctx = detect_in(&[
            ("BUILDKITE", "true"),
            ("BUILDKITE_BUILD_NUMBER", "1433"),
            ("BUILDKITE_STEP_KEY", ""),
            ("BUILDKITE_LABEL", ":docker: Build image"),
            (
                "BUILDKITE_COMMIT",
                "4b220de5058abfd01ff619c9d2ff6b09a049bea0",
            ),
        ])
        .unwrap();
        assert_eq!(ctx.run_id, some("1433"));
        assert_eq!(ctx.job, some(":docker: Build image"));
        assert_eq!(ctx.commit, some("4b220de5058abfd01ff619c9d2ff6b09a049bea0"));
    }

    /// CircleCI: `user/repo` is pipeline and project, the workflow id is the run, and a tag
    /// build's ref is its tag.
    #[test]
    fn circleci_context() {
        let ctx = detect_in(&[
            ("CIRCLECI", "true"),
            ("CIRCLE_PROJECT_USERNAME", "acme"),
            ("CIRCLE_PROJECT_REPONAME", "api"),
            ("CIRCLE_WORKFLOW_ID", "6f1e3c2a-0b9d-4c8e-a7f6-5d4c3b2a1908"),
            ("CIRCLE_BUILD_NUM", "881"),
            ("CIRCLE_JOB", "build-image"),
            ("CIRCLE_SHA1", "9a881b9b9f23849475296a8cd768ea1965bc3152"),
            ("CIRCLE_TAG", "v2.0.1"),
        ])
        .unwrap();
        assert_eq!(
            ctx,
            CiContext {
                system: "circleci",
                pipeline: some("acme/api"),
                project: some("acme/api"),
                run_id: some("6f1e3c2a-0b9d-4c8e-a7f6-5d4c3b2a1908"),
                job: some("build-image"),
                commit: some("9a881b9b9f23849475296a8cd768ea1965bc3152"),
                git_ref: some("v2.0.1"),
                untrusted: None,
                also_detected: Vec::new(),
            }
        );

        let ctx = detect_in(&[
            ("CIRCLECI", "true"),
            ("CIRCLE_BUILD_NUM", "882"),
            ("CIRCLE_BRANCH", "main"),
        ])
        .unwrap();
        assert_eq!(ctx.run_id, some("882"));
        assert_eq!(ctx.git_ref, some("main"));
        assert_eq!(ctx.pipeline, None);
    }

    /// Jenkins: detected by `JENKINS_URL`, with the job name as pipeline and the stage as job.
    #[test]
    fn jenkins_context() {
        let ctx = detect_in(&[
            ("JENKINS_URL", "https://ci.acme.internal/"),
            ("JOB_NAME", "platform/api/main"),
            ("BUILD_NUMBER", "318"),
            ("STAGE_NAME", "Image"),
            ("GIT_COMMIT", "b6589fc6ab0dc82cf12099d1c2d40ab994e8410c"),
            ("GIT_BRANCH", "origin/main"),
            ("BRANCH_NAME", "main"),
        ])
        .unwrap();
        assert_eq!(
            ctx,
            CiContext {
                system: "jenkins",
                pipeline: some("platform/api/main"),
                project: None,
                run_id: some("318"),
                job: some("Image"),
                commit: some("b6589fc6ab0dc82cf12099d1c2d40ab994e8410c"),
                git_ref: some("origin/main"),
                untrusted: None,
                also_detected: Vec::new(),
            }
        );

        let ctx = detect_in(&[
            ("JENKINS_URL", "http://jenkins:8080/"),
            ("BRANCH_NAME", "PR-12"),
        ])
        .unwrap();
        assert_eq!(ctx.git_ref, some("PR-12"));
    }

    /// No marker, an empty marker, or a marker other than `true` detects nothing.
    #[test]
    fn no_ci_detected() {
        assert_eq!(detect_in(&[]), None);
        assert_eq!(
            detect_in(&[("JENKINS_URL", ""), ("GITHUB_ACTIONS", "")]),
            None
        );
        assert_eq!(
            detect_in(&[("GITLAB_CI", "false"), ("CIRCLECI", "0")]),
            None
        );
        assert_eq!(detect_in(&[("GITHUB_REPOSITORY", "acme/web")]), None);
    }

    /// When several markers are set, the first system in the documented order gives the
    /// fields, and the others are named.
    #[test]
    fn detection_order() {
        let ctx = detect_in(&[
            ("JENKINS_URL", "http://j/"),
            ("GITLAB_CI", "true"),
            ("BUILDKITE", "TRUE"),
        ])
        .unwrap();
        assert_eq!(ctx.system, "gitlab-ci");
        assert_eq!(ctx.also_detected, ["buildkite", "jenkins"]);
        let ctx = detect_in(&[("JENKINS_URL", "http://j/"), ("CIRCLECI", "true")]).unwrap();
        assert_eq!(ctx.system, "circleci");
        assert_eq!(ctx.also_detected, ["jenkins"]);
    }

    /// Another system's variables set by a pull request's job do not hide its own system's
    /// untrusted markers: GitHub's in a GitLab merge-request job, Buildkite's in a Jenkins
    /// pull-request build. Untrusted markers of a system whose marker is not set do not count.
    #[test]
    fn every_detected_system_can_mark_the_run_untrusted() {
        let ctx = detect_in(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_REPOSITORY", "acme/web"),
            ("GITHUB_WORKFLOW", "release"),
            ("GITHUB_RUN_ID", "3"),
            ("GITHUB_EVENT_NAME", "push"),
            ("GITHUB_REF_PROTECTED", "true"),
            ("GITLAB_CI", "true"),
            ("CI_PIPELINE_SOURCE", "merge_request_event"),
        ])
        .unwrap();
        assert_eq!(ctx.system, "github-actions");
        assert_eq!(ctx.pipeline, some("acme/web/release"));
        assert_eq!(
            ctx.untrusted,
            some("CI_PIPELINE_SOURCE=merge_request_event")
        );
        let ctx = detect_in(&[
            ("BUILDKITE", "true"),
            ("BUILDKITE_PULL_REQUEST", "false"),
            ("JENKINS_URL", "http://j/"),
            ("CHANGE_ID", "12"),
        ])
        .unwrap();
        assert_eq!(ctx.system, "buildkite");
        assert_eq!(ctx.untrusted, some("CHANGE_ID=12"));
        let ctx = detect_in(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_EVENT_NAME", "push"),
            ("GITHUB_REF_PROTECTED", "true"),
            ("CI_PIPELINE_SOURCE", "merge_request_event"),
        ])
        .unwrap();
        assert_eq!(ctx.untrusted, None);
    }

    /// Pull-request builds and unprotected refs are marked untrusted on every CI, naming the
    /// variable that says so; protected pushes and `BUILDKITE_PULL_REQUEST=false` are not.
    #[test]
    fn pull_requests_and_unprotected_refs_are_untrusted() {
        let untrusted = |vars: &[(&str, &str)]| detect_in(vars).unwrap().untrusted;
        type Vars<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Vars, Option<&str>)] = &[
            (
                &[
                    ("GITHUB_ACTIONS", "true"),
                    ("GITHUB_EVENT_NAME", "pull_request"),
                    ("GITHUB_REF_PROTECTED", "true"),
                ],
                Some("GITHUB_EVENT_NAME=pull_request"),
            ),
            (
                &[
                    ("GITHUB_ACTIONS", "true"),
                    ("GITHUB_EVENT_NAME", "pull_request_target"),
                ],
                Some("GITHUB_EVENT_NAME=pull_request_target"),
            ),
            (
                &[
                    ("GITHUB_ACTIONS", "true"),
                    ("GITHUB_EVENT_NAME", "push"),
                    ("GITHUB_REF_PROTECTED", "false"),
                ],
                Some("GITHUB_REF_PROTECTED=false"),
            ),
            (
                &[
                    ("GITHUB_ACTIONS", "true"),
                    ("GITHUB_EVENT_NAME", "push"),
                    ("GITHUB_REF_PROTECTED", "true"),
                ],
                None,
            ),
            (
                &[
                    ("GITLAB_CI", "true"),
                    ("CI_PIPELINE_SOURCE", "merge_request_event"),
                ],
                Some("CI_PIPELINE_SOURCE=merge_request_event"),
            ),
            (
                &[
                    ("GITLAB_CI", "true"),
                    ("CI_PIPELINE_SOURCE", "external_pull_request_event"),
                ],
                Some("CI_PIPELINE_SOURCE=external_pull_request_event"),
            ),
            (
                &[
                    ("GITLAB_CI", "true"),
                    ("CI_PIPELINE_SOURCE", "push"),
                    ("CI_COMMIT_REF_PROTECTED", "false"),
                ],
                Some("CI_COMMIT_REF_PROTECTED=false"),
            ),
            (
                &[
                    ("GITLAB_CI", "true"),
                    ("CI_PIPELINE_SOURCE", "push"),
                    ("CI_COMMIT_REF_PROTECTED", "true"),
                ],
                None,
            ),
            (
                &[("BUILDKITE", "true"), ("BUILDKITE_PULL_REQUEST", "42")],
                Some("BUILDKITE_PULL_REQUEST=42"),
            ),
            (
                &[("BUILDKITE", "true"), ("BUILDKITE_PULL_REQUEST", "false")],
                None,
            ),
            (
                &[
                    ("CIRCLECI", "true"),
                    ("CIRCLE_PULL_REQUEST", "https://github.com/a/b/pull/3"),
                ],
                Some("CIRCLE_PULL_REQUEST=https://github.com/a/b/pull/3"),
            ),
            (&[("CIRCLECI", "true")], None),
            (
                &[("JENKINS_URL", "http://j/"), ("CHANGE_ID", "12")],
                Some("CHANGE_ID=12"),
            ),
            (&[("JENKINS_URL", "http://j/")], None),
        ];
        for (vars, expected) in cases {
            assert_eq!(untrusted(vars).as_deref(), *expected, "{vars:?}");
        }
    }

    /// A GitHub or GitLab run is trusted only when its variables clearly say it is a protected
    /// push: an event left unset or empty, or a ref-protected value other than exactly `true`
    /// (unset, empty, `0`, `no`, `TRUE`, ` true`), leaves it untrusted, naming the variable.
    #[test]
    fn anything_but_a_clearly_protected_push_is_untrusted() {
        let github = |event: Option<&str>, protected: Option<&str>| {
            let mut vars = vec![("GITHUB_ACTIONS", "true")];
            vars.extend(event.map(|e| ("GITHUB_EVENT_NAME", e)));
            vars.extend(protected.map(|p| ("GITHUB_REF_PROTECTED", p)));
            detect_in(&vars).unwrap().untrusted
        };
        let gitlab = |source: Option<&str>, protected: Option<&str>| {
            let mut vars = vec![("GITLAB_CI", "true")];
            vars.extend(source.map(|e| ("CI_PIPELINE_SOURCE", e)));
            vars.extend(protected.map(|p| ("CI_COMMIT_REF_PROTECTED", p)));
            detect_in(&vars).unwrap().untrusted
        };
        for (protected, why) in [
            (None, "GITHUB_REF_PROTECTED is unset"),
            (Some(""), "GITHUB_REF_PROTECTED is empty"),
            (Some("0"), "GITHUB_REF_PROTECTED=0"),
            (Some("no"), "GITHUB_REF_PROTECTED=no"),
            (Some("TRUE"), "GITHUB_REF_PROTECTED=TRUE"),
            (Some(" true"), "GITHUB_REF_PROTECTED= true"),
            (Some("false"), "GITHUB_REF_PROTECTED=false"),
        ] {
            assert_eq!(github(Some("push"), protected), some(why), "{protected:?}");
        }
        for event in [None, Some(""), Some("  ")] {
            assert_eq!(
                github(event, Some("true")),
                some("GITHUB_EVENT_NAME is unset or empty"),
                "{event:?}"
            );
        }
        assert_eq!(github(Some("push"), Some("true")), None);
        assert_eq!(github(Some("workflow_dispatch"), Some("true")), None);
        for (protected, why) in [
            (None, "CI_COMMIT_REF_PROTECTED is unset"),
            (Some(""), "CI_COMMIT_REF_PROTECTED is empty"),
            (Some("0"), "CI_COMMIT_REF_PROTECTED=0"),
        ] {
            assert_eq!(gitlab(Some("push"), protected), some(why), "{protected:?}");
        }
        assert_eq!(
            gitlab(Some(""), Some("true")),
            some("CI_PIPELINE_SOURCE is unset or empty")
        );
        assert_eq!(gitlab(Some("schedule"), Some("true")), None);
    }
}
