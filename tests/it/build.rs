//! Builders for the two things most tests set up first: a recorded history (provenance lines,
//! imported as CI hooks would send them) and a config file.

use std::path::PathBuf;

use serde_json::{Map, Value, json};

use crate::common::{Env, ok};

/// The time a run starts at unless told otherwise.
const START: &str = "2026-01-01T00:00:00Z";
/// The time it finishes at unless told otherwise: a minute later.
const FINISH: &str = "2026-01-01T00:01:00Z";

/// One run step as a `type: run` provenance line.
#[derive(Clone)]
pub struct Run(Map<String, Value>);

impl Run {
    /// Step `s` of run `run` of `pipeline`, from 2026-01-01T00:00 to 00:01.
    pub fn new(pipeline: &str, run: impl ToString) -> Self {
        let mut line = Map::new();
        line.insert("v".into(), json!(1));
        line.insert("type".into(), json!("run"));
        line.insert("pipeline".into(), json!(pipeline));
        line.insert("run".into(), json!(run.to_string()));
        line.insert("step".into(), json!("s"));
        line.insert("started_at".into(), json!(START));
        line.insert("finished_at".into(), json!(FINISH));
        Self(line)
    }

    fn set(mut self, key: &str, value: Value) -> Self {
        self.0.insert(key.into(), value);
        self
    }

    pub fn step(self, step: &str) -> Self {
        self.set("step", json!(step))
    }

    /// Started and finished at `at`.
    pub fn at(self, at: &str) -> Self {
        self.set("started_at", json!(at))
            .set("finished_at", json!(at))
    }

    /// From 00:00 to 00:01 on day `day` of January 2026.
    pub fn day(self, day: u32) -> Self {
        self.set("started_at", json!(format!("2026-01-{day:02}T00:00:00Z")))
            .set("finished_at", json!(format!("2026-01-{day:02}T00:01:00Z")))
    }

    /// Started and finished `days` days before now.
    pub fn days_ago(self, days: i64) -> Self {
        let at = (chrono::Utc::now() - chrono::Duration::days(days))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        self.at(&at)
    }

    pub fn trust(self, level: &str) -> Self {
        self.set("trust_level", json!(level))
    }

    pub fn project(self, project: &str) -> Self {
        self.set("project", json!(project))
    }

    pub fn builder(self, builder: &str) -> Self {
        self.set("builder", json!(builder))
    }

    /// Cache refs the step imported: `host/repo:tag@digest` strings or locator objects.
    pub fn imported<T: Into<Value>>(self, refs: impl IntoIterator<Item = T>) -> Self {
        self.set("imported", list(refs))
    }

    /// Cache refs the step exported: `host/repo:tag@digest` strings or locator objects.
    pub fn exported<T: Into<Value>>(self, refs: impl IntoIterator<Item = T>) -> Self {
        self.set("exported", list(refs))
    }

    /// Images the step produced: references or locator objects.
    pub fn produced<T: Into<Value>>(self, refs: impl IntoIterator<Item = T>) -> Self {
        self.set("produced", list(refs))
    }

    /// Images the step built from (`FROM`): references or locator objects.
    pub fn base_images<T: Into<Value>>(self, refs: impl IntoIterator<Item = T>) -> Self {
        self.set("base_images", list(refs))
    }

    /// A cache mount whose id is its target.
    pub fn mount(self, target: &str) -> Self {
        self.set("mounts", json!([{ "id": target, "target": target }]))
    }

    /// A cache mount `id` at `target` under `BUILDKIT_CACHE_MOUNT_NS=namespace`.
    pub fn namespaced_mount(self, namespace: &str, id: &str, target: &str) -> Self {
        self.set(
            "mounts",
            json!([{ "id": id, "namespace": namespace, "target": target }]),
        )
    }

    /// A builder record the step created.
    pub fn created_record(self, id: &str, kind: &str, size: i64) -> Self {
        self.set(
            "records",
            json!({ "created": [{ "id": id, "type": kind, "size": size }] }),
        )
    }

    /// A regular builder record the step created, described as a Dockerfile step's layer.
    pub fn created_layer(self, id: &str, description: &str) -> Self {
        let record = json!({ "id": id, "type": "regular", "description": description });
        self.set("records", json!({ "created": [record], "reused": [] }))
    }

    /// A regular builder record the step reused (record evidence that it created none).
    pub fn reused_record(self, id: &str, description: &str) -> Self {
        let record = json!({ "id": id, "type": "regular", "description": description });
        self.set("records", json!({ "created": [], "reused": [record] }))
    }

    /// The provenance line.
    pub fn line(&self) -> String {
        Value::Object(self.0.clone()).to_string()
    }
}

fn list<T: Into<Value>>(items: impl IntoIterator<Item = T>) -> Value {
    Value::Array(items.into_iter().map(Into::into).collect())
}

/// Runs written as provenance lines and imported, as CI hooks send them.
#[derive(Default)]
pub struct History {
    runs: Vec<Run>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn run(mut self, run: Run) -> Self {
        self.runs.push(run);
        self
    }

    pub fn runs(mut self, runs: impl IntoIterator<Item = Run>) -> Self {
        self.runs.extend(runs);
        self
    }

    /// The provenance lines, one a run, each ending in a newline.
    pub fn lines(&self) -> String {
        self.runs.iter().map(|r| r.line() + "\n").collect()
    }

    /// Writes the lines to `history.jsonl` and imports them.
    pub fn import(&self, env: &Env) {
        self.import_as(env, "history.jsonl");
    }

    /// Writes the lines to `name` and imports them.
    pub fn import_as(&self, env: &Env, name: &str) {
        let file = env.write(name, &self.lines());
        ok(env.cmd().args(["import", file.to_str().unwrap()]));
    }
}

/// A `[[registry]]` entry: insecure (plain HTTP on loopback), anonymous unless told otherwise.
struct RegistryEntry {
    host: String,
    endpoint: Option<String>,
    repositories: Vec<String>,
}

/// A `[[pipeline]]` entry, by name or by pattern.
#[derive(Default)]
pub struct Pipeline {
    name: Option<String>,
    pattern: Option<String>,
    project: Option<String>,
    trust_level: Option<String>,
    on_unavailable: Option<String>,
}

impl Pipeline {
    pub fn named(name: &str) -> Self {
        Self {
            name: Some(name.to_owned()),
            ..Self::default()
        }
    }

    pub fn pattern(pattern: &str) -> Self {
        Self {
            pattern: Some(pattern.to_owned()),
            ..Self::default()
        }
    }

    pub fn project(mut self, project: &str) -> Self {
        self.project = Some(project.to_owned());
        self
    }

    pub fn trust(mut self, level: &str) -> Self {
        self.trust_level = Some(level.to_owned());
        self
    }

    pub fn on_unavailable(mut self, policy: &str) -> Self {
        self.on_unavailable = Some(policy.to_owned());
        self
    }

    fn text(&self) -> String {
        let fields = [
            ("name", &self.name),
            ("pattern", &self.pattern),
            ("project", &self.project),
            ("trust_level", &self.trust_level),
            ("on_unavailable", &self.on_unavailable),
        ];
        let mut text = "[[pipeline]]\n".to_owned();
        for (key, value) in fields {
            if let Some(value) = value {
                text.push_str(&format!("{key} = \"{value}\"\n"));
            }
        }
        text
    }
}

/// A config file: the purge scope, registries, builders, containment and pipelines.
#[derive(Default)]
pub struct ConfigBuilder {
    scope_registries: Vec<String>,
    scope_repositories: Vec<String>,
    scope_builders: Option<Vec<String>>,
    registries: Vec<RegistryEntry>,
    builders: Vec<(String, String)>,
    on_unavailable: Option<String>,
    pipelines: Vec<Pipeline>,
}

impl ConfigBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// `host` in the scope and as an anonymous, insecure registry: what most tests start from.
    pub fn registry(host: &str) -> Self {
        Self::new().scope_registries([host]).with_registry(host)
    }

    /// Registries the purge may act on.
    pub fn scope_registries<S: ToString>(mut self, hosts: impl IntoIterator<Item = S>) -> Self {
        self.scope_registries = hosts.into_iter().map(|h| h.to_string()).collect();
        self
    }

    /// Repository patterns the purge may act on.
    pub fn scope_repositories<S: ToString>(
        mut self,
        patterns: impl IntoIterator<Item = S>,
    ) -> Self {
        self.scope_repositories = patterns.into_iter().map(|p| p.to_string()).collect();
        self
    }

    /// Builders the purge may act on.
    pub fn scope_builders<S: ToString>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.scope_builders = Some(names.into_iter().map(|n| n.to_string()).collect());
        self
    }

    /// An anonymous, insecure `[[registry]]` for `host`.
    pub fn with_registry(mut self, host: &str) -> Self {
        self.registries.push(RegistryEntry {
            host: host.to_owned(),
            endpoint: None,
            repositories: Vec::new(),
        });
        self
    }

    /// Reaches the last registry added through `endpoint` (a proxy, or nothing at all).
    pub fn endpoint(mut self, endpoint: &str) -> Self {
        self.registries
            .last_mut()
            .expect("a registry to give the endpoint to")
            .endpoint = Some(endpoint.to_owned());
        self
    }

    /// The repositories `audit registry` lists on the last registry added.
    pub fn repositories<S: ToString>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.registries
            .last_mut()
            .expect("a registry to give the repositories to")
            .repositories = names.into_iter().map(|n| n.to_string()).collect();
        self
    }

    /// A `[[builder]]` on the docker driver at `endpoint`.
    pub fn builder(mut self, name: &str, endpoint: &str) -> Self {
        self.builders.push((name.to_owned(), endpoint.to_owned()));
        self
    }

    /// `[containment] on_unavailable`.
    pub fn on_unavailable(mut self, policy: &str) -> Self {
        self.on_unavailable = Some(policy.to_owned());
        self
    }

    pub fn pipeline(mut self, pipeline: Pipeline) -> Self {
        self.pipelines.push(pipeline);
        self
    }

    /// The TOML text.
    pub fn text(&self) -> String {
        let quoted = |items: &[String]| {
            let items: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
            format!("[{}]", items.join(", "))
        };
        let mut text = String::new();
        for (name, endpoint) in &self.builders {
            text.push_str(&format!(
                "[[builder]]\nname = \"{name}\"\ndriver = \"docker\"\nendpoint = \"{endpoint}\"\n\n"
            ));
        }
        for registry in &self.registries {
            text.push_str(&format!(
                "[[registry]]\nhost = \"{}\"\ninsecure = true\ncredentials = \"anonymous\"\n",
                registry.host
            ));
            if let Some(endpoint) = &registry.endpoint {
                text.push_str(&format!("endpoint = \"{endpoint}\"\n"));
            }
            if !registry.repositories.is_empty() {
                text.push_str(&format!(
                    "repositories = {}\n",
                    quoted(&registry.repositories)
                ));
            }
            text.push('\n');
        }
        if let Some(policy) = &self.on_unavailable {
            text.push_str(&format!("[containment]\non_unavailable = \"{policy}\"\n\n"));
        }
        for pipeline in &self.pipelines {
            text.push_str(&pipeline.text());
            text.push('\n');
        }
        let has_scope = !self.scope_registries.is_empty()
            || !self.scope_repositories.is_empty()
            || self.scope_builders.is_some();
        if has_scope {
            text.push_str("[scope]\n");
            if !self.scope_registries.is_empty() {
                text.push_str(&format!(
                    "registries = {}\n",
                    quoted(&self.scope_registries)
                ));
            }
            if !self.scope_repositories.is_empty() {
                text.push_str(&format!(
                    "repositories = {}\n",
                    quoted(&self.scope_repositories)
                ));
            }
            if let Some(builders) = &self.scope_builders {
                text.push_str(&format!("builders = {}\n", quoted(builders)));
            }
        }
        text
    }

    /// Writes the config to `config.toml` in the environment.
    pub fn write(&self, env: &Env) -> PathBuf {
        self.write_as(env, "config.toml")
    }

    /// Writes the config to `name` in the environment.
    pub fn write_as(&self, env: &Env, name: &str) -> PathBuf {
        env.write(name, &self.text())
    }
}

/// The config the builder writes is the one asked for, as cachewarden reads it: an endpoint
/// and audit repositories belong to their registry, not to the scope, and a pipeline entry
/// keeps all its fields.
#[test]
fn config_builder_writes_what_it_is_asked_for() {
    use cachewarden::config::{Config, CredentialSource, OnUnavailable};
    let text = ConfigBuilder::registry("r.test:5000")
        .endpoint("http://127.0.0.1:9")
        .repositories(["team/app"])
        .with_registry("other.test")
        .scope_repositories(["r.test:5000/team/**"])
        .scope_builders(["ci-1"])
        .builder("ci-1", "unix:///run/ci-1.sock")
        .on_unavailable("fail-open")
        .pipeline(Pipeline::pattern("forks-*").trust("untrusted"))
        .pipeline(
            Pipeline::named("victim")
                .project("acme/web")
                .on_unavailable("fail-closed"),
        )
        .text();
    let config = Config::parse(&text, std::path::Path::new("config.toml"))
        .unwrap_or_else(|err| panic!("{err}\n{text}"));
    assert_eq!(config.scope.registries, ["r.test:5000"], "{text}");
    assert_eq!(config.scope.repositories, ["r.test:5000/team/**"]);
    assert_eq!(config.scope.builders, ["ci-1"]);
    let hosts: Vec<&str> = config.registries.iter().map(|r| r.host.as_str()).collect();
    assert_eq!(hosts, ["r.test:5000", "other.test"]);
    let first = &config.registries[0];
    assert!(first.insecure && first.credentials == CredentialSource::Anonymous);
    assert_eq!(first.endpoint.as_deref(), Some("http://127.0.0.1:9"));
    assert_eq!(first.repositories, ["team/app"]);
    assert_eq!(config.registries[1].endpoint, None);
    assert!(config.registries[1].repositories.is_empty());
    assert_eq!(config.builders[0].name, "ci-1");
    assert_eq!(config.builders[0].endpoint, "unix:///run/ci-1.sock");
    assert_eq!(config.containment.on_unavailable, OnUnavailable::FailOpen);
    let forks = &config.pipelines[0];
    assert_eq!(forks.pattern.as_deref(), Some("forks-*"));
    assert_eq!(forks.trust_level.as_deref(), Some("untrusted"));
    let victim = &config.pipelines[1];
    assert_eq!(victim.name.as_deref(), Some("victim"));
    assert_eq!(victim.project.as_deref(), Some("acme/web"));
    assert_eq!(victim.on_unavailable, Some(OnUnavailable::FailClosed));
}

/// The history the builder imports is what was asked for, as `export` gives it back: times,
/// trust, project, builder, mounts, records and every kind of cache ref.
#[test]
fn history_imports_what_it_is_asked_for() {
    let env = Env::new();
    History::new()
        .run(
            Run::new("pr", 7)
                .step("build")
                .day(3)
                .trust("untrusted")
                .project("web")
                .builder("ci-1")
                .mount("/root/.cache/pip")
                .created_record("r-1", "regular", 100)
                .imported(["reg.test/app:main@sha256:".to_owned() + &"a".repeat(64)])
                .exported([json!({"backend": "gha", "key": "web-main"})])
                .produced(["reg.test/app:7"]),
        )
        .run(Run::new("main", 1).at("2026-01-05T10:00:00Z"))
        .import(&env);
    let export: Vec<Value> = ok(env.cmd().arg("export"))
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect();
    let pipeline = export
        .iter()
        .find(|v| v["type"] == "pipeline" && v["name"] == "pr")
        .unwrap_or_else(|| panic!("{export:#?}"));
    assert_eq!(pipeline["project"], "web", "{pipeline:#}");
    let runs: Vec<&Value> = export.iter().filter(|v| v["type"] == "run").collect();
    assert_eq!(runs.len(), 2, "{runs:#?}");
    let pr = runs.iter().find(|r| r["pipeline"] == "pr").unwrap();
    assert_eq!(pr["run"], "7");
    assert_eq!(pr["step"], "build");
    assert_eq!(pr["started_at"], "2026-01-03T00:00:00Z");
    assert_eq!(pr["finished_at"], "2026-01-03T00:01:00Z");
    assert_eq!(pr["trust_level"], "untrusted");
    assert_eq!(pr["builder"], "ci-1");
    assert_eq!(pr["mounts"][0]["id"], "/root/.cache/pip", "{pr:#}");
    assert_eq!(pr["records"]["created"][0]["id"], "r-1", "{pr:#}");
    assert!(
        pr["imported"]
            .to_string()
            .contains("reg.test/app:main@sha256:aaaa")
    );
    assert!(pr["exported"].to_string().contains("web-main"), "{pr:#}");
    assert!(
        pr["produced"].to_string().contains("reg.test/app:7"),
        "{pr:#}"
    );
    let main = runs.iter().find(|r| r["pipeline"] == "main").unwrap();
    assert_eq!(main["started_at"], "2026-01-05T10:00:00Z");
    assert_eq!(main["finished_at"], "2026-01-05T10:00:00Z");
}
