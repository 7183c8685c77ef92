//! `audit registry` against a real registry: unrecorded pushes, trust breaches, a registry that
//! is down, incremental reporting, SARIF, and an incident seeded from a finding.

use std::path::Path;

use crate::build::{ConfigBuilder, History, Run};
use crate::common::{Env, ok, output, registry_env};
use crate::harness::oci::{Pushed, Pusher};
use crate::harness::{self, Registry, RegistryOpts};

/// A run of `pipeline` at `trust` that imported and exported these refs at `at`.
fn run_line(
    pipeline: &str,
    trust: &str,
    run: &str,
    at: &str,
    imported: &[String],
    exported: &[String],
) -> Run {
    Run::new(pipeline, run)
        .trust(trust)
        .at(at)
        .imported(imported.iter().cloned())
        .exported(exported.iter().cloned())
}

/// The document matches `schema/audit.schema.json`.
fn assert_schema(doc: &serde_json::Value) {
    let path = format!("{}/schema/audit.schema.json", env!("CARGO_MANIFEST_DIR"));
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{doc:#}");
}

/// Exit code and the parsed JSON of `audit registry --format json`, checked against its schema.
fn audit_json(env: &Env, config: &Path, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let out = env
        .cmd_with(config)
        .args(["audit", "registry", "--format", "json"])
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_schema(&doc);
    (out.status.code().unwrap(), doc, stderr)
}

fn codes(doc: &serde_json::Value) -> Vec<(String, String)> {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["code"].as_str().unwrap().to_owned(),
                f["tag"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// A recorded cache and an image nobody recorded: nothing to report.
fn recorded(env: &Env, registry: &Registry, pusher: &mut Pusher) -> Pushed {
    let host = registry.host();
    let main = pusher.cache_manifest("team/app", Some("main"), "main cache");
    pusher.image("team/app", Some("v1"), "an image nobody recorded", false);
    History::new()
        .run(run_line(
            "main",
            "release",
            "1",
            "2026-01-01T00:00:00Z",
            &[],
            &[format!("{host}/team/app:main@{}", main.digest)],
        ))
        .import(env);
    main
}

/// An attacker's new digest at a recorded cache tag is reported as unrecorded and as a moved tag.
#[test]
fn attacker_push_is_reported_as_unrecorded() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let mut pusher = Pusher::new(&registry);
    recorded(&env, &registry, &mut pusher);
    let config = ConfigBuilder::registry(&registry.host()).write(&env);
    let (code, doc, stderr) = audit_json(&env, &config, &[]);
    assert_eq!(code, 0, "{doc:#} {stderr}");
    assert_eq!(doc["summary"]["tags"], 2, "{doc:#}");
    assert_eq!(doc["summary"]["caches"], 1, "{doc:#}");

    let evil = pusher.cache_manifest("team/app", Some("main"), "attacker");
    let inline = pusher.image("team/app", Some("inline"), "attacker inline", true);
    let (code, doc, stderr) = audit_json(&env, &config, &[]);
    assert_eq!(code, 1, "{doc:#} {stderr}");
    assert_eq!(
        codes(&doc),
        vec![
            ("CW001".to_owned(), "inline".to_owned()),
            ("CW001".to_owned(), "main".to_owned()),
            ("CW003".to_owned(), "main".to_owned())
        ],
        "{doc:#}"
    );
    let pushed = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["tag"] == "main")
        .unwrap();
    assert_eq!(pushed["digest"], evil.digest.as_str());
    assert_eq!(pushed["name"], "unrecorded-cache-push");
    assert_eq!(pushed["new"], true);
    assert!(pushed["first_seen"].as_str().unwrap().ends_with('Z'));
    let inline_finding = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["tag"] == "inline")
        .unwrap();
    assert_eq!(inline_finding["digest"], inline.digest.as_str());
    assert_eq!(inline_finding["detail"]["kind"], "inline-cache-image");
}

/// The second audit reports nothing new; `--all` repeats what is still there as seen before.
/// An audit whose report cannot be written counts for nothing.
#[test]
fn second_audit_reports_nothing_new() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let mut pusher = Pusher::new(&registry);
    recorded(&env, &registry, &mut pusher);
    pusher.cache_manifest("team/app", Some("stray-1"), "stray 1");
    pusher.cache_manifest("team/app", Some("stray-2"), "stray 2");
    let config = ConfigBuilder::registry(&registry.host()).write(&env);
    // An audit that cannot write its report keeps nothing it found: its findings stay new,
    // and what it saw is not the next audit's baseline.
    let full = env
        .cmd_with(&config)
        .args(["audit", "registry"])
        .stdout(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        )
        .output()
        .unwrap();
    assert_eq!(full.status.code(), Some(2), "{full:?}");
    let (code, doc, stderr) = audit_json(&env, &config, &[]);
    assert_eq!(code, 1, "{doc:#} {stderr}");
    assert_eq!(codes(&doc).len(), 2, "{doc:#}");
    assert_eq!(doc["summary"]["seen_before"], 0, "{doc:#}");
    let (code, doc, stderr) = audit_json(&env, &config, &[]);
    assert_eq!(
        code, 0,
        "the second audit repeated itself: {doc:#} {stderr}"
    );
    assert!(codes(&doc).is_empty());
    assert_eq!(doc["summary"]["seen_before"], 2, "{doc:#}");
    let (code, doc, _) = audit_json(&env, &config, &["--all"]);
    assert_eq!(code, 1);
    assert_eq!(codes(&doc).len(), 2, "{doc:#}");
    assert!(
        doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["new"] == false),
        "{doc:#}"
    );
}

/// A release pipeline's import of a cache an untrusted pipeline exported is a trust breach.
#[test]
fn trusted_import_of_untrusted_export_is_reported() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let host = registry.host();
    let mut pusher = Pusher::new(&registry);
    let pr = pusher.cache_manifest("team/app", Some("pr-7"), "untrusted work");
    let reference = format!("{host}/team/app:pr-7@{}", pr.digest);
    History::new()
        .runs([
            run_line(
                "pr",
                "untrusted",
                "7",
                "2026-01-01T00:00:00Z",
                &[],
                std::slice::from_ref(&reference),
            ),
            run_line(
                "release",
                "release",
                "9",
                "2026-01-02T00:00:00Z",
                &[reference],
                &[],
            ),
        ])
        .import(&env);
    let config = ConfigBuilder::registry(&host)
        .repositories(["team/app"])
        .write(&env);
    let (code, doc, stderr) = audit_json(&env, &config, &[]);
    assert_eq!(code, 1, "{doc:#} {stderr}");
    assert_eq!(
        codes(&doc),
        vec![("CW002".to_owned(), String::new())],
        "{doc:#}"
    );
    let finding = &doc["findings"][0];
    assert_eq!(finding["digest"], pr.digest.as_str());
    assert_eq!(finding["detail"]["exporter"], "pr");
    assert_eq!(finding["detail"]["importer"], "release");
    assert_eq!(finding["detail"]["importer_run"], "release/9/s");
}

/// A registry that is down gives a clear error, exit 4, no findings and nothing stored.
#[test]
fn registry_down_gives_a_clear_error_and_no_findings() {
    if !harness::require_registry() {
        return;
    }
    let mut registry = Registry::start(RegistryOpts::default());
    let env = Env::new();
    let mut pusher = Pusher::new(&registry);
    recorded(&env, &registry, &mut pusher);
    let config = ConfigBuilder::registry(&registry.host()).write(&env);
    registry.stop();
    let (code, doc, stderr) = audit_json(&env, &config, &[]);
    assert_eq!(code, 4, "{doc:#} {stderr}");
    assert!(
        stderr.contains(&format!("cannot audit registry `{}`", registry.host())),
        "{stderr}"
    );
    assert!(stderr.contains("cannot connect"), "{stderr}");
    assert!(codes(&doc).is_empty(), "{doc:#}");
    assert_eq!(doc["summary"]["unreachable_registries"], 1);
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let stored: i64 = conn
        .query_row(
            "SELECT (SELECT count(*) FROM audit_findings) + (SELECT count(*) FROM audit_tags)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, 0);
}

/// SARIF output names every rule and points each result at its rule.
#[test]
fn sarif_names_rules_and_results() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let mut pusher = Pusher::new(&registry);
    recorded(&env, &registry, &mut pusher);
    pusher.cache_manifest("team/app", Some("stray"), "stray");
    let config = ConfigBuilder::registry(&registry.host()).write(&env);
    let out = env
        .cmd_with(&config)
        .args(["audit", "registry", "--format", "sarif"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let sarif: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let run = &sarif["runs"][0];
    let rules: Vec<&str> = run["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(rules, vec!["CW001", "CW002", "CW003", "CW004", "CW009"]);
    let result = &run["results"][0];
    assert_eq!(result["ruleId"], "CW001");
    assert_eq!(
        run["tool"]["driver"]["rules"][result["ruleIndex"].as_u64().unwrap() as usize]["id"],
        "CW001"
    );
    let location = result["locations"][0]["logicalLocations"][0]["fullyQualifiedName"]
        .as_str()
        .unwrap();
    assert!(
        location.starts_with(&format!("{}/team/app:stray@sha256:", registry.host())),
        "{location}"
    );
}

/// `incident open --from-audit` on an unrecorded push plans and purges exactly that manifest.
#[test]
fn incident_from_audit_deletes_the_unrecorded_push() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let mut pusher = Pusher::new(&registry);
    let main = recorded(&env, &registry, &mut pusher);
    let evil = pusher.cache_manifest("team/app", Some("main"), "attacker");
    let config = ConfigBuilder::registry(&registry.host()).write(&env);
    let (_, doc, _) = audit_json(&env, &config, &[]);
    let id = doc["findings"][0]["id"].as_i64().unwrap().to_string();
    assert_eq!(doc["findings"][0]["code"], "CW001");
    let open = ok(env.cmd_with(&config).args([
        "incident",
        "open",
        "--from-audit",
        &id,
        "--format",
        "json",
    ]));
    let open: serde_json::Value = serde_json::from_str(&open).unwrap();
    let deletes: Vec<&str> = open["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "delete-manifest")
        .map(|a| a["target"]["digest"].as_str().unwrap())
        .collect();
    assert_eq!(deletes, vec![evil.digest.as_str()], "{open:#}");
    assert!(
        open["title"]
            .as_str()
            .unwrap()
            .starts_with(&format!("audit finding {id} (CW001)")),
        "{open:#}"
    );
    let incident = open["incident"].as_i64().unwrap().to_string();
    let purge = output(
        &env,
        &mut env.execute(&config, &incident, &["--no-evidence"]),
    );
    assert!(purge.starts_with("exit: 0\n"), "{purge}");
    let head = |digest: &str| {
        registry
            .request(
                harness::http::Request::new("HEAD", &format!("/v2/team/app/manifests/{digest}"))
                    .header("Accept", "application/vnd.oci.image.manifest.v1+json"),
            )
            .status
    };
    assert_eq!(head(&evil.digest), 404);
    assert_eq!(
        head(&main.digest),
        200,
        "the recorded cache was deleted too"
    );
    let missing = output(
        &env,
        env.cmd_with(&config)
            .args(["incident", "open", "--from-audit", "999"]),
    );
    assert!(
        missing.starts_with("exit: 2\n") && missing.contains("no audit finding `999`"),
        "{missing}"
    );
}

/// A copy of a manifest an open incident holds tainted, in a repository the incident never
/// recorded it in, is found (`CW009`, naming the incident): verify looks only where the store
/// recorded it.
#[test]
fn a_copy_of_tainted_content_is_reported() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let host = registry.host();
    let mut pusher = Pusher::new(&registry);
    let evil = pusher.cache_manifest("team/app", Some("evil"), "planted");
    History::new()
        .run(run_line(
            "evil",
            "untrusted",
            "1",
            "2026-01-01T00:00:00Z",
            &[],
            &[format!("{host}/team/app:evil@{}", evil.digest)],
        ))
        .import(&env);
    let config = ConfigBuilder::registry(&host).write(&env);
    ok(env
        .cmd_with(&config)
        .args(["incident", "open", "--pipeline", "evil"]));
    let copy = pusher.cache_manifest("team/mirror", Some("copy"), "planted");
    assert_eq!(copy.digest, evil.digest);
    let (code, doc, stderr) = audit_json(&env, &config, &["--repository", "team/mirror"]);
    assert_eq!(code, 1, "{doc:#} {stderr}");
    let held = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "CW009")
        .unwrap_or_else(|| panic!("{doc:#}"));
    assert_eq!(held["tag"], "copy");
    assert_eq!(held["digest"], evil.digest.as_str());
    assert_eq!(held["detail"]["incidents"], "1");
}
