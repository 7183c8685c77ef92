//! What purges learn about manifests and keep: the dry run and the evidence record each
//! digest's media type and child manifests, and the execution deletes by them without asking
//! the registry again.

use std::path::{Path, PathBuf};

use crate::build::{History, Run};
use crate::common::{Env, manifest_exists, ok, output};
use crate::harness::http::Request;
use crate::harness::oci::{Pushed, Pusher};
use crate::harness::proxy::{Fault, FaultProxy, Seen};
use crate::harness::{self, Registry};
use crate::purge::config;

/// `evil` exported an image index of two images, and a plain cache manifest, in `team/app`.
struct Indexed {
    index: Pushed,
    children: Vec<Pushed>,
    plain: Pushed,
}

fn indexed(env: &Env, registry: &Registry) -> Indexed {
    let host = registry.host();
    let mut pusher = Pusher::new(registry);
    let children = vec![
        pusher.image("team/app", None, "amd64", false),
        pusher.image("team/app", None, "arm64", false),
    ];
    let index = pusher.index("team/app", Some("multi"), &children);
    let plain = pusher.cache_manifest("team/app", Some("cache"), "evil");
    History::new()
        .run(Run::new("evil", 1).exported([
            format!("{host}/team/app:multi@{}", index.digest),
            format!("{host}/team/app:cache@{}", plain.digest),
        ]))
        .import(env);
    Indexed {
        index,
        children,
        plain,
    }
}

/// A registry behind a proxy that sees every request, with `evil`'s history imported and an
/// incident open on it; `None` when the registry is not installed here.
fn opened() -> Option<(Registry, Env, FaultProxy, Indexed, PathBuf)> {
    let registry = harness::registry()?;
    let proxy = FaultProxy::start(&registry.host());
    let env = Env::new();
    let h = indexed(&env, &registry);
    let config = config(&registry.host()).endpoint(&proxy.url()).write(&env);
    env.open_incident(&config, "evil");
    Some((registry, env, proxy, h, config))
}

/// `incident purge 1 --execute` without evidence, which must succeed.
fn execute(env: &Env, config: &Path) {
    let run = output(env, &mut env.execute(config, "1", &["--no-evidence"]));
    assert!(run.starts_with("exit: 0\n"), "{run}");
}

/// Manifest requests with this method among `seen`.
fn manifest_requests(seen: &[Seen], method: &str) -> usize {
    seen.iter()
        .filter(|s| s.method == method && s.target.contains("/manifests/"))
        .count()
}

/// The recorded (media type, children as a JSON array) of a digest.
fn recorded(env: &Env, digest: &str) -> Option<(String, String)> {
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    conn.query_row(
        "SELECT media_type, children FROM manifest_facts WHERE digest = ?1",
        [digest],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .ok()
}

/// What the store should record for the index: its media type and its child manifests.
fn index_facts(h: &Indexed) -> Option<(String, String)> {
    let children: Vec<&String> = h.children.iter().map(|c| &c.digest).collect();
    Some((
        h.index.media_type.clone(),
        serde_json::to_string(&children).unwrap(),
    ))
}

/// How many of the index, its children and the plain manifest the registry still serves.
fn present(registry: &Registry, h: &Indexed) -> usize {
    std::iter::once(&h.index)
        .chain(&h.children)
        .chain([&h.plain])
        .filter(|p| manifest_exists(registry, "team/app", &p.digest))
        .count()
}

/// Asserts that each of `manifests` is in `team/app` (`there`), or not.
fn assert_in_team_app(registry: &Registry, manifests: &[&Pushed], there: bool) {
    for manifest in manifests {
        assert_eq!(
            manifest_exists(registry, "team/app", &manifest.digest),
            there,
            "{}",
            manifest.digest
        );
    }
}

/// The dry run shows how many child manifests go with an index and records what each digest
/// is; a second dry run reads that back and only asks whether the manifests are still there.
#[test]
fn dry_run_records_facts_and_shows_index_children() {
    let Some((registry, env, proxy, h, config)) = opened() else {
        return;
    };
    let dry = output(&env, env.cmd_with(&config).args(["incident", "purge", "1"]));
    assert!(dry.starts_with("exit: 0\n"), "{dry}");
    let index_line = dry
        .lines()
        .find(|l| l.contains(&h.index.digest))
        .unwrap_or_default();
    assert!(
        index_line.contains("present (application/vnd.oci.image.index.v1+json); 2 child manifests will be deleted with it"),
        "{dry}"
    );
    let plain_line = dry
        .lines()
        .find(|l| l.contains(&h.plain.digest))
        .unwrap_or_default();
    assert!(
        plain_line.ends_with("present (application/vnd.oci.image.manifest.v1+json)"),
        "{dry}"
    );
    assert_eq!(recorded(&env, &h.index.digest), index_facts(&h));
    assert_eq!(
        recorded(&env, &h.plain.digest),
        Some((h.plain.media_type.clone(), "[]".to_owned()))
    );
    assert_eq!(present(&registry, &h), 4, "the dry run deleted something");

    let before = proxy.seen().len();
    let again = output(&env, env.cmd_with(&config).args(["incident", "purge", "1"]));
    assert!(again.starts_with("exit: 0\n"), "{again}");
    assert!(
        again.contains("2 child manifests will be deleted with it"),
        "{again}"
    );
    let seen = &proxy.seen()[before..];
    assert_eq!(manifest_requests(seen, "GET"), 0, "{seen:?}");
    assert_eq!(manifest_requests(seen, "HEAD"), 2, "{seen:?}");
}

/// After a dry run the execution sends no HEAD and no GET: every manifest is deleted by what
/// was recorded, an index after its child manifests.
#[test]
fn execute_after_dry_run_deletes_index_and_children_without_head() {
    let Some((registry, env, proxy, h, config)) = opened() else {
        return;
    };
    ok(env.cmd_with(&config).args(["incident", "purge", "1"]));
    let before = proxy.seen().len();
    execute(&env, &config);
    let seen = &proxy.seen()[before..];
    assert_eq!(manifest_requests(seen, "HEAD"), 0, "{seen:?}");
    assert_eq!(manifest_requests(seen, "GET"), 0, "{seen:?}");
    assert_eq!(manifest_requests(seen, "DELETE"), 4, "{seen:?}");
    let deletes: Vec<&str> = seen
        .iter()
        .filter(|s| s.method == "DELETE")
        .map(|s| s.target.as_str())
        .collect();
    let at = |digest: &str| deletes.iter().position(|t| t.ends_with(digest)).unwrap();
    for child in &h.children {
        assert!(at(&child.digest) < at(&h.index.digest), "{deletes:?}");
    }
    assert_eq!(present(&registry, &h), 0);
    let json = ok(env
        .cmd_with(&config)
        .args(["incident", "show", "1", "--format", "json"]));
    assert!(json.contains("deleted, with 2 child manifests"), "{json}");
}

/// Without a dry run the execution asks the registry what each manifest is, deletes an index
/// with its children all the same, and records what it learned.
#[test]
fn execute_without_dry_run_probes_and_records_facts() {
    let Some((registry, env, proxy, h, config)) = opened() else {
        return;
    };
    execute(&env, &config);
    let seen = proxy.seen();
    // The index and the plain manifest, and each child of the index, which could be an
    // index in turn.
    assert_eq!(manifest_requests(&seen, "HEAD"), 4, "{seen:?}");
    assert_eq!(
        manifest_requests(&seen, "GET"),
        1,
        "only the index is fetched: {seen:?}"
    );
    assert_eq!(present(&registry, &h), 0);
    assert_eq!(recorded(&env, &h.index.digest), index_facts(&h));
    assert_eq!(
        recorded(&env, &h.plain.digest),
        Some((h.plain.media_type.clone(), "[]".to_owned()))
    );
}

/// The evidence fetches every manifest anyway: what it learns spares the execution its probes.
#[test]
fn evidence_records_facts_for_the_execution() {
    let Some((registry, env, proxy, h, config)) = opened() else {
        return;
    };
    let run = output(&env, &mut env.execute(&config, "1", &[]));
    assert!(run.starts_with("exit: 0\n"), "{run}");
    let seen = proxy.seen();
    assert_eq!(manifest_requests(&seen, "HEAD"), 0, "{seen:?}");
    assert_eq!(present(&registry, &h), 0);
    for child in &h.children {
        assert_eq!(
            recorded(&env, &child.digest),
            Some((child.media_type.clone(), "[]".to_owned()))
        );
    }
    assert_eq!(recorded(&env, &h.index.digest), index_facts(&h));
}

/// An index deleted by someone else after the dry run still takes its recorded children with
/// it: the registry can no longer say what they were.
#[test]
fn recorded_children_of_an_index_already_gone_are_deleted() {
    let Some((registry, env, _proxy, h, config)) = opened() else {
        return;
    };
    ok(env.cmd_with(&config).args(["incident", "purge", "1"]));
    let path = format!("/v2/team/app/manifests/{}", h.index.digest);
    assert_eq!(registry.request(Request::new("DELETE", &path)).status, 202);
    let dry = ok(env.cmd_with(&config).args(["incident", "purge", "1"]));
    assert!(
        dry.contains("already gone; its 2 recorded child manifests will be deleted if present"),
        "{dry}"
    );
    execute(&env, &config);
    assert_eq!(present(&registry, &h), 0);
    let json = ok(env
        .cmd_with(&config)
        .args(["incident", "show", "1", "--format", "json"]));
    assert!(
        json.contains("already gone, with 2 child manifests"),
        "{json}"
    );
}

/// An index's pusher chooses what it lists: an attacker's index that lists a release's own
/// manifest (recorded as the trusted pipeline's product) besides its own image has its own
/// image deleted with it, while the release's manifest is left, said so, and does not keep
/// the incident from verifying clean.
#[test]
fn a_listed_manifest_a_trusted_run_recorded_is_left() {
    let Some((registry, env)) = crate::common::registry_env() else {
        return;
    };
    let host = registry.host();
    let mut pusher = Pusher::new(&registry);
    let release = pusher.image("team/app", Some("1.0"), "release", false);
    let planted = pusher.image("team/app", None, "planted", false);
    let index = pusher.index(
        "team/app",
        Some("multi"),
        &[planted.clone(), release.clone()],
    );
    History::new()
        .run(Run::new("release", 1).produced([format!("{host}/team/app:1.0@{}", release.digest)]))
        .run(Run::new("evil", 1).exported([format!("{host}/team/app:multi@{}", index.digest)]))
        .import(&env);
    let config = config(&host).write(&env);
    env.open_incident(&config, "evil");
    // The first dry run learns what the index lists; the next names the child it leaves.
    ok(env.cmd_with(&config).args(["incident", "purge", "1"]));
    let dry = ok(env.cmd_with(&config).args(["incident", "purge", "1"]));
    assert!(
        dry.contains("1 child manifest will be deleted with it; 1 listed child manifest left"),
        "{dry}"
    );
    let run = output(&env, &mut env.execute(&config, "1", &["--no-evidence"]));
    assert!(run.starts_with("exit: 0\n"), "{run}");
    let show = ok(env
        .cmd_with(&config)
        .args(["incident", "show", "1", "--format", "json"]));
    assert!(
        show.contains("1 listed child manifest left: recorded runs outside the incident pushed it"),
        "{show}"
    );
    assert!(!manifest_exists(&registry, "team/app", &index.digest));
    assert!(!manifest_exists(&registry, "team/app", &planted.digest));
    assert!(manifest_exists(&registry, "team/app", &release.digest));
    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(verify.starts_with("exit: 0\n"), "{verify}");
}

/// The attacker's index `team/app:multi` lists a planted image, and an index under another
/// tag (`shield`) lists it too; beside the attacker's run, `others(host, planted, shield)`
/// recorded what they recorded. The purge deletes the index and the planted image with it,
/// and verification checks both gone.
fn the_planted_child_goes(others: impl FnOnce(&str, &Pushed, &Pushed) -> Vec<Run>) {
    let Some((registry, env)) = crate::common::registry_env() else {
        return;
    };
    let host = registry.host();
    let mut pusher = Pusher::new(&registry);
    let planted = pusher.image("team/app", None, "planted", false);
    let index = pusher.index("team/app", Some("multi"), std::slice::from_ref(&planted));
    let shield = pusher.index("team/app", Some("shield"), std::slice::from_ref(&planted));
    History::new()
        .run(Run::new("evil", 1).exported([format!("{host}/team/app:multi@{}", index.digest)]))
        .runs(others(&host, &planted, &shield))
        .import(&env);
    let config = config(&host).write(&env);
    env.open_incident(&config, "evil");
    ok(env.cmd_with(&config).args(["incident", "purge", "1"]));
    let run = output(&env, &mut env.execute(&config, "1", &["--no-evidence"]));
    assert!(run.starts_with("exit: 0\n"), "{run}");
    assert!(!manifest_exists(&registry, "team/app", &index.digest));
    assert!(!manifest_exists(&registry, "team/app", &planted.digest));
    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(verify.starts_with("exit: 0\n"), "{verify}");
}

/// A run outside the incident that only read a manifest the attacker's index lists does not
/// vouch for it: it may have read the planted one. The listed manifest is deleted with the
/// index, and verification checks it.
#[test]
fn a_listed_manifest_a_run_only_read_is_deleted() {
    the_planted_child_goes(|host, planted, _| {
        vec![Run::new("sandbox", 9).imported([format!("{host}/team/app@{}", planted.digest)])]
    });
}

/// A run of an untrusted pipeline (a pull request) that claims to have pushed the manifest the
/// attacker's index lists vouches for nothing: an untrusted pipeline records what it likes.
/// Nor does a run recorded with no level in a store that keeps levels. The listed manifest is
/// deleted with the index, and the tagged index it claims to have pushed listing it keeps
/// nothing either.
#[test]
fn a_listed_manifest_an_untrusted_run_claims_to_have_pushed_is_deleted() {
    the_planted_child_goes(|host, planted, shield| {
        vec![
            Run::new("forks-pr", 9).trust("untrusted").produced([
                format!("{host}/team/app@{}", planted.digest),
                format!("{host}/team/app:shield@{}", shield.digest),
            ]),
            Run::new("unranked", 3).produced([format!("{host}/team/app@{}", planted.digest)]),
        ]
    });
}

/// An index that lists an index: the purge deletes the image at the bottom, the index in the
/// middle and the top one, leaving what a release's index nested the same way lists, and
/// verify looks at each level. When the image at the bottom is pushed back, verify finds it.
#[test]
fn an_index_nested_in_an_index_goes_whole() {
    let Some((registry, env)) = crate::common::registry_env() else {
        return;
    };
    let host = registry.host();
    let mut pusher = Pusher::new(&registry);
    let shared = pusher.image("team/app", None, "amd64", false);
    let release_inner = pusher.index("team/app", None, std::slice::from_ref(&shared));
    let release = pusher.index(
        "team/app",
        Some("1.0"),
        std::slice::from_ref(&release_inner),
    );
    let planted = pusher.image("team/app", None, "planted", false);
    let inner = pusher.index("team/app", None, &[planted.clone(), shared.clone()]);
    let top = pusher.index("team/app", Some("evil"), std::slice::from_ref(&inner));
    History::new()
        .run(Run::new("release", 1).produced([format!("{host}/team/app:1.0@{}", release.digest)]))
        .run(Run::new("evil", 1).exported([format!("{host}/team/app:evil@{}", top.digest)]))
        .import(&env);
    let config = config(&host).write(&env);
    env.open_incident(&config, "evil");
    let run = output(&env, &mut env.execute(&config, "1", &["--no-evidence"]));
    assert!(run.starts_with("exit: 0\n"), "{run}");
    assert_in_team_app(&registry, &[&top, &inner, &planted], false);
    assert_in_team_app(&registry, &[&release, &release_inner, &shared], true);
    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(verify.starts_with("exit: 0\n"), "{verify}");

    let back = pusher.image("team/app", None, "planted", false);
    assert_eq!(back.digest, planted.digest);
    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(
        verify.starts_with("exit: 1\n") && verify.contains(&planted.digest),
        "{verify}"
    );
}

/// Indexes nested deeper than a purge follows: the action fails, saying so, instead of
/// leaving the image at the bottom behind as if done, and deletes nothing; verify does not
/// pass. Once what it named is deleted by hand, the rerun deletes the rest.
#[test]
fn indexes_nested_too_deep_fail_the_delete() {
    let Some(registry) = harness::registry() else {
        return;
    };
    let env = Env::new();
    let host = registry.host();
    let mut pusher = Pusher::new(&registry);
    let mut top = pusher.image("team/app", None, "bottom", false);
    let mut chain = vec![top.clone()];
    for _ in 0..10 {
        top = pusher.index("team/app", None, std::slice::from_ref(&top));
        chain.push(top.clone());
    }
    let top = pusher.index("team/app", Some("deep"), std::slice::from_ref(&top));
    History::new()
        .run(Run::new("evil", 1).exported([format!("{host}/team/app:deep@{}", top.digest)]))
        .import(&env);
    let config = config(&host).write(&env);
    env.open_incident(&config, "evil");
    let run = output(&env, &mut env.execute(&config, "1", &["--no-evidence"]));
    assert!(
        run.starts_with("exit: 1\n") && run.contains("nested more than"),
        "{run}"
    );
    assert!(manifest_exists(&registry, "team/app", &top.digest));
    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(verify.starts_with("exit: 1\n"), "{verify}");
    assert!(
        chain
            .iter()
            .all(|m| manifest_exists(&registry, "team/app", &m.digest))
    );

    // By hand: the deepest levels, which the error named, and what they list.
    for manifest in &chain[..4] {
        let gone = registry.request(crate::harness::http::Request::new(
            "DELETE",
            &format!("/v2/team/app/manifests/{}", manifest.digest),
        ));
        assert_eq!(gone.status, 202, "{}", gone.text());
    }
    let run = output(&env, &mut env.execute(&config, "1", &["--no-evidence"]));
    assert!(run.starts_with("exit: 0\n"), "{run}");
    assert!(
        chain
            .iter()
            .chain([&top])
            .all(|m| !manifest_exists(&registry, "team/app", &m.digest))
    );
}

/// A release's multi-platform image (an index under a tag, recorded as the trusted pipeline's
/// product) lists a manifest that the attacker's index lists too: the purge deletes the
/// attacker's index and own image, and leaves the shared manifest, which the release image
/// needs. An index under a tag that no recorded run names (one the attacker could push to
/// shield its image) keeps nothing.
#[test]
fn a_manifest_a_recorded_release_index_lists_is_left() {
    let Some((registry, env)) = crate::common::registry_env() else {
        return;
    };
    let host = registry.host();
    let mut pusher = Pusher::new(&registry);
    let shared = pusher.image("team/app", None, "amd64", false);
    let arm = pusher.image("team/app", None, "arm64", false);
    let release = pusher.index("team/app", Some("1.0"), &[shared.clone(), arm.clone()]);
    let planted = pusher.image("team/app", None, "planted", false);
    let index = pusher.index(
        "team/app",
        Some("cache"),
        &[shared.clone(), planted.clone()],
    );
    let decoy = pusher.index("team/app", Some("decoy"), std::slice::from_ref(&planted));
    History::new()
        .run(Run::new("release", 1).produced([format!("{host}/team/app:1.0@{}", release.digest)]))
        .run(Run::new("evil", 1).exported([format!("{host}/team/app:cache@{}", index.digest)]))
        .import(&env);
    let config = config(&host).write(&env);
    env.open_incident(&config, "evil");
    ok(env.cmd_with(&config).args(["incident", "purge", "1"]));
    let dry = ok(env.cmd_with(&config).args(["incident", "purge", "1"]));
    assert!(
        dry.contains("1 child manifest will be deleted with it; 1 listed child manifest left"),
        "{dry}"
    );
    let run = output(&env, &mut env.execute(&config, "1", &["--no-evidence"]));
    assert!(run.starts_with("exit: 0\n"), "{run}");
    assert!(!manifest_exists(&registry, "team/app", &index.digest));
    assert!(!manifest_exists(&registry, "team/app", &planted.digest));
    assert_in_team_app(&registry, &[&release, &shared, &arm, &decoy], true);
    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(verify.starts_with("exit: 0\n"), "{verify}");
}

/// A release's multi-platform image recorded by digest and no longer under a tag (its tag
/// moved on) still needs what it lists: the attacker's index that lists one of its manifests
/// is deleted with its own image, and the release's manifests stay.
#[test]
fn a_manifest_an_untagged_recorded_release_index_lists_is_left() {
    let Some((registry, env)) = crate::common::registry_env() else {
        return;
    };
    let host = registry.host();
    let mut pusher = Pusher::new(&registry);
    let shared = pusher.image("team/app", None, "amd64", false);
    let arm = pusher.image("team/app", None, "arm64", false);
    let release = pusher.index("team/app", None, &[shared.clone(), arm.clone()]);
    let planted = pusher.image("team/app", None, "planted", false);
    let index = pusher.index("team/app", Some("pr"), &[shared.clone(), planted.clone()]);
    History::new()
        .run(Run::new("release", 1).produced([format!("{host}/team/app@{}", release.digest)]))
        .run(Run::new("evil", 1).exported([format!("{host}/team/app:pr@{}", index.digest)]))
        .import(&env);
    let config = config(&host).write(&env);
    env.open_incident(&config, "evil");
    ok(env.cmd_with(&config).args(["incident", "purge", "1"]));
    let run = output(&env, &mut env.execute(&config, "1", &["--no-evidence"]));
    assert!(run.starts_with("exit: 0\n"), "{run}");
    assert!(!manifest_exists(&registry, "team/app", &index.digest));
    assert!(!manifest_exists(&registry, "team/app", &planted.digest));
    assert_in_team_app(&registry, &[&release, &shared, &arm], true);
    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(verify.starts_with("exit: 0\n"), "{verify}");
}

/// Every `*.config.json` evidence file under `dir`, with its bytes.
fn saved_configs(dir: &Path) -> Vec<Vec<u8>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(saved_configs(&path));
        } else if path.to_string_lossy().ends_with(".config.json") {
            found.push(std::fs::read(&path).unwrap());
        }
    }
    found
}

/// Cache manifests that share one config are each saved with it, while the config is fetched
/// from the registry once for the whole execution.
#[test]
fn a_config_shared_by_many_manifests_is_fetched_once_for_the_evidence() {
    let Some(registry) = harness::registry() else {
        return;
    };
    let proxy = FaultProxy::start(&registry.host());
    let env = Env::new();
    let host = registry.host();
    let mut pusher = Pusher::new(&registry);
    let caches: Vec<Pushed> = (0..4)
        .map(|i| pusher.cache_manifest("team/app", None, &format!("evil-{i}")))
        .collect();
    History::new()
        .run(
            Run::new("evil", 1).exported(
                caches
                    .iter()
                    .map(|c| format!("{host}/team/app:cache@{}", c.digest)),
            ),
        )
        .import(&env);
    let config = config(&host).endpoint(&proxy.url()).write(&env);
    env.open_incident(&config, "evil");

    let run = output(
        &env,
        &mut env.execute(&config, "1", &["--concurrency", "1"]),
    );
    assert!(run.starts_with("exit: 0\n"), "{run}");
    let seen = proxy.seen();
    let config_gets: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.method == "GET" && s.target.contains("/blobs/"))
        .collect();
    assert_eq!(config_gets.len(), 1, "{seen:?}");
    let saved = saved_configs(env.path());
    assert_eq!(saved.len(), caches.len(), "{run}");
    for bytes in &saved {
        assert_eq!(bytes, br#"{"layers":[],"records":[]}"#);
    }
    for c in &caches {
        assert!(!manifest_exists(&registry, "team/app", &c.digest));
    }
}

/// An index is as tainted as what it lists: `check` of a tag that now names an index wrapping
/// a manifest an open incident holds tainted says TAINTED (exit 5), naming the manifest; the
/// same for a digest once the store knows what the index lists.
#[test]
fn check_sees_a_tainted_manifest_inside_an_index() {
    let Some((registry, env)) = crate::common::registry_env() else {
        return;
    };
    let host = registry.host();
    let mut pusher = Pusher::new(&registry);
    let planted = pusher.image("team/app", None, "planted", false);
    let wrapper = pusher.index("team/app", Some("multi"), std::slice::from_ref(&planted));
    History::new()
        .run(Run::new("evil", 1).exported([format!("{host}/team/app:cache@{}", planted.digest)]))
        .import(&env);
    let config = config(&host).write(&env);
    env.open_incident(&config, "evil");
    let check = output(
        &env,
        env.cmd_with(&config)
            .args(["check", &format!("{host}/team/app:multi")]),
    );
    assert!(check.starts_with("exit: 5\n"), "{check}");
    assert!(
        check.contains(&format!(
            "TAINTED  {host}/team/app:multi ({})",
            wrapper.digest
        )) && check.contains(&format!("it lists {}", planted.digest)),
        "{check}"
    );
    let json = output(
        &env,
        env.cmd_with(&config).args([
            "check",
            "--format",
            "json",
            &format!("{host}/team/app:multi"),
        ]),
    );
    assert!(
        json.contains(&planted.digest) && json.contains("tainted_children"),
        "{json}"
    );
}

/// A tag is resolved where the config's `[[registry]] endpoint` says the registry is, as a purge
/// reaches it: `check` of a tag under a host name that resolves nowhere asks the endpoint, and
/// finds the tainted manifest the tag names.
#[test]
fn check_resolves_a_tag_at_the_registrys_configured_endpoint() {
    let Some((registry, env)) = crate::common::registry_env() else {
        return;
    };
    let named = "reg.invalid:5000";
    let mut pusher = Pusher::new(&registry);
    let planted = pusher.image("team/app", Some("latest"), "planted", false);
    History::new()
        .run(Run::new("evil", 1).exported([format!("{named}/team/app:cache@{}", planted.digest)]))
        .import(&env);
    let config = config(named).endpoint(&registry.url()).write(&env);
    env.open_incident(&config, "evil");
    let check = output(
        &env,
        env.cmd_with(&config)
            .args(["check", &format!("{named}/team/app:latest")]),
    );
    assert!(check.starts_with("exit: 5\n"), "{check}");
    assert!(
        check.contains(&format!(
            "TAINTED  {named}/team/app:latest ({})",
            planted.digest
        )),
        "{check}"
    );
    let absent = output(
        &env,
        env.cmd_with(&config)
            .args(["check", &format!("{named}/team/app:nothing")]),
    );
    assert!(
        absent.starts_with("exit: 4\n") && absent.contains("no such tag"),
        "{absent}"
    );
}

/// `wrap` refuses a build from an index that lists a manifest an open incident holds tainted,
/// named by tag or by digest, as `check` does: the build would pull that manifest for its
/// platform. An index that lists only clean manifests builds.
#[test]
fn wrap_refuses_an_index_that_lists_a_tainted_manifest() {
    let Some((registry, env)) = crate::common::registry_env() else {
        return;
    };
    let host = registry.host();
    let mut pusher = Pusher::new(&registry);
    let planted = pusher.image("team/app", None, "planted", false);
    let wrapper = pusher.index("team/app", Some("multi"), std::slice::from_ref(&planted));
    let clean = pusher.image("team/app", None, "clean", false);
    pusher.index("team/app", Some("fine"), std::slice::from_ref(&clean));
    History::new()
        .run(Run::new("evil", 1).exported([format!("{host}/team/app:cache@{}", planted.digest)]))
        .import(&env);
    let config = config(&host).write(&env);
    env.open_incident(&config, "evil");
    let docker = env.fake_docker("exit 0\n");
    let wrap = |run: &str, from: &str| {
        env.write("ctx/Dockerfile", &format!("FROM {from}\n"));
        let mut cmd = env.cmd_with(&config);
        cmd.args([
            "wrap",
            "--pipeline",
            "victim",
            "--run",
            run,
            "--builder",
            "ci-7",
            "--",
        ])
        .arg(&docker)
        .args([
            "build",
            "-t",
            "app",
            &env.path().join("ctx").to_string_lossy(),
        ]);
        output(&env, &mut cmd)
    };
    for (run, from) in [
        ("1", format!("{host}/team/app:multi")),
        ("2", format!("{host}/team/app@{}", wrapper.digest)),
    ] {
        let out = wrap(run, &from);
        assert!(out.starts_with("exit: 5\n"), "{out}");
        assert!(
            out.contains(&format!(
                "({}) is tainted in open incident 1",
                wrapper.digest
            )) && out.contains(&format!("it lists {}", planted.digest)),
            "{out}"
        );
    }
    let out = wrap("3", &format!("{host}/team/app:fine"));
    assert!(out.starts_with("exit: 0\n"), "{out}");
    // Indexes of indexes are followed as deep as a purge follows them.
    let mut nested = wrapper.clone();
    for _ in 0..4 {
        nested = pusher.index("team/app", None, std::slice::from_ref(&nested));
    }
    let out = wrap("4", &format!("{host}/team/app@{}", nested.digest));
    assert!(out.starts_with("exit: 5\n"), "{out}");
    assert!(
        out.contains(&format!("it lists {}", planted.digest)),
        "{out}"
    );
    let export = ok(env.cmd().arg("export"));
    assert!(
        !export.contains("\"pipeline\":\"victim\",\"run\":\"1\"")
            && !export.contains("\"pipeline\":\"victim\",\"run\":\"2\""),
        "{export}"
    );
}

/// An untrusted run that records an export of a release image's digest does not get the
/// image deleted: the plan leaves it to people (a follow-up naming the release run), and the
/// incident is clean once they accept it. A cache of the untrusted run's own still goes.
#[test]
fn a_claimed_export_of_a_release_image_leaves_it_in_place() {
    let Some((registry, env)) = crate::common::registry_env() else {
        return;
    };
    let host = registry.host();
    let mut pusher = Pusher::new(&registry);
    let release = pusher.image("team/rel", Some("1.0"), "release", false);
    let own = pusher.cache_manifest("team/rel", Some("pr"), "fork");
    History::new()
        .run(
            Run::new("release", 1)
                .trust("release")
                .produced([format!("{host}/team/rel:1.0@{}", release.digest)]),
        )
        .run(Run::new("fork-pr", 1).trust("untrusted").exported([
            format!("{host}/team/rel:1.0@{}", release.digest),
            format!("{host}/team/rel:pr@{}", own.digest),
        ]))
        .import(&env);
    let config = config(&host).write(&env);
    env.open_incident(&config, "fork-pr");
    let follow_up = env.incident_action(&config, "1", "the release image", |a| {
        a["kind"] == "follow-up"
            && a["target"]["what"]
                .as_str()
                .is_some_and(|w| w.contains(&release.digest) && w.contains("release/1/s"))
    });
    let run = output(&env, &mut env.execute(&config, "1", &["--no-evidence"]));
    assert!(run.starts_with("exit: 0\n"), "{run}");
    assert!(manifest_exists(&registry, "team/rel", &release.digest));
    assert!(!manifest_exists(&registry, "team/rel", &own.digest));
    let verify = || {
        output(
            &env,
            env.cmd_with(&config).args(["incident", "verify", "1"]),
        )
    };
    let before = verify();
    assert!(!before.starts_with("exit: 0\n"), "{before}");
    let seq = follow_up["seq"].to_string();
    ok(env.cmd_with(&config).args([
        "incident",
        "accept",
        "1",
        &seq,
        "--reason",
        "the release build's own image",
    ]));
    let after = verify();
    assert!(after.starts_with("exit: 0\n"), "{after}");

    // A claim of having built it, with images deleted too, is held the same way; the image a
    // responder seeds by hand goes.
    let claimed = pusher.image("team/rel", Some("2.0"), "release two", false);
    History::new()
        .run(
            Run::new("release", 2)
                .trust("release")
                .produced([format!("{host}/team/rel:2.0@{}", claimed.digest)]),
        )
        .run(
            Run::new("fork-pr", 2)
                .trust("untrusted")
                .produced([format!("{host}/team/rel:2.0@{}", claimed.digest)]),
        )
        .import_as(&env, "two.jsonl");
    let open = ok(env.cmd_with(&config).args([
        "incident",
        "open",
        "--run",
        "fork-pr/2",
        "--delete-images",
    ]));
    assert!(
        !open.lines().any(|l| l.contains("delete-manifest")),
        "{open}"
    );
    let seeded = ok(env.cmd_with(&config).args([
        "incident",
        "open",
        "--image",
        &format!("{host}/team/rel@{}", claimed.digest),
        "--delete-images",
    ]));
    assert!(
        seeded
            .lines()
            .any(|l| l.contains("delete-manifest") && l.contains(&claimed.digest[..20])),
        "{seeded}"
    );
}

/// While an incident is open, `wrap` asks the registry what each input lists; a registry that
/// cannot say leaves the input unchecked, which fails closed (exit 5, naming the input).
#[test]
fn wrap_fails_closed_when_the_registry_cannot_say_what_an_input_lists() {
    let Some(registry) = harness::registry() else {
        return;
    };
    let proxy = FaultProxy::start(&registry.host());
    let env = Env::new();
    let host = registry.host();
    let mut pusher = Pusher::new(&registry);
    let planted = pusher.image("team/app", None, "planted", false);
    let clean = pusher.image("team/base", None, "clean", false);
    History::new()
        .run(Run::new("evil", 1).exported([format!("{host}/team/app:cache@{}", planted.digest)]))
        .import(&env);
    let config = config(&host).endpoint(&proxy.url()).write(&env);
    env.open_incident(&config, "evil");
    let docker = env.fake_docker("exit 0\n");
    env.write(
        "ctx/Dockerfile",
        &format!("FROM {host}/team/base@{}\n", clean.digest),
    );
    proxy.inject(Fault::status(403).on("GET"));
    let mut cmd = env.cmd_with(&config);
    cmd.args([
        "wrap",
        "--pipeline",
        "victim",
        "--run",
        "1",
        "--builder",
        "ci-7",
        "--",
    ])
    .arg(&docker)
    .args([
        "build",
        "-t",
        "app",
        &env.path().join("ctx").to_string_lossy(),
    ]);
    let out = output(&env, &mut cmd);
    assert!(out.starts_with("exit: 5\n"), "{out}");
    assert!(out.contains("lists cannot be read"), "{out}");
}

/// `wrap` refuses a build whose frontend image (`# syntax=`, or `--build-arg BUILDKIT_SYNTAX`)
/// or named image context (`--build-context NAME=docker-image://REF`) an open incident holds
/// tainted, as it refuses a tainted `FROM`; a named context of another kind is an input it
/// cannot check, which fails closed while the incident is open.
#[test]
fn wrap_checks_the_frontend_and_named_contexts() {
    let Some((registry, env)) = crate::common::registry_env() else {
        return;
    };
    let host = registry.host();
    let mut pusher = Pusher::new(&registry);
    let planted = pusher.image("team/app", None, "planted", false);
    let clean = pusher.image("team/base", Some("1"), "clean", false);
    History::new()
        .run(Run::new("evil", 1).exported([format!("{host}/team/app:cache@{}", planted.digest)]))
        .import(&env);
    let config = config(&host).write(&env);
    env.open_incident(&config, "evil");
    let docker = env.fake_docker("exit 0\n");
    let tainted = format!("{host}/team/app@{}", planted.digest);
    let base = format!("{host}/team/base@{}", clean.digest);
    let wrap = |run: &str, dockerfile: &str, extra: &[&str]| {
        env.write("ctx/Dockerfile", dockerfile);
        let mut cmd = env.cmd_with(&config);
        cmd.args([
            "wrap",
            "--pipeline",
            "victim",
            "--run",
            run,
            "--builder",
            "ci-7",
            "--",
        ])
        .arg(&docker)
        .arg("build")
        .args(extra)
        .args(["-t", "app", &env.path().join("ctx").to_string_lossy()]);
        output(&env, &mut cmd)
    };
    let plain = format!("FROM {base}\n");
    let cases = [
        ("1", format!("# syntax={tainted}\n{plain}"), vec![]),
        (
            "2",
            plain.clone(),
            vec![
                "--build-arg".to_owned(),
                format!("BUILDKIT_SYNTAX={tainted}"),
            ],
        ),
        (
            "3",
            "FROM alpine\n".to_owned(),
            vec![
                "--build-context".to_owned(),
                format!("alpine=docker-image://{tainted}"),
            ],
        ),
    ];
    for (run, dockerfile, extra) in &cases {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let out = wrap(run, dockerfile, &extra);
        assert!(out.starts_with("exit: 5\n"), "{out}");
        assert!(
            out.contains(&format!(
                "({}) is tainted in open incident 1",
                planted.digest
            )),
            "{out}"
        );
    }
    let out = wrap("4", &plain, &["--build-context", "src=./somewhere"]);
    assert!(out.starts_with("exit: 5\n"), "{out}");
    assert!(
        out.contains("build context `src` is `./somewhere`"),
        "{out}"
    );
    let out = wrap("5", &plain, &[]);
    assert!(out.starts_with("exit: 0\n"), "{out}");
}

/// A manifest the incident holds tainted goes whatever lists it: a release index that lists
/// the attacker's own image (recorded as exported to another repository; a release job
/// wrapped it) keeps nothing of it.
#[test]
fn a_tainted_manifest_a_release_index_lists_still_goes() {
    let Some((registry, env)) = crate::common::registry_env() else {
        return;
    };
    let host = registry.host();
    let mut pusher = Pusher::new(&registry);
    let elsewhere = pusher.image("team/other", None, "planted", false);
    let planted = pusher.image("team/app", None, "planted", false);
    assert_eq!(planted.digest, elsewhere.digest);
    let arm = pusher.image("team/app", None, "arm64", false);
    let release = pusher.index("team/app", Some("1.0"), &[planted.clone(), arm.clone()]);
    let index = pusher.index("team/app", Some("cache"), std::slice::from_ref(&planted));
    History::new()
        .run(Run::new("evil", 1).exported([
            format!("{host}/team/app:cache@{}", index.digest),
            format!("{host}/team/other@{}", planted.digest),
        ]))
        .run(Run::new("release", 1).produced([format!("{host}/team/app:1.0@{}", release.digest)]))
        .import(&env);
    let config = config(&host).write(&env);
    env.open_incident(&config, "evil");
    let run = output(&env, &mut env.execute(&config, "1", &["--no-evidence"]));
    assert!(run.starts_with("exit: 0\n"), "{run}");
    assert!(!manifest_exists(&registry, "team/app", &index.digest));
    assert!(!manifest_exists(&registry, "team/other", &planted.digest));
    assert!(!manifest_exists(&registry, "team/app", &planted.digest));
    assert!(manifest_exists(&registry, "team/app", &arm.digest));
    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(verify.starts_with("exit: 0\n"), "{verify}");
}
