//! The runbooks cannot rot: every `sh` block of `runbooks/` runs against a real registry and
//! Docker Engine holding a recorded attack, and every `yaml` and `toml` block parses.
//!
//! A block preceded by `<!-- not-run: reason -->` is skipped; the reason is required. The
//! placeholders the runbooks use (`$REGISTRY`, `$BUILDER`, `$INCIDENT`, ...) are set by the test.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness;
use crate::scenarios::{FORK, Lab, WEBAPP, run_name};

const RUNBOOKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/runbooks");

/// The runbooks that must exist.
const EXPECTED: &[&str] = &[
    "README.md",
    "compromised-builder.md",
    "compromised-pipeline.md",
    "install-ci-hook.md",
    "poisoned-mount-cache.md",
    "poisoned-registry-cache.md",
    "scheduled-purges.md",
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

/// Runs every shell block of a runbook, in order, in one shell.
fn run_runbook(name: &str, setup: Setup) {
    if !harness::require_skopeo() {
        return;
    }
    let Some(lab) = Lab::start(&["ci-1"], &[]) else {
        return;
    };
    let b = "ci-1";
    let host = lab.host();
    let fork = lab.checkout("pip-plant", "fork", "", &[]);
    lab.build(b, &FORK, "1", &fork, "fork-pr:1", &[]);
    let webapp_ref = format!("{host}/webapp:1");
    let inline = ["--build-arg", "BUILDKIT_INLINE_CACHE=1"];
    let webapp = lab.checkout(
        "pip-app",
        "webapp",
        "",
        &[("requirements.txt", "flask-2.0.1\n")],
    );
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
#[test]
fn compromised_pipeline_runbook() {
    run_runbook("compromised-pipeline.md", Setup::Attack);
}

/// `runbooks/poisoned-registry-cache.md` runs as written.
#[test]
fn poisoned_registry_cache_runbook() {
    run_runbook("poisoned-registry-cache.md", Setup::Attack);
}

/// `runbooks/poisoned-mount-cache.md` runs as written.
#[test]
fn poisoned_mount_cache_runbook() {
    run_runbook("poisoned-mount-cache.md", Setup::Attack);
}

/// `runbooks/compromised-builder.md` runs as written.
#[test]
fn compromised_builder_runbook() {
    run_runbook("compromised-builder.md", Setup::Attack);
}

/// `runbooks/verify-after-purge.md` runs as written, after a purge and a clean rebuild.
#[test]
fn verify_after_purge_runbook() {
    run_runbook("verify-after-purge.md", Setup::Purged);
}

/// `runbooks/scheduled-purges.md` runs as written, with its own policy.
#[test]
fn scheduled_purges_runbook() {
    run_runbook("scheduled-purges.md", Setup::Attack);
}

/// `runbooks/install-ci-hook.md` runs as written: its shell step records a build and a push.
#[test]
fn install_ci_hook_runbook() {
    run_runbook("install-ci-hook.md", Setup::Attack);
}

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
