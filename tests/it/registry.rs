//! The registry client against a real distribution registry: deletes, reads, auth flows,
//! retries and tag pagination.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cachewarden::config::Config;
use cachewarden::model::Digest;
use cachewarden::remote::registry::{
    ClientOptions, DeleteOutcome, ManifestKind, OCI_INDEX, OCI_MANIFEST, RegistryClient, blobs,
    children,
};
use cachewarden::remote::retry::RetryPolicy;

use crate::harness::http::base64;
use crate::harness::oci::{Pushed, Pusher, sha256};
use crate::harness::proxy::{Fault, FaultProxy};
use crate::harness::token::{IssuerOpts, SERVICE, TokenIssuer};
use crate::harness::{self, Registry, RegistryOpts};

const REPO: &str = "cache/app";

fn digest(pushed: &Pushed) -> Digest {
    Digest::parse(&pushed.digest, "pushed digest").unwrap()
}

fn client(host: &str, options: ClientOptions) -> RegistryClient {
    RegistryClient::with_options(&Config::default(), host, options).expect("build the client")
}

/// Options that never read the machine's own docker config.
fn isolated(docker_config: &Path) -> ClientOptions {
    ClientOptions {
        docker_config_dir: Some(docker_config.to_path_buf()),
        ..ClientOptions::default()
    }
}

/// A docker config directory holding `user:password` for `host`.
fn docker_config(host: &str, user: &str, password: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let auth = base64(format!("{user}:{password}").as_bytes());
    let config = serde_json::json!({"auths": {host: {"auth": auth}}});
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    dir
}

/// Deleting a digest removes it and its tags, leaves the rest of the repository, and a second
/// delete reports it already gone.
#[tokio::test]
async fn delete_by_digest_removes_manifest_and_its_tags() {
    let Some(registry) = harness::registry() else {
        return;
    };
    let mut push = Pusher::new(&registry);
    let tainted = push.cache_manifest(REPO, Some("main"), "tainted");
    push.manifest(
        REPO,
        Some("pr-7"),
        OCI_MANIFEST,
        &manifest_bytes(&registry, &tainted),
    );
    let kept = push.cache_manifest(REPO, Some("release"), "kept");
    let no_config = tempfile::tempdir().unwrap();
    let client = client(&registry.host(), isolated(no_config.path()));

    assert_eq!(
        client.list_tags(REPO).await.unwrap(),
        ["main", "pr-7", "release"]
    );
    let outcome = client
        .delete_manifest(REPO, &digest(&tainted))
        .await
        .unwrap();
    assert_eq!(outcome, DeleteOutcome::Deleted);

    assert_eq!(
        client.get_manifest(REPO, &tainted.digest).await.unwrap(),
        None
    );
    assert_eq!(client.head_manifest(REPO, "main").await.unwrap(), None);
    let path = format!("/v2/{REPO}/manifests/{}", tainted.digest);
    assert_eq!(registry.get(&path).status, 404);
    assert_eq!(client.list_tags(REPO).await.unwrap(), ["release"]);
    let survivor = client
        .get_manifest(REPO, &kept.digest)
        .await
        .unwrap()
        .expect("kept");
    assert_eq!(survivor.digest, digest(&kept));

    let again = client
        .delete_manifest(REPO, &digest(&tainted))
        .await
        .unwrap();
    assert_eq!(again, DeleteOutcome::AlreadyGone);
    let unknown_repo = client
        .delete_manifest("never/pushed", &digest(&kept))
        .await
        .unwrap();
    assert_eq!(unknown_repo, DeleteOutcome::AlreadyGone);
}

fn manifest_bytes(registry: &Registry, pushed: &Pushed) -> Vec<u8> {
    let response = registry.request(
        harness::http::Request::get(&format!("/v2/{REPO}/manifests/{}", pushed.digest))
            .header("Accept", &pushed.media_type),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    response.body
}

/// HEAD, GET, blobs and classification agree with what was pushed, for every kind of
/// manifest a purge meets.
#[tokio::test]
async fn reads_and_classifies_each_kind_of_manifest() {
    let Some(registry) = harness::registry() else {
        return;
    };
    let mut push = Pusher::new(&registry);
    let cache_manifest = push.cache_manifest(REPO, Some("cache"), "m");
    let cache_index = push.cache_index(REPO, Some("cache-index"), "i");
    let inline = push.image(REPO, Some("inline"), "inline", true);
    let image = push.image(REPO, Some("plain"), "plain", false);
    let index = push.index(REPO, Some("multi"), &[image.clone(), inline.clone()]);
    let no_config = tempfile::tempdir().unwrap();
    let client = client(&registry.host(), isolated(no_config.path()));

    let cases = [
        (
            "cache",
            &cache_manifest,
            ManifestKind::BuildkitCacheManifest,
        ),
        (
            "cache-index",
            &cache_index,
            ManifestKind::BuildkitCacheIndex,
        ),
        ("inline", &inline, ManifestKind::InlineCacheImage),
        ("plain", &image, ManifestKind::Image),
        ("multi", &index, ManifestKind::Index),
    ];
    for (tag, pushed, kind) in cases {
        let head = client.head_manifest(REPO, tag).await.unwrap().expect(tag);
        assert_eq!(head.digest, digest(pushed), "{tag}");
        assert_eq!(head.media_type, pushed.media_type, "{tag}");
        assert_eq!(head.size, pushed.size as u64, "{tag}");
        let inspected = client
            .inspect(REPO, &pushed.digest)
            .await
            .unwrap()
            .expect(tag);
        assert_eq!(inspected.kind, kind, "{tag}");
        assert_eq!(inspected.manifest.digest, digest(pushed), "{tag}");
    }

    let multi = client.get_manifest(REPO, "multi").await.unwrap().unwrap();
    assert_eq!(multi.media_type, OCI_INDEX);
    let listed: Vec<Digest> = children(&multi.bytes, &multi.media_type)
        .unwrap()
        .into_iter()
        .map(|d| d.digest)
        .collect();
    assert_eq!(listed, [digest(&image), digest(&inline)]);

    let index_blobs = blobs(&multi.bytes, &multi.media_type).unwrap();
    assert!(index_blobs.is_empty(), "{index_blobs:?}");
    let plain = client.get_manifest(REPO, "plain").await.unwrap().unwrap();
    let config = &blobs(&plain.bytes, &plain.media_type).unwrap()[0];
    let config_json = client.get_blob(REPO, &config.digest).await.unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&config_json).unwrap();
    assert_eq!(parsed["config"]["Labels"]["seed"], "plain");

    assert_eq!(client.head_manifest(REPO, "missing").await.unwrap(), None);
    assert_eq!(client.inspect("other/repo", "latest").await.unwrap(), None);
    let absent = Digest::parse(&sha256(b"absent"), "digest").unwrap();
    let err = client
        .get_blob(REPO, &absent)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&registry.host()) && err.contains("404"),
        "{err}"
    );
}

/// A registry behind htpasswd is used with the credentials of a docker config directory;
/// without them, or with a wrong password, the error says so and shows no secret.
#[tokio::test]
async fn basic_auth_uses_credentials_from_the_docker_config() {
    if !harness::require_registry() {
        return;
    }
    let registry = Registry::start(RegistryOpts::with_auth("ci", "s3cret-pw"));
    let host = registry.host();
    let mut push = Pusher::new(&registry);
    let pushed = push.cache_manifest(REPO, Some("main"), "basic");

    let good = docker_config(&host, "ci", "s3cret-pw");
    let client = client(&host, isolated(good.path()));
    assert_eq!(client.list_tags(REPO).await.unwrap(), ["main"]);
    let head = client.head_manifest(REPO, "main").await.unwrap().unwrap();
    assert_eq!(head.digest, digest(&pushed));
    let outcome = client
        .delete_manifest(REPO, &digest(&pushed))
        .await
        .unwrap();
    assert_eq!(outcome, DeleteOutcome::Deleted);
    assert!(registry.tags(REPO).is_empty());

    let none = tempfile::tempdir().unwrap();
    let anonymous = self::client(&host, isolated(none.path()));
    let err = anonymous.list_tags(REPO).await.unwrap_err().to_string();
    assert!(err.contains(&format!("registry `{host}`")), "{err}");
    assert!(
        err.contains("401") && err.contains("no credentials"),
        "{err}"
    );

    let wrong = docker_config(&host, "ci", "wrong-pw");
    let refused = self::client(&host, isolated(wrong.path()));
    let err = refused
        .delete_manifest(REPO, &digest(&pushed))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("401") && err.contains(REPO), "{err}");
    assert!(
        !err.contains("wrong-pw") && !err.contains(&base64(b"ci:wrong-pw")),
        "{err}"
    );
    assert!(!format!("{refused:?}").contains("wrong-pw"));
}

/// The Bearer flow asks the token service for `delete`, with the docker config's credentials,
/// and one token serves many deletes in a repository.
#[tokio::test]
async fn bearer_tokens_carry_delete_scope_and_are_reused() {
    if !harness::require_registry() {
        return;
    }
    let issuer = TokenIssuer::start(IssuerOpts {
        basic: Some(("robot".to_owned(), "t0ken-pw".to_owned())),
        refresh_token: None,
    });
    let registry = issuer.registry(RegistryOpts::default());
    let host = registry.host();
    let push_token = issuer.mint(&[&format!("repository:{REPO}:pull,push")]);
    let mut push = Pusher::with_authorization(&host, Some(format!("Bearer {push_token}")));
    let doomed: Vec<Pushed> = (0..20)
        .map(|i| push.cache_manifest(REPO, Some(&format!("t{i:02}")), &format!("doomed {i}")))
        .collect();
    let kept = push.cache_manifest(REPO, Some("keep"), "kept");

    let config = docker_config(&host, "robot", "t0ken-pw");
    let client = Arc::new(client(&host, isolated(config.path())));
    // All in flight at once: they meet the challenge together and share one token fetch.
    let mut in_flight = tokio::task::JoinSet::new();
    for pushed in &doomed {
        let (client, digest) = (Arc::clone(&client), digest(pushed));
        in_flight.spawn(async move { client.delete_manifest(REPO, &digest).await });
    }
    while let Some(outcome) = in_flight.join_next().await {
        assert_eq!(outcome.unwrap().unwrap(), DeleteOutcome::Deleted);
    }
    assert_eq!(client.list_tags(REPO).await.unwrap(), ["keep"]);
    assert!(
        client
            .get_manifest(REPO, &kept.digest)
            .await
            .unwrap()
            .is_some()
    );

    let requests = issuer.requests();
    let delete_scope = format!("repository:{REPO}:pull,delete");
    let deletes: Vec<_> = requests
        .iter()
        .filter(|r| r.scopes.contains(&delete_scope))
        .collect();
    assert_eq!(deletes.len(), 1, "one token for 20 deletes: {requests:#?}");
    assert!(deletes[0].granted);
    assert_eq!(deletes[0].account.as_deref(), Some("robot"));
    assert_eq!(deletes[0].service.as_deref(), Some(SERVICE));
    let pulls = requests
        .iter()
        .filter(|r| r.scopes == [format!("repository:{REPO}:pull")])
        .count();
    assert_eq!(pulls, 1, "reads share one pull token: {requests:#?}");

    let none = tempfile::tempdir().unwrap();
    let anonymous = self::client(&host, isolated(none.path()));
    let err = anonymous
        .delete_manifest(REPO, &digest(&kept))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("token") && err.contains("no credentials"),
        "{err}"
    );
}

/// An identity token from the docker config is exchanged for a registry token with the OAuth2
/// refresh-token grant.
#[tokio::test]
async fn identity_tokens_use_the_refresh_token_grant() {
    if !harness::require_registry() {
        return;
    }
    let issuer = TokenIssuer::start(IssuerOpts {
        basic: None,
        refresh_token: Some("refresh-me".to_owned()),
    });
    let registry = issuer.registry(RegistryOpts::default());
    let host = registry.host();
    let push_token = issuer.mint(&[&format!("repository:{REPO}:pull,push")]);
    let mut push = Pusher::with_authorization(&host, Some(format!("Bearer {push_token}")));
    let pushed = push.cache_index(REPO, Some("main"), "identity");

    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({"auths": {&host: {"identitytoken": "refresh-me"}}});
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let client = client(&host, isolated(dir.path()));
    let outcome = client
        .delete_manifest(REPO, &digest(&pushed))
        .await
        .unwrap();
    assert_eq!(outcome, DeleteOutcome::Deleted);
    let requests = issuer.requests();
    assert!(
        requests.iter().all(|r| r.method == "POST" && r.granted),
        "{requests:#?}"
    );
}

/// A registry with deletion disabled answers 405; the error says how to enable it.
#[tokio::test]
async fn disabled_deletion_gives_an_actionable_error() {
    if !harness::require_registry() {
        return;
    }
    let registry = Registry::start(RegistryOpts {
        delete_enabled: false,
        auth: None,
    });
    let host = registry.host();
    let pushed = Pusher::new(&registry).cache_manifest(REPO, Some("main"), "no-delete");
    let no_config = tempfile::tempdir().unwrap();
    let client = client(&host, isolated(no_config.path()));
    let err = client
        .delete_manifest(REPO, &digest(&pushed))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "deletion is disabled on registry `{host}`: set storage.delete.enabled: true \
             (distribution) or enable deletes in the registry's settings"
        )),
        "{err}"
    );
    assert!(err.contains("405") && err.contains(&pushed.digest), "{err}");
    assert!(!err.contains('\n'), "{err}");
    assert_eq!(registry.tags(REPO), ["main"]);
}

/// 503, then 429 with `Retry-After: 1`, are retried (waiting as asked) until the delete goes
/// through.
#[tokio::test]
async fn transient_failures_are_retried_honouring_retry_after() {
    let Some(registry) = harness::registry() else {
        return;
    };
    let pushed = Pusher::new(&registry).cache_manifest(REPO, Some("main"), "retry");
    let proxy = FaultProxy::start(&registry.host());
    proxy.inject(Fault::status(503).on("DELETE"));
    proxy.inject(Fault::status(429).on("DELETE").header("Retry-After", "1"));
    let no_config = tempfile::tempdir().unwrap();
    let client = client(&proxy.host(), isolated(no_config.path()));

    let started = Instant::now();
    let outcome = client
        .delete_manifest(REPO, &digest(&pushed))
        .await
        .unwrap();
    assert_eq!(outcome, DeleteOutcome::Deleted);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured"
    );
    let deletes: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.method == "DELETE")
        .collect();
    let statuses: Vec<_> = deletes.iter().map(|s| (s.status, s.injected)).collect();
    assert_eq!(
        statuses,
        [(Some(503), true), (Some(429), true), (Some(202), false)]
    );
    assert!(deletes[2].at - deletes[1].at >= Duration::from_secs(1));
    assert!(registry.tags(REPO).is_empty());
}

/// A connection closed without an answer is retried; a failure that outlasts the attempts is
/// reported with the status and the number of attempts.
#[tokio::test]
async fn retries_cover_hang_ups_and_are_bounded() {
    let Some(registry) = harness::registry() else {
        return;
    };
    let mut push = Pusher::new(&registry);
    let first = push.cache_manifest(REPO, Some("a"), "first");
    let second = push.cache_manifest(REPO, Some("b"), "second");
    let proxy = FaultProxy::start(&registry.host());
    let no_config = tempfile::tempdir().unwrap();
    let options = ClientOptions {
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(20),
            ..RetryPolicy::default()
        },
        ..isolated(no_config.path())
    };
    let client = client(&proxy.host(), options);

    proxy.inject(Fault::hang_up().on("DELETE"));
    let outcome = client.delete_manifest(REPO, &digest(&first)).await.unwrap();
    assert_eq!(outcome, DeleteOutcome::Deleted);

    for _ in 0..3 {
        proxy.inject(Fault::status(502).on("DELETE"));
    }
    let err = client
        .delete_manifest(REPO, &digest(&second))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("registry `{}`", proxy.host())),
        "{err}"
    );
    assert!(
        err.contains(&second.digest) && err.contains("HTTP 502"),
        "{err}"
    );
    assert!(err.contains("gave up after 3 attempts"), "{err}");
    assert_eq!(proxy.pending_faults(), 0);
    assert_eq!(registry.tags(REPO), ["b"]);
}

/// Tag listings follow `Link: rel="next"` page by page; a registry that ignores `n` (as
/// distribution 2.8 does) still yields every tag.
#[tokio::test]
async fn list_tags_follows_link_pagination() {
    let Some(registry) = harness::registry() else {
        return;
    };
    let mut push = Pusher::new(&registry);
    let mut expected: Vec<String> = ["v1", "v2", "main", "pr-1", "pr-2", "pr-3", "nightly"]
        .iter()
        .map(|t| {
            push.cache_manifest(REPO, Some(t), t);
            (*t).to_owned()
        })
        .collect();
    expected.sort();
    let proxy = FaultProxy::start(&registry.host());
    proxy.paginate_tags(true);
    let no_config = tempfile::tempdir().unwrap();
    let options = ClientOptions {
        tag_page_size: Some(2),
        ..isolated(no_config.path())
    };

    let paged = client(&proxy.host(), options.clone());
    assert_eq!(paged.list_tags(REPO).await.unwrap(), expected);
    let pages: Vec<String> = proxy.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(
        pages,
        [
            format!("/v2/{REPO}/tags/list?n=2"),
            format!("/v2/{REPO}/tags/list?last=nightly&n=2"),
            format!("/v2/{REPO}/tags/list?last=pr-2&n=2"),
            format!("/v2/{REPO}/tags/list?last=v1&n=2"),
        ]
    );

    let direct = client(&registry.host(), options);
    assert_eq!(direct.list_tags(REPO).await.unwrap(), expected);
    assert!(direct.list_tags("no/such-repo").await.unwrap().is_empty());
}

/// Many deletes reuse one pooled connection instead of reconnecting for each.
#[tokio::test]
async fn deletes_share_one_connection() {
    let Some(registry) = harness::registry() else {
        return;
    };
    let mut push = Pusher::new(&registry);
    let pushed: Vec<Pushed> = (0..25)
        .map(|i| push.cache_manifest(REPO, None, &format!("pooled {i}")))
        .collect();
    let proxy = FaultProxy::start(&registry.host());
    proxy.pass_connections(true);
    let no_config = tempfile::tempdir().unwrap();
    let client = client(&proxy.host(), isolated(no_config.path()));
    for manifest in &pushed {
        let outcome = client
            .delete_manifest(REPO, &digest(manifest))
            .await
            .unwrap();
        assert_eq!(outcome, DeleteOutcome::Deleted);
    }
    assert_eq!(proxy.connections(), 1);
}
