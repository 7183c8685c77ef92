//! Traces of imported histories at the edges of the time rules: runs that span a seed time or
//! a purge, failed runs that pushed, records of unknown type.

use crate::build::{History, Run};
use crate::common::{Env, ok};

/// The names of the tainted runs, sorted, of `trace --format json` with these seeds over the
/// history in `lines` (imported with its purges).
fn tainted_runs(lines: &str, seeds: &[&str]) -> Vec<String> {
    let env = Env::new();
    let history = env.write("history.jsonl", lines);
    ok(env.cmd().args(["import", "--purges"]).arg(&history));
    let out = ok(env.cmd().args(["trace", "--format", "json"]).args(seeds));
    let trace: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut runs: Vec<String> = trace["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["name"].as_str().unwrap().to_owned())
        .collect();
    runs.sort();
    runs
}

/// A run on a seeded builder across the seed time that only created records (dated at its
/// start, before the seed time) is tainted.
#[test]
fn a_builder_seed_taints_a_creator_running_across_its_time() {
    let lines = r#"{"v":1,"type":"run","pipeline":"victim","run":"1","step":"s","builder":"b1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T01:00:00Z","records":{"created":[{"id":"r1","type":"regular","description":"[1/2] RUN make"}],"reused":[]}}
{"v":1,"type":"run","pipeline":"early","run":"1","step":"s","builder":"b1","started_at":"2026-01-01T00:01:00Z","finished_at":"2026-01-01T00:05:00Z","records":{"created":[{"id":"r2","type":"regular","description":"[1/2] RUN x"}],"reused":[]}}
"#;
    let seeds = ["--builder", "b1", "--since", "2026-01-01T00:30:00Z"];
    assert_eq!(tainted_runs(lines, &seeds), ["run:victim/1/s"]);
}

/// A tag seed with `--since` selects a ref recorded by tag only that was first seen before the
/// window and read in it: the run that read it in the window is tainted, the one before is not.
#[test]
fn a_tag_seed_follows_a_tag_only_ref_seen_across_its_window() {
    let lines = r#"{"v":1,"type":"run","pipeline":"old","run":"1","step":"s","builder":"b1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T01:00:00Z","imported":["reg.io/app:cache"],"records":{"created":[],"reused":[]}}
{"v":1,"type":"run","pipeline":"v","run":"2","step":"s","builder":"b1","started_at":"2026-01-05T02:00:00Z","finished_at":"2026-01-05T03:00:00Z","imported":["reg.io/app:cache"],"records":{"created":[],"reused":[]}}
"#;
    let seeds = ["--cache-ref", "reg.io/app:cache", "--since", "2026-01-05"];
    assert_eq!(tainted_runs(lines, &seeds), ["run:v/2/s"]);
}

/// A tainted run that failed still taints the image it recorded: a build on that image is
/// tainted, as are the users of its mount and records.
#[test]
fn a_failed_run_taints_the_image_it_pushed() {
    let lines = r#"{"v":1,"type":"run","pipeline":"evil","run":"1","step":"s","builder":"b1","status":"failed","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T01:00:00Z","produced":["reg.io/app:latest@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"],"mounts":[{"id":"/m"}],"records":{"created":[{"id":"r1","type":"regular","description":"[1/2] RUN make"}],"reused":[]}}
{"v":1,"type":"run","pipeline":"v1","run":"2","step":"s","builder":"b2","started_at":"2026-01-01T02:00:00Z","finished_at":"2026-01-01T03:00:00Z","base_images":["reg.io/app@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"],"records":{"created":[],"reused":[]}}
{"v":1,"type":"run","pipeline":"v2","run":"2","step":"s","builder":"b1","started_at":"2026-01-01T02:00:00Z","finished_at":"2026-01-01T03:00:00Z","mounts":[{"id":"/m"}],"records":{"created":[],"reused":[{"id":"r1","type":"regular","description":"[1/2] RUN make"}]}}
"#;
    assert_eq!(
        tainted_runs(lines, &["--run", "evil/1"]),
        ["run:evil/1/s", "run:v1/2/s", "run:v2/2/s"]
    );
}

/// A purge of a mount while the tainted run that wrote it was running does not clear what it
/// wrote: a run that read the mount after the purge is tainted. So for a prune of the builder
/// a tainted run without record evidence was running on.
#[test]
fn a_purge_during_a_tainted_run_does_not_clear_its_writes() {
    let mount = r#"{"v":1,"type":"run","pipeline":"evil","run":"1","step":"s","builder":"b1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T01:00:00Z","mounts":[{"id":"/root/.cache/pip"}],"records":{"created":[],"reused":[]}}
{"v":1,"type":"purge","builder":"b1","mount":"/root/.cache/pip","at":"2026-01-01T00:30:00Z"}
{"v":1,"type":"run","pipeline":"victim","run":"2","step":"s","builder":"b1","started_at":"2026-01-01T02:00:00Z","finished_at":"2026-01-01T03:00:00Z","mounts":[{"id":"/root/.cache/pip"}],"records":{"created":[],"reused":[]}}
"#;
    let builder = r#"{"v":1,"type":"run","pipeline":"evil","run":"1","step":"s","builder":"b1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T01:00:00Z"}
{"v":1,"type":"purge","builder":"b1","at":"2026-01-01T00:30:00Z"}
{"v":1,"type":"run","pipeline":"victim","run":"2","step":"s","builder":"b1","started_at":"2026-01-01T02:00:00Z","finished_at":"2026-01-01T03:00:00Z"}
"#;
    for lines in [mount, builder] {
        assert_eq!(
            tainted_runs(lines, &["--run", "evil/1"]),
            ["run:evil/1/s", "run:victim/2/s"]
        );
    }
}

/// A record first recorded by a run that reused it and named it by id alone has no type; it
/// still carries taint from the run that created it to that run.
#[test]
fn a_record_first_named_by_id_alone_carries_taint() {
    let lines = r#"{"v":1,"type":"run","pipeline":"v","run":"2","step":"s","builder":"b1","started_at":"2026-01-01T02:00:00Z","finished_at":"2026-01-01T03:00:00Z","records":{"created":[],"reused":[{"id":"r1"}]}}
{"v":1,"type":"run","pipeline":"evil","run":"1","step":"s","builder":"b1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T01:00:00Z","records":{"created":[{"id":"r1","type":"regular","description":"[2/2] RUN make"}],"reused":[]}}
"#;
    assert_eq!(
        tainted_runs(lines, &["--run", "evil/1"]),
        ["run:evil/1/s", "run:v/2/s"]
    );
}

/// A run whose hook recorded a cache read by tag only is reached from a tainted push of that
/// tag by digest, when it read after the push; the trace says the tag held the digest. A read
/// before the push, and the same tag in another repository, are not.
#[test]
fn a_tag_read_by_name_is_reached_from_a_tainted_push_of_the_tag() {
    let digest = format!("sha256:{}", "b".repeat(64));
    let history = History::new().runs([
        Run::new("early", 1)
            .builder("b1")
            .at("2026-01-01T00:00:00Z")
            .imported(["reg.io/app:cache"]),
        Run::new("evil", 1)
            .builder("b2")
            .at("2026-01-01T01:00:00Z")
            .exported([format!("reg.io/app:cache@{digest}")]),
        Run::new("late", 1)
            .builder("b3")
            .at("2026-01-01T02:00:00Z")
            .imported(["reg.io/app:cache"]),
        Run::new("other", 1)
            .builder("b4")
            .at("2026-01-01T02:00:00Z")
            .imported(["reg.io/other:cache"]),
    ]);
    let lines = history.lines();
    assert_eq!(
        tainted_runs(&lines, &["--run", "evil/1"]),
        ["run:evil/1/s", "run:late/1/s"]
    );
    assert_eq!(
        tainted_runs(&lines, &["--run", "evil/1", "--ignore-time"]),
        ["run:early/1/s", "run:evil/1/s", "run:late/1/s"]
    );
    let env = Env::new();
    history.import(&env);
    let out = ok(env
        .cmd()
        .args(["trace", "--run", "evil/1", "--format", "json"]));
    let trace: serde_json::Value = serde_json::from_str(&out).unwrap();
    let held = trace["cache_refs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "reg.io/app:cache")
        .expect("the tag-only ref is tainted");
    assert_eq!(held["via"]["kind"], "tag-held");
    assert_eq!(held["via"]["from"], format!("reg.io/app@{digest}"));
}

/// A registry host names one registry however it is spelt: a read of the tag under a host in
/// capitals is reached from the tainted push to the host in lower case, and a seed spelt in
/// capitals names the same tag.
#[test]
fn a_registry_host_spelt_in_capitals_is_the_same_registry() {
    let digest = format!("sha256:{}", "c".repeat(64));
    let history = History::new().runs([
        Run::new("evil", 1)
            .builder("b2")
            .at("2026-01-01T01:00:00Z")
            .exported([format!("reg.io:5000/app:cache@{digest}")]),
        Run::new("late", 1)
            .builder("b3")
            .at("2026-01-01T02:00:00Z")
            .imported(["Reg.IO:5000/app:cache"]),
        Run::new("pinned", 1)
            .builder("b4")
            .at("2026-01-01T02:00:00Z")
            .imported([format!("REG.io:5000/app@{digest}")]),
    ]);
    assert_eq!(
        tainted_runs(&history.lines(), &["--run", "evil/1"]),
        ["run:evil/1/s", "run:late/1/s", "run:pinned/1/s"]
    );
    assert_eq!(
        tainted_runs(&history.lines(), &["--cache-ref", "REG.IO:5000/app:cache"]),
        ["run:late/1/s", "run:pinned/1/s"]
    );
}

/// A tainted run whose hook captured no record evidence (a build nobody wrapped, collected
/// from the builder's history) may have made a record no recorded run created: a later run
/// with record evidence that reused it is tainted; one that reused a record already reused
/// before the tainted run started is not.
#[test]
fn a_record_nobody_recorded_creating_carries_taint_from_a_run_without_evidence() {
    let history = History::new().runs([
        Run::new("evil", 1).builder("b1").at("2026-01-01T01:00:00Z"),
        Run::new("victim", 1)
            .builder("b1")
            .at("2026-01-01T02:00:00Z")
            .reused_record("r1", "[2/2] RUN make"),
        Run::new("before", 1)
            .builder("b1")
            .at("2026-01-01T00:00:00Z")
            .reused_record("r0", "[2/2] RUN lint"),
        Run::new("late", 1)
            .builder("b1")
            .at("2026-01-01T02:00:00Z")
            .reused_record("r0", "[2/2] RUN lint"),
    ]);
    // `r0` was reused before the tainted run started: it did not make it.
    assert_eq!(
        tainted_runs(&history.lines(), &["--run", "evil/1"]),
        ["run:evil/1/s", "run:victim/1/s"]
    );
}

/// A tag seed with `--since` takes in the digest the tag held when the window opened (the last
/// pushed under it before): a run that read that digest by digest in the window is tainted, as
/// is one that read the tag by name.
#[test]
fn a_tag_seed_takes_in_the_digest_the_tag_held_when_its_window_opened() {
    let digest = format!("sha256:{}", "a".repeat(64));
    let history = History::new().runs([
        Run::new("push", 1)
            .day(1)
            .exported([format!("reg.io/a:cache@{digest}")]),
        Run::new("pinned", 1)
            .day(5)
            .imported([format!("reg.io/a@{digest}")]),
        Run::new("tagonly", 1).day(5).imported(["reg.io/a:cache"]),
    ]);
    let seeds = ["--cache-ref", "reg.io/a:cache", "--since", "2026-01-03"];
    assert_eq!(
        tainted_runs(&history.lines(), &seeds),
        ["run:pinned/1/s", "run:tagonly/1/s"]
    );
}

/// Two builds side by side on one builder each record creating the same record (each lists
/// what either made): the one beside a tainted creator is tainted, whichever made it.
#[test]
fn a_run_beside_a_tainted_creator_of_its_record_is_tainted() {
    let history = History::new().runs([
        Run::new("evil", 1)
            .builder("b1")
            .at("2026-01-01T01:00:00Z")
            .created_layer("r1", "[2/2] RUN make"),
        Run::new("victim", 1)
            .builder("b1")
            .at("2026-01-01T01:05:00Z")
            .created_layer("r1", "[2/2] RUN make"),
        Run::new("other", 1)
            .builder("b1")
            .at("2026-01-01T01:05:00Z")
            .created_layer("r2", "[2/2] RUN test"),
    ]);
    for seeds in [
        &["--run", "evil/1"][..],
        &["--run", "evil/1", "--ignore-time"],
    ] {
        assert_eq!(
            tainted_runs(&history.lines(), seeds),
            ["run:evil/1/s", "run:victim/1/s"]
        );
    }
}

/// A run that says it created a record that another run, finished before it began, says it
/// created too does not reach back in time: the earlier run used nothing the later one made,
/// and is not tainted through the record, nor is its image planned for deletion. A later
/// reuser is: which of the two made the record is not known. Time ignored, every claim counts.
#[test]
fn a_claim_to_have_made_an_older_record_does_not_reach_back() {
    let history = History::new().runs([
        Run::new("web", 1)
            .builder("b1")
            .at("2026-01-01T01:00:00Z")
            .created_layer("r1", "[2/2] RUN make")
            .produced(["reg.io/web:1@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"]),
        Run::new("evil", 1)
            .builder("b1")
            .at("2026-01-01T01:05:00Z")
            .created_layer("r1", "[2/2] RUN make"),
        Run::new("web", 2)
            .builder("b1")
            .at("2026-01-01T01:10:00Z")
            .reused_record("r1", "[2/2] RUN make"),
    ]);
    assert_eq!(
        tainted_runs(&history.lines(), &["--run", "evil/1"]),
        ["run:evil/1/s", "run:web/2/s"]
    );
    assert_eq!(
        tainted_runs(&history.lines(), &["--run", "evil/1", "--ignore-time"]),
        ["run:evil/1/s", "run:web/1/s", "run:web/2/s"]
    );
    let env = Env::new();
    history.import(&env);
    ok(env.cmd().args(["incident", "open", "--run", "evil/1"]));
    let plan = ok(env
        .cmd()
        .args(["incident", "show", "1", "--format", "json"]));
    assert!(!plan.contains("reg.io/web"), "{plan}");
}

/// A tainted run that mounted a cache mount it did not record (the builder's records say it
/// used one: an `ONBUILD` step of its base image, say) leaves a follow-up naming the records,
/// so verify cannot say clean while they stay; a cache-mount record its recorded mounts
/// explain, by id or by target path as BuildKit wrote it (where the build that made it used the
/// same mount at another target, on Docker 20.10), leaves none.
#[test]
fn a_cache_mount_a_tainted_run_did_not_record_is_a_follow_up() {
    let lines = r#"{"v":1,"type":"run","pipeline":"evil","run":"1","step":"s","builder":"b1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T01:00:00Z","records":{"created":[],"reused":[{"id":"m1","type":"exec.cachemount","description":"cached mount /root/.cache/pip from exec /bin/sh -c pip install x"}]}}
{"v":1,"type":"run","pipeline":"evil","run":"2","step":"s","builder":"b1","started_at":"2026-01-02T00:00:00Z","finished_at":"2026-01-02T01:00:00Z","mounts":[{"id":"pip","target":"/c"}],"records":{"created":[{"id":"m2","type":"exec.cachemount","description":"cached mount /c/ from exec /bin/sh -c true"},{"id":"m3","type":"exec.cachemount","description":"cached mount /c from exec /bin/sh -c true with id \"/pip\""}],"reused":[]}}
{"v":1,"type":"run","pipeline":"web","run":"1","step":"s","builder":"b1","started_at":"2026-01-03T00:00:00Z","finished_at":"2026-01-03T01:00:00Z","mounts":[{"id":"pip","target":"/root/.cache/pip"}],"records":{"created":[],"reused":[{"id":"m2","type":"exec.cachemount","description":"cached mount /c/ from exec /bin/sh -c true"}]}}
"#;
    let env = Env::new();
    let history = env.write("history.jsonl", lines);
    ok(env.cmd().args(["import"]).arg(&history));
    ok(env.cmd().args(["incident", "open", "--pipeline", "evil"]));
    let show: serde_json::Value = serde_json::from_str(&ok(env
        .cmd()
        .args(["incident", "show", "1", "--format", "json"])))
    .unwrap();
    let follow_ups: Vec<String> = show["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "follow-up")
        .map(|a| a.to_string())
        .collect();
    assert_eq!(follow_ups.len(), 1, "{show:#}");
    assert!(
        follow_ups[0].contains("records `m1` on `b1`") && follow_ups[0].contains("evil/1/s"),
        "{show:#}"
    );
    let trace = ok(env
        .cmd()
        .args(["trace", "--pipeline", "evil", "--format", "json"]));
    assert!(trace.contains("run:web/1/s"), "{trace}");
}

/// A cache mount under a namespace (`BUILDKIT_CACHE_MOUNT_NS`) is its own cache: a tainted one
/// taints its own readers and not those of the default namespace's mount of the same id. The
/// plan leaves its records to the responder, as a follow-up (a prune by id would find the
/// default namespace's mount), and prunes the default one only when it is tainted, leaving a
/// namespaced mount at the same target path as a mount sharing it.
#[test]
fn a_namespaced_mount_is_its_own_cache_and_a_follow_up() {
    let env = Env::new();
    let mount = |namespace: &str| serde_json::json!([{ "id": "pip", "namespace": namespace, "target": "/root/.cache/pip" }]);
    let run = |pipeline: &str, run: &str, hour: u32, namespace: &str| {
        serde_json::json!({
            "v": 1, "type": "run", "pipeline": pipeline, "run": run, "step": "s",
            "builder": "ci-1",
            "started_at": format!("2026-11-02T{hour:02}:00:00Z"),
            "finished_at": format!("2026-11-02T{hour:02}:05:00Z"),
            "mounts": mount(namespace),
            "records": { "created": [], "reused": [] },
        })
        .to_string()
    };
    let lines = [
        r#"{"v":1,"type":"builder","name":"ci-1","driver":"docker","endpoint":"tcp://ci-1.internal:2376"}"#.to_owned(),
        run("evil", "1", 9, "team-a"),
        run("team", "2", 10, "team-a"),
        run("web", "3", 11, ""),
        run("docs", "4", 12, ""),
    ]
    .join("\n");
    let history = env.write("history.jsonl", &lines);
    ok(env.cmd().arg("import").arg(&history));
    let open = |seed: &str| -> serde_json::Value {
        let out = ok(env
            .cmd()
            .args(["incident", "open", "--run", seed, "--format", "json"]));
        serde_json::from_str(&out).unwrap()
    };
    let kinds = |doc: &serde_json::Value, kind: &str| -> Vec<serde_json::Value> {
        doc["actions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["kind"] == kind)
            .cloned()
            .collect()
    };

    let namespaced = open("evil/1/s");
    let trace = ok(env
        .cmd()
        .args(["trace", "--run", "evil/1/s", "--format", "json"]));
    let trace: serde_json::Value = serde_json::from_str(&trace).unwrap();
    let runs: Vec<&str> = trace["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(runs, ["run:evil/1/s", "run:team/2/s"], "{trace:#}");
    assert!(
        kinds(&namespaced, "prune-mount").is_empty(),
        "{namespaced:#}"
    );
    let follow_ups = kinds(&namespaced, "follow-up");
    assert!(
        follow_ups.iter().any(|a| a["target"]["what"]
            .as_str()
            .unwrap()
            .contains("`team-a/pip`")),
        "{namespaced:#}"
    );

    let default = open("web/3/s");
    let prunes = kinds(&default, "prune-mount");
    assert_eq!(prunes.len(), 1, "{default:#}");
    assert_eq!(prunes[0]["target"]["mount_id"], "pip", "{default:#}");
    assert_eq!(
        prunes[0]["target"]["shares_target_with"],
        serde_json::json!(["team-a/pip"]),
        "{default:#}"
    );
}
