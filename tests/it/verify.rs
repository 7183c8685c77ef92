//! Verification that never says clean with tainted content left, scope decided when acting,
//! and the exit statuses of an execution: each test is an attack or a slip it stops.

use crate::build::{self, ConfigBuilder, Run};
use crate::common::{Env, manifest_exists, ok, output, registry_env};
use crate::harness::oci::{Pushed, Pusher};
use crate::harness::proxy::{Fault, FaultProxy};
use crate::harness::{self, Registry};
use crate::purge::config;

/// `evil` exported `inside` to `team/app` and `outside` to `other/app`; `good` exported
/// `clean` to `team/app`.
struct History {
    inside: Pushed,
    outside: Pushed,
    clean: Pushed,
}

fn history(env: &Env, registry: &Registry) -> History {
    let host = registry.host();
    let mut pusher = Pusher::new(registry);
    let inside = pusher.cache_manifest("team/app", Some("evil"), "evil inside");
    let outside = pusher.cache_manifest("other/app", Some("evil"), "evil outside");
    let clean = pusher.cache_manifest("team/app", Some("main"), "good");
    build::History::new()
        .run(Run::new("evil", 1).exported([
            format!("{host}/team/app:evil@{}", inside.digest),
            format!("{host}/other/app:evil@{}", outside.digest),
        ]))
        .run(Run::new("good", 1).exported([format!("{host}/team/app:main@{}", clean.digest)]))
        .import(env);
    History {
        inside,
        outside,
        clean,
    }
}

/// [`history`], the config, and an incident open on `evil`.
fn opened(env: &Env, registry: &Registry) -> (History, std::path::PathBuf) {
    let h = history(env, registry);
    let config = config(&registry.host()).write(env);
    env.open_incident(&config, "evil");
    (h, config)
}

/// The line of `text` that names `digest`; panics with the whole text when none does.
fn line_of<'a>(text: &'a str, digest: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(digest))
        .unwrap_or_else(|| panic!("{text}"))
}

/// The `seq` of the plan's action on `digest`.
fn seq_of(env: &Env, config: &std::path::Path, id: &str, digest: &str) -> i64 {
    let action = env.incident_action(config, id, digest, |a| a["target"]["digest"] == digest);
    action["seq"].as_i64().unwrap()
}

/// With no config file, every action is out of scope. `open` and `purge` say so loudly, the
/// purge does nothing and exits 5, verify is not clean (exit 1) and lists the digest, close
/// refuses (exit 5), and `check` still answers TAINTED.
#[test]
fn no_config_never_ends_clean() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let h = history(&env, &registry);
    let open = output(
        &env,
        env.cmd().args(["incident", "open", "--pipeline", "evil"]),
    );
    assert!(open.starts_with("exit: 0\n"), "{open}");
    assert!(open.contains("no config file was loaded"), "{open}");
    let purge = output(
        &env,
        env.cmd()
            .args(["incident", "purge", "1", "--execute", "--yes"]),
    );
    assert!(purge.starts_with("exit: 5\n"), "{purge}");
    assert!(purge.contains("nothing was done"), "{purge}");
    assert!(manifest_exists(&registry, "team/app", &h.inside.digest));

    let verify = output(&env, env.cmd().args(["incident", "verify", "1"]));
    assert!(verify.starts_with("exit: 1\n"), "{verify}");
    assert!(verify.contains("NOT clean"), "{verify}");
    let inside = verify
        .lines()
        .find(|l| l.contains(h.inside.digest.as_str()))
        .unwrap_or_else(|| panic!("the tainted digest is not listed: {verify}"));
    assert!(
        inside.starts_with("  PRESENT") || inside.starts_with("  UNVERIFIED"),
        "{inside}"
    );

    let close = output(&env, env.cmd().args(["incident", "close", "1"]));
    assert!(close.starts_with("exit: 5\n"), "{close}");
    let check = output(
        &env,
        env.cmd().args([
            "check",
            &format!("{}/team/app@{}", registry.host(), h.inside.digest),
        ]),
    );
    assert!(check.starts_with("exit: 5\n"), "{check}");
    assert!(check.contains("TAINTED"), "{check}");
}

/// Scope is the config in force when acting. Emptied after `open`, the dry run and the
/// execution say which actions changed, nothing is deleted and the execution exits 5;
/// widened, the action planned outside the scope runs.
#[test]
fn scope_is_decided_when_acting() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let h = history(&env, &registry);
    let host = registry.host();
    let scoped = config(&host).write(&env);
    env.open_incident(&scoped, "evil");

    let narrowed = ConfigBuilder::new()
        .scope_registries(["elsewhere.example"])
        .with_registry(&host)
        .write_as(&env, "narrow.toml");
    let dry = output(
        &env,
        env.cmd_with(&narrowed).args(["incident", "purge", "1"]),
    );
    assert!(
        dry.contains("planned inside the scope, outside the scope in force now"),
        "{dry}"
    );
    let run = output(&env, &mut env.execute(&narrowed, "1", &[]));
    assert!(run.starts_with("exit: 5\n"), "{run}");
    assert!(run.contains("nothing was done"), "{run}");
    assert!(manifest_exists(&registry, "team/app", &h.inside.digest));

    let widened = ConfigBuilder::registry(&host)
        .scope_repositories([format!("{host}/team/**"), format!("{host}/other/**")])
        .write_as(&env, "wide.toml");
    let run = output(&env, &mut env.execute(&widened, "1", &[]));
    assert!(run.starts_with("exit: 0\n"), "{run}");
    assert!(
        run.contains("planned outside the scope, inside the scope in force now"),
        "{run}"
    );
    assert!(!manifest_exists(&registry, "team/app", &h.inside.digest));
    assert!(!manifest_exists(&registry, "other/app", &h.outside.digest));
    assert!(manifest_exists(&registry, "team/app", &h.clean.digest));
    let verify = output(
        &env,
        env.cmd_with(&widened).args(["incident", "verify", "1"]),
    );
    assert!(verify.starts_with("exit: 0\n"), "{verify}");
}

/// A forced close keeps the verification it was closed on: the report says it was forced, and
/// verify refuses a closed incident (exit 5) rather than add to it, so removing the target by
/// hand afterwards cannot make the report read clean.
#[test]
fn a_forced_close_stays_forced() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let (h, config) = opened(&env, &registry);
    output(&env, &mut env.execute(&config, "1", &[]));
    ok(env
        .cmd_with(&config)
        .args(["incident", "close", "1", "--force"]));
    let gone = registry.request(crate::harness::http::Request::new(
        "DELETE",
        &format!("/v2/other/app/manifests/{}", h.outside.digest),
    ));
    assert_eq!(gone.status, 202, "{}", gone.text());
    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(
        verify.starts_with("exit: 5\n") && verify.contains("incident 1 is closed"),
        "{verify}"
    );
    let report = ok(env.cmd_with(&config).args(["incident", "report", "1"]));
    assert!(report.contains("(forced: not verified clean)"), "{report}");
    let json = ok(env
        .cmd_with(&config)
        .args(["incident", "report", "1", "--format", "json"]));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["verification"]["clean"], false, "{json:#}");
}

/// A target left outside the scope keeps verify failing and close refused until it is
/// accepted; the acceptance (who, when, why) is in verify's output and the report.
#[test]
fn accept_records_a_target_left_in_place() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let (h, config) = opened(&env, &registry);
    let run = output(&env, &mut env.execute(&config, "1", &[]));
    assert!(run.starts_with("exit: 5\n"), "{run}");
    assert!(!manifest_exists(&registry, "team/app", &h.inside.digest));

    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(verify.starts_with("exit: 1\n"), "{verify}");
    let line = line_of(&verify, &h.outside.digest);
    assert!(line.starts_with("  PRESENT"), "{line}");
    let close = output(&env, env.cmd_with(&config).args(["incident", "close", "1"]));
    assert!(close.starts_with("exit: 5\n"), "{close}");

    let seq = seq_of(&env, &config, "1", &h.outside.digest);
    let usage = output(
        &env,
        env.cmd_with(&config)
            .args(["incident", "accept", "1", &seq.to_string()]),
    );
    assert!(
        usage.starts_with("exit: 2\n"),
        "a reason is required: {usage}"
    );
    let unknown = output(
        &env,
        env.cmd_with(&config)
            .args(["incident", "accept", "1", "999", "--reason", "x"]),
    );
    assert!(unknown.starts_with("exit: 2\n"), "{unknown}");
    assert!(unknown.contains("999"), "{unknown}");
    ok(env.cmd_with(&config).args([
        "incident",
        "accept",
        "1",
        &seq.to_string(),
        "--reason",
        "other/ belongs to a partner registry; they purge it",
    ]));
    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(verify.starts_with("exit: 0\n"), "{verify}");
    assert!(
        verify.contains("accepted") && verify.contains("partner registry"),
        "{verify}"
    );
    ok(env.cmd_with(&config).args(["incident", "close", "1"]));

    let report = ok(env.cmd_with(&config).args(["incident", "report", "1"]));
    assert!(report.contains("## Targets left in place"), "{report}");
    assert!(report.contains("partner registry"), "{report}");
    let json = ok(env
        .cmd_with(&config)
        .args(["incident", "report", "1", "--format", "json"]));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["acceptances"][0]["seq"], seq);
    assert!(
        json["acceptances"][0]["by"]
            .as_str()
            .is_some_and(|by| !by.is_empty() && by != "unknown"),
        "{json:#}"
    );
}

/// A target deleted and then pushed back is PRESENT again, whatever its action's state says,
/// and the next `--execute` deletes it again.
#[test]
fn a_target_pushed_back_after_the_purge_is_present() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let (h, config) = opened(&env, &registry);
    output(&env, &mut env.execute(&config, "1", &[]));
    assert!(!manifest_exists(&registry, "team/app", &h.inside.digest));
    // The same content pushed again has the same digest.
    let again = Pusher::new(&registry).cache_manifest("team/app", Some("evil"), "evil inside");
    assert_eq!(again.digest, h.inside.digest);
    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(verify.starts_with("exit: 1\n"), "{verify}");
    let line = line_of(&verify, &h.inside.digest);
    assert!(
        line.starts_with("  PRESENT") && line.contains("back in the registry"),
        "{line}"
    );
    // The dry run and the rerun see it back, and delete it again.
    let dry = output(&env, env.cmd_with(&config).args(["incident", "purge", "1"]));
    assert!(
        line_of(&dry, &h.inside.digest).contains("back in the registry: will be deleted again"),
        "{dry}"
    );
    let run = output(&env, &mut env.execute(&config, "1", &[]));
    assert!(
        run.contains("1 manifest deleted earlier is back in the registry: to be deleted again"),
        "{run}"
    );
    assert!(!manifest_exists(&registry, "team/app", &h.inside.digest));
    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(
        line_of(&verify, &h.inside.digest).starts_with("  gone"),
        "{verify}"
    );
    // Gone, it stays done: a rerun deletes nothing.
    let run = output(&env, &mut env.execute(&config, "1", &[]));
    assert!(!run.contains("back in the registry"), "{run}");
}

/// A registry that cannot be reached during `--execute` exits 4, as documented, and verify
/// then lists the target UNVERIFIED (counted as present), not gone.
#[test]
fn unreachable_registry_exits_4_and_is_unverified() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let (h, _) = opened(&env, &registry);
    // A loopback port nothing listens on.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let unreachable = config(&registry.host())
        .endpoint(&format!("http://127.0.0.1:{dead}"))
        .write(&env);
    let run = output(
        &env,
        &mut env.execute(&unreachable, "1", &["--no-evidence"]),
    );
    assert!(run.starts_with("exit: 4\n"), "{run}");
    assert!(manifest_exists(&registry, "team/app", &h.inside.digest));
    let verify = output(
        &env,
        env.cmd_with(&unreachable).args(["incident", "verify", "1"]),
    );
    assert!(verify.starts_with("exit: 1\n"), "{verify}");
    let line = line_of(&verify, &h.inside.digest);
    assert!(line.starts_with("  UNVERIFIED"), "{line}");
}

/// Evidence that cannot be fetched does not stop the delete, and the journal, `show --format
/// json` and the report say which target went without it.
#[test]
fn an_evidence_gap_is_recorded_and_reported() {
    let Some(registry) = harness::registry() else {
        return;
    };
    let proxy = FaultProxy::start(&registry.host());
    let env = Env::new();
    let h = history(&env, &registry);
    let config = config(&registry.host()).endpoint(&proxy.url()).write(&env);
    env.open_incident(&config, "evil");
    // The evidence fetch (a GET) is refused; the delete's own requests are not GETs.
    proxy.inject(Fault::status(403).on("GET"));
    let run = output(
        &env,
        &mut env.execute(&config, "1", &["--concurrency", "1"]),
    );
    assert!(run.contains("the action goes ahead"), "{run}");
    assert!(!manifest_exists(&registry, "team/app", &h.inside.digest));
    let digest = h.inside.digest.as_str();
    let action = env.incident_action(&config, "1", digest, |a| a["target"]["digest"] == digest);
    assert!(action["evidence_gap"].is_string(), "{action:#}");
    let report = ok(env.cmd_with(&config).args(["incident", "report", "1"]));
    assert!(
        report.contains("**Not saved** for 1 action, which"),
        "{report}"
    );
    let json = ok(env
        .cmd_with(&config)
        .args(["incident", "report", "1", "--format", "json"]));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let gaps: Vec<&serde_json::Value> = json["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["evidence_gap"].is_string())
        .collect();
    assert_eq!(gaps.len(), 1, "{json:#}");
}

/// A run can record a digest the registry never keeps its push under: another algorithm's
/// digest of the same bytes, or one made up. Asked by that digest, the registry has no such
/// manifest while the tag serves the content. Verify looks at the tags too: the first is
/// present (the tag's bytes hash to the recorded sha512), the second unverified (the tag holds
/// content no run outside the incident recorded pushing), and the incident is not clean. Once
/// a vouching run outside the incident pushes new content under the tag, that tag says
/// nothing (the made-up digest stays unverified: nobody ever read what it lists), and a sha512
/// digest with no tag left stays unverified, never gone.
#[test]
fn a_digest_the_registry_never_keeps_is_checked_by_its_tags() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let host = registry.host();
    let mut pusher = Pusher::new(&registry);
    let x = pusher.cache_manifest("team/app", Some("pr"), "evil x");
    let y = pusher.cache_manifest("team/app", Some("nightly"), "evil y");
    let bytes = registry
        .request(
            crate::harness::http::Request::get(&format!("/v2/team/app/manifests/{}", x.digest))
                .header("Accept", &x.media_type),
        )
        .body;
    let sha512: String = <sha2::Sha512 as sha2::Digest>::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let made_up = format!("sha256:{}", "e".repeat(64));
    build::History::new()
        .run(Run::new("evil", 1).exported([
            format!("{host}/team/app:pr@sha512:{sha512}"),
            format!("{host}/team/app:nightly@{made_up}"),
        ]))
        .import(&env);
    let config = config(&host).write(&env);
    env.open_incident(&config, "evil");
    let run = output(&env, &mut env.execute(&config, "1", &["--no-evidence"]));
    assert!(run.starts_with("exit: 0\n"), "{run}");
    assert!(manifest_exists(&registry, "team/app", &x.digest));

    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(verify.starts_with("exit: 1\n"), "{verify}");
    let line = line_of(&verify, "(tags: pr)");
    assert!(
        line.starts_with("  PRESENT") && line.contains("still serves it"),
        "{line}"
    );
    let line = line_of(&verify, "(tags: nightly)");
    assert!(
        line.starts_with("  UNVERIFIED") && line.contains(&y.digest),
        "{line}"
    );
    // What the pr tag serves is held, by the digest the registry keeps it under.
    let served = format!("{host}/team/app@{}", x.digest);
    let check = output(&env, env.cmd_with(&config).args(["check", &served]));
    assert!(check.starts_with("exit: 5\n"), "{check}");

    // The nightly tag now holds what a trusted run outside the incident pushed; the pr tag is
    // gone with its content.
    let good = pusher.cache_manifest("team/app", Some("nightly"), "good");
    build::History::new()
        .run(
            Run::new("good", 1)
                .day(3)
                .exported([format!("{host}/team/app:nightly@{}", good.digest)]),
        )
        .import_as(&env, "good.jsonl");
    let gone = registry.request(crate::harness::http::Request::new(
        "DELETE",
        &format!("/v2/team/app/manifests/{}", x.digest),
    ));
    assert_eq!(gone.status, 202, "{}", gone.text());
    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(verify.starts_with("exit: 1\n"), "{verify}");
    // Its tag says nothing now; the made-up digest was never there to read, so what it may
    // have listed was never learned.
    let line = line_of(&verify, "(tags: nightly)");
    assert!(
        line.starts_with("  UNVERIFIED")
            && line.contains("was gone before what it lists was learned"),
        "{line}"
    );
    let line = line_of(&verify, "(tags: pr)");
    assert!(
        line.starts_with("  UNVERIFIED") && line.contains("sha256 digest"),
        "{line}"
    );
}

/// A tainted cache deleted by someone else before any purge read it may have been an index:
/// the manifests it listed are still served by digest, and nobody learned which. Verify says
/// so (UNVERIFIED), not gone, until a responder accepts it.
#[test]
fn a_cache_gone_before_it_was_read_is_not_taken_as_gone() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let host = registry.host();
    let mut pusher = Pusher::new(&registry);
    let one = pusher.image("team/app", None, "one", false);
    let two = pusher.image("team/app", None, "two", false);
    let index = pusher.index("team/app", Some("multi"), &[one.clone(), two.clone()]);
    build::History::new()
        .run(Run::new("evil", 1).exported([format!("{host}/team/app:multi@{}", index.digest)]))
        .import(&env);
    let config = config(&host).write(&env);
    env.open_incident(&config, "evil");
    let gone = registry.request(crate::harness::http::Request::new(
        "DELETE",
        &format!("/v2/team/app/manifests/{}", index.digest),
    ));
    assert_eq!(gone.status, 202, "{}", gone.text());
    let run = output(&env, &mut env.execute(&config, "1", &["--no-evidence"]));
    assert!(run.starts_with("exit: 0\n"), "{run}");
    assert!(manifest_exists(&registry, "team/app", &one.digest));
    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(verify.starts_with("exit: 1\n"), "{verify}");
    let line = line_of(&verify, "(tags: multi)");
    assert!(
        line.starts_with("  UNVERIFIED")
            && line.contains("was gone before what it lists was learned"),
        "{line}"
    );
    ok(env.cmd_with(&config).args([
        "incident",
        "accept",
        "1",
        "1",
        "--reason",
        "its children were deleted by hand",
    ]));
    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(verify.starts_with("exit: 0\n"), "{verify}");
}

/// A 404 is "gone" only when the registry says so: an error code naming an unknown manifest.
/// A front's own 404 in front of it (with the registry's API version header, as a front that
/// adds it to every answer sends it, or without), on the delete and then on the look that
/// follows, leaves the action failed (exit 1) and the target unverified, the manifest still
/// there; once the registry answers again, the rerun deletes it and verify finds it gone.
#[test]
fn a_404_that_is_not_the_registrys_proves_nothing_gone() {
    let Some(registry) = harness::registry() else {
        return;
    };
    let proxy = FaultProxy::start(&registry.host());
    let env = Env::new();
    let h = history(&env, &registry);
    let config = config(&registry.host()).endpoint(&proxy.url()).write(&env);
    env.open_incident(&config, "evil");
    let api = ("Docker-Distribution-API-Version", "registry/2.0");
    proxy.inject(Fault::status(404).on("DELETE").header(api.0, api.1));
    let run = output(&env, &mut env.execute(&config, "1", &["--no-evidence"]));
    assert!(run.starts_with("exit: 1\n"), "{run}");
    assert!(!run.contains("already gone"), "{run}");
    assert!(run.contains("not taken as proof"), "{run}");
    assert!(manifest_exists(&registry, "team/app", &h.inside.digest));

    // One look at each of the two targets (the one outside the scope is looked at too), and
    // at the tag each was recorded under.
    for _ in 0..2 {
        proxy.inject(Fault::status(404).on("HEAD").header(api.0, api.1));
        proxy.inject(Fault::status(404).on("GET"));
        proxy.inject(Fault::status(404).on("GET").header(api.0, api.1));
    }
    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert_eq!(proxy.pending_faults(), 0, "{verify}");
    assert!(verify.starts_with("exit: 1\n"), "{verify}");
    let line = line_of(&verify, &h.inside.digest);
    assert!(line.starts_with("  UNVERIFIED"), "{line}");

    // The action outside the scope keeps the rerun at exit 5 and verify at 1.
    let run = output(&env, &mut env.execute(&config, "1", &["--no-evidence"]));
    assert!(run.contains("1 done"), "{run}");
    assert!(!manifest_exists(&registry, "team/app", &h.inside.digest));
    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    let line = line_of(&verify, &h.inside.digest);
    assert!(line.starts_with("  gone"), "{line}");
}

/// A digest pushed where no hook saw it (the seed is the only handle on it) is deleted in the
/// repository the seed names, and verify is not clean before; the same content recorded in
/// another repository is seeded too. A bare digest with no recorded push is left to people,
/// and verify stays unverified until it is accepted.
#[test]
fn a_seeded_digest_nobody_recorded_pushing_is_deleted_where_the_seed_names_it() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let host = registry.host();
    let h = history(&env, &registry);
    let mut pusher = Pusher::new(&registry);
    let poison = pusher.cache_manifest("web/cache", Some("main"), "pushed by hand");
    let copy = pusher.cache_manifest("team/app", Some("copy"), "evil inside");
    assert_eq!(copy.digest, h.inside.digest);
    let config = ConfigBuilder::registry(&host).write(&env);
    let seed = format!("{host}/web/cache@{}", poison.digest);
    let open = ok(env
        .cmd_with(&config)
        .args(["incident", "open", "--cache-ref", &seed]));
    assert!(
        open.lines()
            .any(|l| l.contains("delete-manifest") && l.contains(&poison.digest)),
        "{open}"
    );
    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(verify.starts_with("exit: 1\n"), "{verify}");
    output(&env, &mut env.execute(&config, "1", &[]));
    assert!(!manifest_exists(&registry, "web/cache", &poison.digest));
    assert!(manifest_exists(&registry, "team/app", &h.clean.digest));
    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(verify.starts_with("exit: 0\n"), "{verify}");

    // Content recorded elsewhere: the named repository and the recorded one.
    let seed = format!("{host}/web/cache@{}", h.inside.digest);
    let again = pusher.cache_manifest("web/cache", Some("main"), "evil inside");
    assert_eq!(again.digest, h.inside.digest);
    ok(env
        .cmd_with(&config)
        .args(["incident", "open", "--cache-ref", &seed]));
    output(&env, &mut env.execute(&config, "2", &[]));
    assert!(!manifest_exists(&registry, "web/cache", &h.inside.digest));
    assert!(!manifest_exists(&registry, "team/app", &h.inside.digest));

    // A bare digest: a follow-up, unverified until accepted.
    let bare = pusher.cache_manifest("web/cache", Some("other"), "anywhere");
    ok(env
        .cmd_with(&config)
        .args(["incident", "open", "--cache-ref", &bare.digest]));
    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "3"]),
    );
    assert!(verify.starts_with("exit: 1\n"), "{verify}");
    assert!(
        verify
            .lines()
            .any(|l| l.contains("UNVERIFIED") && l.contains("find the repositories that hold")),
        "{verify}"
    );
}

/// A tag seed's window ends when the incident opens: the clean rebuild the runbook asks for,
/// pushed to the tag afterwards, is not tainted, so verify is clean and a rerun of the purge
/// leaves it. Without the end, every re-trace took the rebuild for what the tag held.
#[test]
fn a_rebuild_pushed_to_a_seeded_tag_after_the_incident_opened_is_kept() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let host = registry.host();
    let mut pusher = Pusher::new(&registry);
    let before = pusher.cache_manifest("team/app", Some("main"), "before");
    let poison = pusher.cache_manifest("team/app", Some("main"), "poison");
    build::History::new()
        .run(
            Run::new("rel", 100)
                .day(1)
                .exported([format!("{host}/team/app:main@{}", before.digest)]),
        )
        .run(
            Run::new("rel", 101)
                .day(2)
                .exported([format!("{host}/team/app:main@{}", poison.digest)]),
        )
        .import(&env);
    let config = ConfigBuilder::registry(&host).write(&env);
    let tag = format!("{host}/team/app:main");
    ok(env.cmd_with(&config).args([
        "incident",
        "open",
        "--cache-ref",
        &tag,
        "--since",
        "2026-01-02T00:00:00Z",
    ]));
    output(&env, &mut env.execute(&config, "1", &[]));
    assert!(!manifest_exists(&registry, "team/app", &poison.digest));

    let rebuild = pusher.cache_manifest("team/app", Some("main"), "rebuild");
    ok(env.cmd().args([
        "record",
        "--pipeline",
        "rel",
        "--run",
        "102",
        "--builder",
        "b1",
        "--cache-to",
        &format!("type=registry,ref={tag}@{}", rebuild.digest),
    ]));
    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(verify.starts_with("exit: 0\n"), "{verify}");
    assert!(!verify.contains(&rebuild.digest[..20]), "{verify}");
    output(&env, &mut env.execute(&config, "1", &[]));
    assert!(manifest_exists(&registry, "team/app", &rebuild.digest));
    // Outside an incident, the same seed still means every digest seen under the tag since.
    let trace = ok(env
        .cmd()
        .args(["trace", "--format", "json", "--cache-ref", &tag])
        .args(["--since", "2026-01-02T00:00:00Z"]));
    assert!(trace.contains(&rebuild.digest), "{trace}");
}

/// A tainted run that exported the bytes of a release image as a cache taints the digest, but
/// the release repository, where runs only ever built it, holds an image: without
/// `--delete-images` the purge deletes the cache and leaves the image to people (a follow-up
/// verify checks), never deleting it as a cache.
#[test]
fn a_release_image_with_the_bytes_of_a_tainted_cache_is_not_deleted_as_a_cache() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let host = registry.host();
    let mut pusher = Pusher::new(&registry);
    let release = pusher.cache_manifest("team/app", Some("1.0"), "release");
    let cache = pusher.cache_manifest("team/cache", Some("evil"), "release");
    assert_eq!(release.digest, cache.digest);
    build::History::new()
        .run(
            Run::new("good", 1)
                .day(1)
                .produced([format!("{host}/team/app:1.0@{}", release.digest)]),
        )
        .run(
            Run::new("evil", 1)
                .day(2)
                .exported([format!("{host}/team/cache:evil@{}", cache.digest)]),
        )
        .import(&env);
    let config = config(&host).write(&env);
    let open = env.open_incident(&config, "evil");
    let deletes: Vec<&str> = open
        .lines()
        .filter(|l| l.contains("delete-manifest"))
        .collect();
    assert_eq!(deletes.len(), 1, "{open}");
    assert!(deletes[0].contains("team/cache@"), "{open}");
    assert!(
        open.lines()
            .any(|l| l.contains("follow-up") && l.contains("rebuild or quarantine image")),
        "{open}"
    );
    output(&env, &mut env.execute(&config, "1", &[]));
    assert!(!manifest_exists(&registry, "team/cache", &cache.digest));
    assert!(manifest_exists(&registry, "team/app", &release.digest));
    // The follow-up's command runs as it reads: an incident that deletes the image.
    let follow_up = env.incident_action(&config, "1", "the image", |a| a["kind"] == "follow-up");
    let command = follow_up["target"]["command"].as_str().unwrap();
    let (command, _) = command.split_once('#').unwrap();
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(words[0], "cachewarden", "{command}");
    ok(env.cmd_with(&config).args(&words[1..]));
    output(&env, &mut env.execute(&config, "2", &[]));
    assert!(!manifest_exists(&registry, "team/app", &release.digest));
}

/// A tainted run recorded without what was over a limit may have written what no record
/// names: the plan holds a follow-up for it, and verify is not clean until it is accepted.
#[test]
fn a_truncated_tainted_run_leaves_a_follow_up_verify_does_not_pass() {
    let env = Env::new();
    let history = env.write(
        "history.jsonl",
        r#"{"v":1,"type":"run","pipeline":"evil","run":"1","step":"s","builder":"b1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T01:00:00Z","truncated":true}
"#,
    );
    ok(env.cmd().arg("import").arg(&history));
    let config = ConfigBuilder::new().scope_builders(["b1"]).write(&env);
    let open = env.open_incident(&config, "evil");
    assert!(
        open.lines()
            .any(|l| l.contains("follow-up") && l.contains("was recorded without what was")),
        "{open}"
    );
    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(verify.starts_with("exit: 1\n"), "{verify}");
    let unverified = |verify: &str| {
        verify
            .lines()
            .any(|l| l.contains("UNVERIFIED") && l.contains("was recorded without what was"))
    };
    assert!(unverified(&verify), "{verify}");
    let follow_up = env.incident_action(&config, "1", "the truncated run", |a| {
        a["target"]["what"]
            .as_str()
            .is_some_and(|w| w.contains("recorded without what was over a limit"))
    });
    let seq = follow_up["seq"].as_i64().unwrap();
    ok(env.cmd_with(&config).args([
        "incident",
        "accept",
        "1",
        &seq.to_string(),
        "--reason",
        "mounts on b1 pruned by hand",
    ]));
    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(!unverified(&verify), "{verify}");
    assert!(verify.contains("mounts on b1 pruned by hand"), "{verify}");
}
