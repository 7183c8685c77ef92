//! The runbooks cannot rot: every `sh` block of `runbooks/` runs against a real registry and
//! Docker Engine holding a recorded attack, and every `yaml` and `toml` block parses. The
//! files of `examples/` are what the runbooks show: the config and sweep policy load, and each
//! CI file's release and pull-request jobs run as its CI would run them (its variables, its
//! scripts in order, on two engines), and their uploads import with the trust each run earns.
//!
//! A block preceded by `<!-- not-run: reason -->` is skipped; the reason is required. The
//! placeholders the runbooks use (`$REGISTRY`, `$BUILDER`, `$INCIDENT`, ...) are set by the test.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::ok;
use crate::harness::{self, Engine};
use crate::on_both_engines;
use crate::scenarios::{FORK, Lab, WEBAPP, run_name};

const RUNBOOKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/runbooks");

/// The runbooks that must exist.
const EXPECTED: &[&str] = &[
    "README.md",
    "collector.md",
    "compromised-builder.md",
    "compromised-pipeline.md",
    "install-ci-hook.md",
    "poisoned-mount-cache.md",
    "poisoned-registry-cache.md",
    "scheduled-purges.md",
    "tamper-evidence.md",
    "verify-after-purge.md",
];

/// A fenced code block.
#[derive(Debug)]
struct Block {
    lang: String,
    text: String,
    /// The reason of a `<!-- not-run: reason -->` comment right before the fence.
    skip: Option<String>,
    /// The line of the opening fence, 1-based.
    line: usize,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = markdown.lines().enumerate();
    let mut last_text: Option<&str> = None;
    while let Some((n, line)) = lines.next() {
        let Some(lang) = line.trim_start().strip_prefix("```") else {
            if !line.trim().is_empty() {
                last_text = Some(line.trim());
            }
            continue;
        };
        let skip = last_text
            .and_then(|t| t.strip_prefix("<!-- not-run:"))
            .and_then(|t| t.strip_suffix("-->"))
            .map(|reason| reason.trim().to_owned());
        let mut text = String::new();
        for (_, body) in lines.by_ref() {
            if body.trim_start().starts_with("```") {
                break;
            }
            text.push_str(body);
            text.push('\n');
        }
        out.push(Block {
            lang: lang.trim().to_owned(),
            text,
            skip,
            line: n + 1,
        });
        last_text = None;
    }
    out
}

fn runbooks() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(RUNBOOKS)
        .expect("read runbooks/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

fn is_shell(lang: &str) -> bool {
    matches!(lang, "sh" | "bash")
}

/// Every runbook exists, every block has a known language, every skip has a reason, and every
/// YAML block (CI snippets, the CronJob) and TOML block (configs and sweep policies, checked by
/// their loaders) parses.
#[test]
fn runbook_blocks_parse() {
    let names: BTreeSet<String> = runbooks().into_iter().map(|(n, _)| n).collect();
    let expected: BTreeSet<String> = EXPECTED.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(names, expected);
    let mut yaml = 0;
    let mut toml = 0;
    for (name, text) in runbooks() {
        for block in blocks(&text) {
            let at = format!("{name}:{}", block.line);
            assert!(
                matches!(
                    block.lang.as_str(),
                    "sh" | "bash" | "yaml" | "toml" | "ini" | "text"
                ),
                "{at}: a block needs a language (sh, yaml, toml, ini or text), not `{}`",
                block.lang
            );
            if let Some(reason) = &block.skip {
                assert!(!reason.is_empty(), "{at}: `not-run` needs a reason");
                assert!(is_shell(&block.lang), "{at}: only shell blocks are skipped");
            }
            match block.lang.as_str() {
                "yaml" => {
                    let value: serde_norway::Value = serde_norway::from_str(&block.text)
                        .unwrap_or_else(|err| panic!("{at}: invalid YAML: {err}"));
                    assert!(
                        value.is_mapping(),
                        "{at}: a CI file or manifest is a mapping"
                    );
                    yaml += 1;
                }
                "toml" if block.text.contains("[[rule]]") => {
                    let config = cachewarden::config::Config::default();
                    cachewarden::sweep::policy::Policy::parse(&block.text, Path::new(&at), &config)
                        .unwrap_or_else(|err| panic!("{at}: {err}"));
                    toml += 1;
                }
                "toml" => {
                    cachewarden::config::Config::parse(&block.text, Path::new(&at))
                        .unwrap_or_else(|err| panic!("{at}: {err}"));
                    toml += 1;
                }
                _ => {}
            }
        }
    }
    assert!(yaml >= 2 && toml >= 1, "{yaml} YAML and {toml} TOML blocks");
}

/// What a runbook finds when it starts: a recorded attack on one builder.
enum Setup {
    /// `fork-pr/1` planted in the pip cache and `webapp/1` built and pushed from it.
    Attack,
    /// The same, then `incident open --pipeline fork-pr`, the purge, and a clean rebuild.
    Purged,
}

/// The scheduled audits' systemd units run one audit each, count exit 1 (findings) as success
/// and nothing else (no `-` prefix), so one audit's failure never skips another or hides itself;
/// a timer is enabled for each audit.
#[test]
fn scheduled_audit_units_run_every_audit_and_keep_failures() {
    let text = std::fs::read_to_string(Path::new(RUNBOOKS).join("scheduled-purges.md")).unwrap();
    let units: Vec<Block> = blocks(&text)
        .into_iter()
        .filter(|b| {
            b.lang == "ini"
                && b.text
                    .starts_with("# /etc/systemd/system/cachewarden-audit")
        })
        .collect();
    let service = units
        .iter()
        .find(|b| b.text.lines().next().unwrap().ends_with(".service"))
        .expect("an audit service unit");
    let exec: Vec<&str> = service
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("ExecStart="))
        .collect();
    assert_eq!(exec.len(), 1, "one audit per unit: {}", service.text);
    assert!(
        exec[0].starts_with('/') && exec[0].contains(" audit %i"),
        "no `-` prefix, the instance names the audit: {}",
        exec[0]
    );
    let success: Vec<&str> = service
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("SuccessExitStatus="))
        .collect();
    assert_eq!(success, vec!["1"], "{}", service.text);
    assert!(service.text.contains("Type=oneshot"));
    let enable = blocks(&text)
        .into_iter()
        .find(|b| b.lang == "sh" && b.text.contains("cachewarden-audit@"))
        .expect("the timers are enabled");
    for audit in ["mounts", "registry", "builds"] {
        assert!(
            enable
                .text
                .contains(&format!("cachewarden-audit@{audit}.timer")),
            "{}",
            enable.text
        );
    }
}

/// Runs every shell block of a runbook, in order, in one shell.
fn run_runbook(name: &str, setup: Setup, engine: Engine) {
    if !harness::require_skopeo() {
        return;
    }
    let Some(lab) = Lab::start_on(engine, &["ci-1"], &[]) else {
        return;
    };
    let b = "ci-1";
    let host = lab.host();
    let fork = lab.checkout("pip-plant", "fork", "", &[]);
    lab.build(b, &FORK, "1", &fork, "fork-pr:1", &[]);
    let webapp_ref = format!("{host}/webapp:1");
    let inline = ["--build-arg", "BUILDKIT_INLINE_CACHE=1"];
    let webapp = lab.pip_app("webapp", "flask-2.0.1", "");
    lab.build(b, &WEBAPP, "1", &webapp, &webapp_ref, &inline);
    lab.push(b, &WEBAPP, "1", &webapp_ref);
    let since = lab
        .runs()
        .iter()
        .find(|r| run_name(r) == "fork-pr/1")
        .map(|r| r["started_at"].as_str().unwrap().to_owned())
        .unwrap();
    let image = match setup {
        Setup::Attack => format!("{host}/web:101"),
        Setup::Purged => {
            let id = lab.open(&["--pipeline", "fork-pr"]);
            assert_eq!(id, "1");
            lab.purge(&id);
            lab.build(b, &WEBAPP, "2", &webapp, &webapp_ref, &inline);
            webapp_ref.clone()
        }
    };

    // The project a CI step would be in: a build without RUN steps needs no network.
    let project = lab.env.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("Dockerfile"),
        format!("FROM {}\nCOPY app.txt /app/\n", lab.base),
    )
    .unwrap();
    std::fs::write(project.join("app.txt"), "app\n").unwrap();
    // skopeo reads `~/.config/containers/registries.conf`; the lab's HOME is its own.
    lab.env.write(
        ".config/containers/registries.conf",
        &format!("[[registry]]\nlocation = \"{host}\"\ninsecure = true\n"),
    );
    let bin = tools(lab.env.path());

    let text = std::fs::read_to_string(Path::new(RUNBOOKS).join(name)).unwrap();
    // The runbook's sweep policy, saved where its commands expect it.
    let policy = project.join("sweep-policy.toml");
    if let Some(block) = blocks(&text)
        .into_iter()
        .find(|b| b.lang == "toml" && b.text.contains("[[rule]]"))
    {
        std::fs::write(&policy, block.text).unwrap();
    }
    let mut script = String::from("set -euo pipefail\n");
    let mut ran = 0;
    for block in blocks(&text)
        .into_iter()
        .filter(|b| is_shell(&b.lang) && b.skip.is_none())
    {
        script.push_str(&format!(
            "echo '--- {name}:{}' >&2\n{}",
            block.line, block.text
        ));
        ran += 1;
    }
    assert!(ran > 0, "{name} has no block to run");

    let dockerd = lab.dockerd(b);
    let mut bash = Command::new("bash");
    // The store, config and cleared CI variables of `cachewarden` in this lab.
    for (key, value) in lab.cw().get_envs() {
        match value {
            Some(value) => bash.env(key, value),
            None => bash.env_remove(key),
        };
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    bash.env("PATH", path)
        .env("DOCKER_HOST", dockerd.host())
        .env("DOCKER_CONFIG", dockerd.config_dir())
        .env("DOCKER_BUILDKIT", "1")
        .env("BUILDKIT_PROGRESS", "plain")
        .env("CACHEWARDEN_BUILDER", b)
        .env("REGISTRY", &host)
        .env("REPOSITORY", "webapp")
        .env("CACHE_TAG", &webapp_ref)
        .env("BUILDER", b)
        .env("MOUNT_ID", "/root/.cache/pip")
        .env("PIPELINE", "fork-pr")
        .env("SINCE", &since)
        .env("INCIDENT", "1")
        .env("PIPELINE_NAME", "web-release")
        .env("RUN_ID", "101")
        .env("IMAGE", &image)
        .env("PLANTED", "/app/site/sitecustomize.py")
        // The clean rebuild of `Setup::Purged`.
        .env("REBUILT_RUN", "webapp/2")
        .env("POLICY", &policy)
        .current_dir(&project)
        .args(["-c", &script])
        .stdin(std::process::Stdio::null());
    let out = bash.output().expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name}: a block failed ({}); the last `---` line names it\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
}

/// A directory for `PATH` where `cachewarden` is the binary under test and `docker` the
/// client the harness engine speaks with.
fn tools(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(
        assert_cmd::cargo::cargo_bin!("cachewarden"),
        bin.join("cachewarden"),
    )
    .unwrap();
    std::os::unix::fs::symlink(harness::DOCKER, bin.join("docker")).unwrap();
    bin
}

/// `runbooks/compromised-pipeline.md` runs as written.
fn compromised_pipeline_runbook(engine: Engine) {
    run_runbook("compromised-pipeline.md", Setup::Attack, engine);
}

on_both_engines!(compromised_pipeline_runbook);

/// `runbooks/poisoned-registry-cache.md` runs as written.
fn poisoned_registry_cache_runbook(engine: Engine) {
    run_runbook("poisoned-registry-cache.md", Setup::Attack, engine);
}

on_both_engines!(poisoned_registry_cache_runbook);

/// `runbooks/poisoned-mount-cache.md` runs as written.
fn poisoned_mount_cache_runbook(engine: Engine) {
    run_runbook("poisoned-mount-cache.md", Setup::Attack, engine);
}

on_both_engines!(poisoned_mount_cache_runbook);

/// `runbooks/compromised-builder.md` runs as written.
fn compromised_builder_runbook(engine: Engine) {
    run_runbook("compromised-builder.md", Setup::Attack, engine);
}

on_both_engines!(compromised_builder_runbook);

/// `runbooks/verify-after-purge.md` runs as written, after a purge and a clean rebuild.
fn verify_after_purge_runbook(engine: Engine) {
    run_runbook("verify-after-purge.md", Setup::Purged, engine);
}

on_both_engines!(verify_after_purge_runbook);

/// `runbooks/tamper-evidence.md` runs as written: heads logged, the store checked against them
/// (on one engine: the chain does not depend on it).
#[test]
fn tamper_evidence_runbook() {
    run_runbook("tamper-evidence.md", Setup::Attack, Engine::Docker20);
}

/// `runbooks/scheduled-purges.md` runs as written, with its own policy.
fn scheduled_purges_runbook(engine: Engine) {
    run_runbook("scheduled-purges.md", Setup::Attack, engine);
}

on_both_engines!(scheduled_purges_runbook);

/// `runbooks/install-ci-hook.md` runs as written: its shell step records a build and a push.
fn install_ci_hook_runbook(engine: Engine) {
    run_runbook("install-ci-hook.md", Setup::Attack, engine);
}

on_both_engines!(install_ci_hook_runbook);

/// Every runbook with shell blocks has a test above.
#[test]
fn every_runbook_with_commands_is_run() {
    let tested: BTreeSet<&str> = [
        "compromised-pipeline.md",
        "poisoned-registry-cache.md",
        "poisoned-mount-cache.md",
        "compromised-builder.md",
        "verify-after-purge.md",
        "install-ci-hook.md",
        "scheduled-purges.md",
        "tamper-evidence.md",
    ]
    .into_iter()
    .collect();
    for (name, text) in runbooks() {
        let runnable = blocks(&text)
            .iter()
            .any(|b| is_shell(&b.lang) && b.skip.is_none());
        assert_eq!(runnable, tested.contains(name.as_str()), "{name}");
    }
}

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");

/// The CI files of `examples/ci`, by name.
const CI_EXAMPLES: &[&str] = &["buildkite.yml", "github-actions.yml", "gitlab-ci.yml"];

fn example(name: &str) -> String {
    std::fs::read_to_string(Path::new(EXAMPLES).join(name))
        .unwrap_or_else(|err| panic!("examples/{name}: {err}"))
}

fn yaml(name: &str) -> serde_norway::Value {
    serde_norway::from_str(&example(name)).unwrap_or_else(|err| panic!("{name}: {err}"))
}

/// `examples/config.toml` loads as a config with a ceiling for each example CI's pipeline and
/// a non-empty scope, and `examples/sweep-policy.toml` loads under it and is the policy
/// `scheduled-purges.md` shows.
#[test]
fn example_config_and_policy_load() {
    let path = Path::new(EXAMPLES).join("config.toml");
    let config = cachewarden::config::Config::parse(&example("config.toml"), &path)
        .unwrap_or_else(|err| panic!("{err}"));
    let ceilings: BTreeSet<(String, String)> = config
        .pipelines
        .iter()
        .filter_map(|p| Some((p.name.clone()?, p.trust_level.clone()?)))
        .collect();
    for pipeline in ["acme/web/images", "acme/web", "web-images"] {
        assert!(
            ceilings.contains(&(pipeline.to_owned(), "release".to_owned())),
            "{pipeline}: {ceilings:?}"
        );
    }
    assert!(!config.scope.registries.is_empty() && !config.scope.builders.is_empty());
    let policy = example("sweep-policy.toml");
    cachewarden::sweep::policy::Policy::parse(
        &policy,
        &Path::new(EXAMPLES).join("sweep-policy.toml"),
        &config,
    )
    .unwrap_or_else(|err| panic!("{err}"));
    let runbook = std::fs::read_to_string(Path::new(RUNBOOKS).join("scheduled-purges.md")).unwrap();
    let shown = blocks(&runbook)
        .into_iter()
        .find(|b| b.lang == "toml" && b.text.contains("[[rule]]"))
        .unwrap();
    assert_eq!(
        policy, shown.text,
        "scheduled-purges.md shows the example policy"
    );
}

/// Every YAML block of `install-ci-hook.md` is one of `examples/ci` whole, each of them is
/// shown, and so is `examples/config.toml`: what the runbook shows is what the tests run.
#[test]
fn ci_snippets_are_the_examples() {
    let text = std::fs::read_to_string(Path::new(RUNBOOKS).join("install-ci-hook.md")).unwrap();
    let shown: Vec<String> = blocks(&text)
        .into_iter()
        .filter(|b| b.lang == "yaml")
        .map(|b| b.text)
        .collect();
    let files: BTreeSet<String> = std::fs::read_dir(Path::new(EXAMPLES).join("ci"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, CI_EXAMPLES.iter().map(|s| (*s).to_owned()).collect());
    for name in CI_EXAMPLES {
        let file = example(&format!("ci/{name}"));
        assert!(
            shown.contains(&file),
            "install-ci-hook.md does not show examples/ci/{name} as it is"
        );
    }
    assert_eq!(shown.len(), CI_EXAMPLES.len());
    let config = example("config.toml");
    assert!(
        blocks(&text)
            .iter()
            .any(|b| b.lang == "toml" && b.text == config),
        "install-ci-hook.md does not show examples/config.toml as it is"
    );
}

/// One CI job as the test runs it: its environment and its scripts, each in a shell of its own
/// (a later one runs whatever the earlier ones did, like `after_script` and `if: always()`).
struct CiJob {
    name: &'static str,
    /// The CI's own variables for this event, then the file's, with `overrides` applied.
    env: Vec<(String, String)>,
    /// Each script with the variables of its own step.
    scripts: Vec<(Vec<(String, String)>, String)>,
    /// Where the job leaves what it uploads, relative to its directory.
    artifact: String,
    /// The engine the job's runner builds on.
    builder: &'static str,
}

/// CI variables as the job builders take them.
fn owned(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl CiJob {
    /// The values the CI file's variables take in the test: lab paths for host paths, the lab
    /// registry, the test binary for a download. Every variable that is still an expression
    /// must be overridden, and every override must name a variable of the file.
    fn overridden(mut self, overrides: &[(&str, String)]) -> Self {
        let mut used = BTreeSet::new();
        let envs = std::iter::once(&mut self.env).chain(self.scripts.iter_mut().map(|(e, _)| e));
        for env in envs {
            for (key, value) in env.iter_mut() {
                if let Some((_, v)) = overrides.iter().find(|(k, _)| k == key) {
                    *value = v.clone();
                    used.insert(key.clone());
                }
                assert!(
                    !value.contains("${{"),
                    "{}: {key} is not set by the test",
                    self.name
                );
            }
        }
        for (key, _) in overrides {
            assert!(used.contains(*key), "{}: no variable {key}", self.name);
        }
        self
    }
}

fn map_pairs(value: &serde_norway::Value) -> Vec<(String, String)> {
    value
        .as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = match v {
                        serde_norway::Value::String(s) => s.clone(),
                        other => serde_norway::to_string(other).unwrap().trim().to_owned(),
                    };
                    (k.as_str().unwrap().to_owned(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn str_list(value: &serde_norway::Value) -> Vec<String> {
    match value {
        serde_norway::Value::String(s) => vec![s.clone()],
        serde_norway::Value::Sequence(items) => items
            .iter()
            .map(|i| i.as_str().unwrap().to_owned())
            .collect(),
        _ => Vec::new(),
    }
}

/// The GitHub Actions job `job` as the runner runs it for an event: `uses:` steps are the
/// actions the runner provides (the upload's `path` is the artifact); `${{ runner.temp }}` is
/// the one expression filled in, any other in an environment value must be overridden, and no
/// `run:` script holds one (an expression in a script is a script injection).
fn github_job(
    doc: &serde_norway::Value,
    job: &'static str,
    condition: &str,
    ci: Vec<(String, String)>,
    builder: &'static str,
    runner_temp: &Path,
) -> CiJob {
    let spec = &doc["jobs"][job];
    assert_eq!(spec["if"].as_str(), Some(condition), "jobs.{job}.if");
    let temp = runner_temp.display().to_string();
    let fill = |s: &str| s.replace("${{ runner.temp }}", &temp);
    let mut env = ci;
    env.extend(map_pairs(&doc["env"]));
    env.extend(map_pairs(&spec["env"]));
    let mut scripts = Vec::new();
    let mut artifact = None;
    for step in spec["steps"].as_sequence().unwrap() {
        if let Some(action) = step["uses"].as_str() {
            if action.starts_with("actions/upload-artifact@") {
                assert_eq!(
                    step["if"].as_str(),
                    Some("always()"),
                    "{job}: upload always"
                );
                artifact = Some(fill(step["with"]["path"].as_str().unwrap()));
            }
            continue;
        }
        let run = step["run"].as_str().expect("a step runs or uses");
        assert!(
            !run.contains("${{"),
            "{job}: an expression in a script: {run}"
        );
        assert!(
            matches!(step["if"].as_str(), None | Some("always()")),
            "{job}: a step condition the test does not evaluate"
        );
        let step_env = map_pairs(&step["env"])
            .into_iter()
            .map(|(k, v)| (k, fill(&v)))
            .collect();
        scripts.push((step_env, run.to_owned()));
    }
    for (_, value) in env.iter_mut() {
        *value = fill(value);
    }
    CiJob {
        name: job,
        env,
        scripts,
        artifact: artifact.expect("the job uploads its provenance"),
        builder,
    }
}

/// The GitLab CI job `job` for a pipeline whose first rule is `rule`: `extends` merged, the
/// `script` lines in one shell and `after_script` in another, as the runner runs them.
fn gitlab_job(
    doc: &serde_norway::Value,
    job: &'static str,
    rule: &str,
    ci: Vec<(String, String)>,
    builder: &'static str,
) -> CiJob {
    let spec = &doc[job];
    let base = spec["extends"]
        .as_str()
        .map(|name| doc[name].clone())
        .unwrap_or(serde_norway::Value::Null);
    let get = |key: &str| {
        if spec[key].is_null() {
            base[key].clone()
        } else {
            spec[key].clone()
        }
    };
    assert_eq!(get("rules")[0]["if"].as_str(), Some(rule), "{job}.rules");
    let mut env = ci;
    env.extend(map_pairs(&doc["variables"]));
    env.extend(map_pairs(&get("variables")));
    let artifacts = get("artifacts");
    assert_eq!(
        artifacts["when"].as_str(),
        Some("always"),
        "{job}: artifacts"
    );
    CiJob {
        name: job,
        env,
        scripts: vec![
            (Vec::new(), str_list(&get("script")).join("\n")),
            (Vec::new(), str_list(&get("after_script")).join("\n")),
        ],
        artifact: artifacts["paths"][0].as_str().unwrap().to_owned(),
        builder,
    }
}

/// The Buildkite step `key`: its command after `pipeline upload` (every `$` written `$$`, so
/// the step's own variables are read when it runs, not the upload's).
fn buildkite_step(
    doc: &serde_norway::Value,
    key: &'static str,
    condition: &str,
    ci: Vec<(String, String)>,
    builder: &'static str,
) -> CiJob {
    let spec = doc["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| s["key"].as_str() == Some(key))
        .unwrap();
    assert_eq!(spec["if"].as_str(), Some(condition), "{key}.if");
    let command = str_list(&spec["command"]).join("\n");
    assert_eq!(
        command.matches('$').count(),
        2 * command.matches("$$").count(),
        "{key}: a `$` that `pipeline upload` would fill in"
    );
    let mut env = ci;
    env.extend(map_pairs(&doc["env"]));
    env.extend(map_pairs(&spec["env"]));
    CiJob {
        name: key,
        env,
        scripts: vec![(Vec::new(), command.replace("$$", "$"))],
        artifact: spec["artifact_paths"].as_str().unwrap().to_owned(),
        builder,
    }
}

/// Runs the jobs in order, each in a checkout of its own on its builder's engine, and returns
/// the provenance each uploaded.
fn run_ci_jobs(lab: &Lab, jobs: &[CiJob]) -> Vec<PathBuf> {
    let bin = tools(lab.env.path());
    let mut uploads = Vec::new();
    for (n, job) in jobs.iter().enumerate() {
        let dir = lab.env.path().join(format!("job-{n}-{}", job.name));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("Dockerfile"),
            format!("FROM {}\nCOPY app.txt /app/\n", lab.base),
        )
        .unwrap();
        std::fs::write(dir.join("app.txt"), format!("{}\n", job.name)).unwrap();
        let github_path = dir.join(".github_path");
        let dockerd = lab.dockerd(job.builder);
        let mut path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        for (i, (step_env, script)) in job.scripts.iter().enumerate() {
            let mut bash = Command::new("bash");
            bash.env_clear();
            for key in ["HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "NO_COLOR"] {
                if let Some((_, Some(value))) =
                    lab.cw().get_envs().find(|(k, _)| k.to_str() == Some(key))
                {
                    bash.env(key, value);
                }
            }
            bash.env("PATH", &path)
                .env("DOCKER_HOST", dockerd.host())
                .env("DOCKER_CONFIG", dockerd.config_dir())
                .env("BUILDKIT_PROGRESS", "plain")
                .env("CACHEWARDEN_NO_PROGRESS", "1")
                .env("GITHUB_PATH", &github_path)
                .envs(job.env.iter().map(|(k, v)| (k, v)))
                .envs(step_env.iter().map(|(k, v)| (k, v)))
                .current_dir(&dir)
                .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script])
                .stdin(std::process::Stdio::null());
            let out = bash.output().expect("run bash");
            assert!(
                out.status.success(),
                "{} script {i} failed ({})\n{script}\n--- stdout\n{}\n--- stderr\n{}",
                job.name,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // What a step appends to `$GITHUB_PATH` is on the next steps' PATH.
            if let Ok(added) = std::fs::read_to_string(&github_path) {
                for line in added.lines().filter(|l| !l.is_empty()) {
                    path = format!("{line}:{path}");
                }
                std::fs::remove_file(&github_path).unwrap();
            }
        }
        let upload = dir.join(&job.artifact);
        assert!(upload.exists(), "{}: no {}", job.name, upload.display());
        uploads.push(upload);
    }
    uploads
}

/// What the responders' store holds after importing the uploads (the release job's, then the
/// untrusted job's, which is imported first): the release run at
/// `release` on `release-1`, the untrusted run at `untrusted` on another builder, and a trace
/// of the untrusted run that reaches no release run: the untrusted build shared no builder
/// and wrote nothing to `release_repo`, the release cache's repository.
fn check_imported(
    lab: &Lab,
    uploads: &[PathBuf],
    release: &str,
    untrusted: &str,
    release_repo: &str,
) {
    let db = lab.env.path().join("responders.db");
    // The responders' config names the pipelines' ceilings, so the order of the uploads does
    // not matter: the untrusted one, imported first, does not set the pipeline's ceiling.
    let config = release_config(lab);
    let cw = || {
        let mut cmd = lab.cw();
        cmd.env("CACHEWARDEN_DB", &db)
            .env("CACHEWARDEN_CONFIG", &config);
        cmd
    };
    // The untrusted job's upload, which its own code could have written, capped as the
    // runbook says.
    ok(cw()
        .args(["import", "--trust-level", "untrusted", "--run", untrusted])
        .arg(&uploads[1]));
    ok(cw().arg("import").arg(&uploads[0]));
    let runs: Vec<serde_json::Value> = ok(cw().arg("export"))
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "run")
        .collect();
    let find = |name: &str| {
        runs.iter()
            .find(|r| run_name(r) == name)
            .unwrap_or_else(|| panic!("no run {name} in {runs:#?}"))
    };
    let (r, u) = (find(release), find(untrusted));
    assert_eq!(r["trust_level"], "release", "{r}");
    assert_eq!(r["builder"], "release-1", "{r}");
    assert_eq!(u["trust_level"], "untrusted", "{u}");
    assert_ne!(u["builder"], r["builder"], "{u}");
    assert!(
        r["exported"]
            .to_string()
            .contains(&format!("{release_repo}:cache@")),
        "{r}"
    );
    for written in ["exported", "produced"] {
        for reference in u[written].as_array().into_iter().flatten() {
            let reference = reference.as_str().unwrap_or_default();
            assert!(
                !reference.starts_with(&format!("{release_repo}:"))
                    && !reference.starts_with(&format!("{release_repo}@")),
                "the untrusted run wrote {reference}"
            );
        }
    }
    let trace: serde_json::Value = serde_json::from_str(&ok(
        cw().args(["trace", "--format", "json", "--run", untrusted])
    ))
    .unwrap();
    let tainted: BTreeSet<String> = trace["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(run_name)
        .collect();
    assert_eq!(tainted, BTreeSet::from([untrusted.to_owned()]), "{trace:#}");
}

/// The lab's config with the example pipelines' ceilings, as on the release runner.
fn release_config(lab: &Lab) -> PathBuf {
    let mut text = std::fs::read_to_string(&lab.config).unwrap();
    for name in ["acme/web/images", "acme/web", "web-images"] {
        text.push_str(&format!(
            "\n[[pipeline]]\nname = \"{name}\"\ntrust_level = \"release\"\n"
        ));
    }
    lab.env.write("release-config.toml", &text)
}

const SHA: &str = "3f1c2b9d0e8a7f6b5c4d3e2f1a0b9c8d7e6f5a4b";

/// `examples/ci/github-actions.yml` runs as written: a push to main builds and pushes on the
/// release runner, a pull request installs the binary on a hosted runner and builds from the
/// release cache on its own builder, and both uploads import into the responders' store with
/// the trust GitHub's environment gives them.
fn ci_snippets_github_actions(engine: Engine) {
    let Some(lab) = Lab::start_on(engine, &["release-1", "untrusted-1"], &[]) else {
        return;
    };
    let doc = yaml("ci/github-actions.yml");
    assert_eq!(doc["name"].as_str(), Some("images"));
    assert_eq!(doc["permissions"]["contents"].as_str(), Some("read"));
    let host = lab.host();
    let binary = assert_cmd::cargo::cargo_bin!("cachewarden");
    let sha256 = {
        use sha2::Digest as _;
        let bytes = std::fs::read(binary).unwrap();
        format!("{:x}", sha2::Sha256::digest(&bytes))
    };
    let temp = |name: &str| {
        let dir = lab.env.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    };
    let common = [
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_REPOSITORY", "acme/web"),
        ("GITHUB_WORKFLOW", "images"),
        ("GITHUB_RUN_ATTEMPT", "1"),
        ("GITHUB_SHA", SHA),
    ];
    let push: Vec<(&str, &str)> = common
        .iter()
        .copied()
        .chain([
            ("GITHUB_EVENT_NAME", "push"),
            ("GITHUB_REF", "refs/heads/main"),
            ("GITHUB_REF_PROTECTED", "true"),
            ("GITHUB_RUN_ID", "1001"),
            ("GITHUB_JOB", "release"),
        ])
        .collect();
    let pull_request: Vec<(&str, &str)> = common
        .iter()
        .copied()
        .chain([
            ("GITHUB_EVENT_NAME", "pull_request"),
            ("GITHUB_REF", "refs/pull/7/merge"),
            ("GITHUB_RUN_ID", "1002"),
            ("GITHUB_JOB", "pull-request"),
        ])
        .collect();
    let release_temp = temp("release-temp");
    let pr_temp = temp("pr-temp");
    let mut release_env = push.clone();
    let release_temp_s = release_temp.display().to_string();
    release_env.push(("RUNNER_TEMP", &release_temp_s));
    let pr_temp_s = pr_temp.display().to_string();
    let mut pr_env = pull_request.clone();
    pr_env.push(("RUNNER_TEMP", &pr_temp_s));
    let image = format!("{host}/acme/web");
    let jobs = [
        github_job(
            &doc,
            "release",
            "github.event_name == 'push' && github.ref == 'refs/heads/main'",
            owned(&release_env),
            "release-1",
            &release_temp,
        )
        .overridden(&[
            ("REGISTRY", host.clone()),
            ("IMAGE", image.clone()),
            (
                "CACHEWARDEN_CONFIG",
                release_config(&lab).display().to_string(),
            ),
            (
                "CACHEWARDEN_DB",
                lab.env.path().join("release-host.db").display().to_string(),
            ),
            ("REGISTRY_USER", "ci".to_owned()),
            ("REGISTRY_PASSWORD", "secret".to_owned()),
        ]),
        github_job(
            &doc,
            "pull-request",
            "github.event_name == 'pull_request'",
            owned(&pr_env),
            "untrusted-1",
            &pr_temp,
        )
        .overridden(&[
            ("REGISTRY", host.clone()),
            ("IMAGE", image.clone()),
            ("CACHEWARDEN_URL", format!("file://{}", binary.display())),
            ("CACHEWARDEN_SHA256", sha256),
        ]),
    ];
    let uploads = run_ci_jobs(&lab, &jobs);
    check_imported(
        &lab,
        &uploads,
        "acme/web/images/1001-1",
        "acme/web/images/1002-1",
        &image,
    );
}

on_both_engines!(ci_snippets_github_actions);

/// `examples/ci/gitlab-ci.yml` runs as written: the default branch builds and pushes the
/// release cache on the release runner, a merge request builds on its own runner into its own
/// cache ref, each uploads its run (the pipeline id with the job id), and both import with
/// the trust GitLab's environment gives them.
fn ci_snippets_gitlab_ci(engine: Engine) {
    let Some(lab) = Lab::start_on(engine, &["release-1", "untrusted-1"], &[]) else {
        return;
    };
    let doc = yaml("ci/gitlab-ci.yml");
    let host = lab.host();
    let registry_image = format!("{host}/acme/web");
    let common = |job: &'static str, id: &'static str| -> Vec<(&'static str, String)> {
        vec![
            ("GITLAB_CI", "true".into()),
            ("CI_PROJECT_PATH", "acme/web".into()),
            (
                "CI_PIPELINE_ID",
                if job == "release" { "501" } else { "502" }.into(),
            ),
            ("CI_JOB_ID", id.into()),
            ("CI_JOB_NAME", job.into()),
            ("CI_COMMIT_SHA", SHA.into()),
            ("CI_COMMIT_SHORT_SHA", SHA[..8].into()),
            ("CI_DEFAULT_BRANCH", "main".into()),
            ("CI_REGISTRY", host.clone()),
            ("CI_REGISTRY_IMAGE", registry_image.clone()),
            ("CI_REGISTRY_USER", "gitlab-ci-token".into()),
            ("CI_REGISTRY_PASSWORD", "job-token".into()),
        ]
    };
    let mut release_env = common("release", "9001");
    release_env.extend([
        ("CI_PIPELINE_SOURCE", "push".to_owned()),
        ("CI_COMMIT_BRANCH", "main".to_owned()),
        ("CI_COMMIT_REF_NAME", "main".to_owned()),
        ("CI_COMMIT_REF_PROTECTED", "true".to_owned()),
        ("RELEASE_REGISTRY_USER", "deploy".to_owned()),
        ("RELEASE_REGISTRY_PASSWORD", "deploy-token".to_owned()),
    ]);
    let mut mr_env = common("merge-request", "9002");
    mr_env.extend([
        ("CI_PIPELINE_SOURCE", "merge_request_event".to_owned()),
        ("CI_COMMIT_REF_NAME", "feature".to_owned()),
        ("CI_COMMIT_REF_PROTECTED", "false".to_owned()),
    ]);
    let as_refs = |v: &[(&'static str, String)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    };
    let mut jobs = Vec::new();
    for (job, rule, env, builder) in [
        (
            "release",
            "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH && $CI_COMMIT_REF_PROTECTED == \"true\"",
            &release_env,
            "release-1",
        ),
        (
            "merge-request",
            "$CI_PIPELINE_SOURCE == \"merge_request_event\"",
            &mr_env,
            "untrusted-1",
        ),
    ] {
        let ci = gitlab_job(&doc, job, rule, as_refs(env), builder);
        let mut overrides = vec![("RELEASE_IMAGE", format!("{host}/acme/web-release"))];
        if job == "release" {
            overrides.push((
                "CACHEWARDEN_CONFIG",
                release_config(&lab).display().to_string(),
            ));
        }
        jobs.push(ci.overridden(&overrides));
    }
    let uploads = run_ci_jobs(&lab, &jobs);
    check_imported(
        &lab,
        &uploads,
        "acme/web/501-9001",
        "acme/web/502-9002",
        &format!("{host}/acme/web-release"),
    );
}

on_both_engines!(ci_snippets_gitlab_ci);

/// `examples/ci/buildkite.yml` runs as written: a build of main builds and pushes the release
/// cache on the release queue, a pull request builds on the untrusted queue into its own cache
/// ref, and both import with the trust Buildkite's environment gives them.
fn ci_snippets_buildkite(engine: Engine) {
    let Some(lab) = Lab::start_on(engine, &["release-1", "untrusted-1"], &[]) else {
        return;
    };
    let doc = yaml("ci/buildkite.yml");
    let host = lab.host();
    let common = [
        ("BUILDKITE", "true"),
        ("BUILDKITE_PIPELINE_SLUG", "web-images"),
        ("BUILDKITE_RETRY_COUNT", "0"),
        ("BUILDKITE_COMMIT", SHA),
    ];
    let release: Vec<(&str, &str)> = common
        .iter()
        .copied()
        .chain([
            ("BUILDKITE_BUILD_NUMBER", "71"),
            ("BUILDKITE_STEP_KEY", "release"),
            ("BUILDKITE_BRANCH", "main"),
            ("BUILDKITE_PULL_REQUEST", "false"),
        ])
        .collect();
    let pull_request: Vec<(&str, &str)> = common
        .iter()
        .copied()
        .chain([
            ("BUILDKITE_BUILD_NUMBER", "72"),
            ("BUILDKITE_STEP_KEY", "pull-request"),
            ("BUILDKITE_BRANCH", "feature"),
            ("BUILDKITE_PULL_REQUEST", "7"),
        ])
        .collect();
    let image = format!("{host}/acme/web");
    let jobs = [
        buildkite_step(
            &doc,
            "release",
            "build.branch == pipeline.default_branch && build.pull_request.id == null",
            owned(&release),
            "release-1",
        )
        .overridden(&[
            ("IMAGE", image.clone()),
            (
                "CACHEWARDEN_CONFIG",
                release_config(&lab).display().to_string(),
            ),
        ]),
        buildkite_step(
            &doc,
            "pull-request",
            "build.pull_request.id != null",
            owned(&pull_request),
            "untrusted-1",
        )
        .overridden(&[("IMAGE", image.clone())]),
    ];
    let uploads = run_ci_jobs(&lab, &jobs);
    check_imported(&lab, &uploads, "web-images/71-0", "web-images/72-0", &image);
}

on_both_engines!(ci_snippets_buildkite);

/// Every relative link of the README (to runbooks, examples and schemas) names a file or
/// directory that exists.
#[test]
fn readme_links_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut checked = 0;
    for (at, _) in readme.match_indices("](") {
        let target = &readme[at + 2..];
        let target = &target[..target.find(')').unwrap()];
        if target.contains("://") || target.starts_with('#') {
            continue;
        }
        let path = target.split('#').next().unwrap();
        assert!(root.join(path).exists(), "README.md links to `{target}`");
        checked += 1;
    }
    assert!(checked >= 5, "{checked} links");
}
