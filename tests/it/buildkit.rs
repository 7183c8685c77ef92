//! The BuildKit Control API client and the Engine helpers against a private Docker Engine.

use std::collections::BTreeSet;
use std::time::Duration;

use cachewarden::model::{BuilderRecord, Driver};
use cachewarden::remote::buildkit::{BuildkitClient, CacheRecord};
use cachewarden::remote::engine::Engine;

use crate::harness::forward::{Forwarder, Listen, Mode};
use crate::harness::{self, Dockerd, Registry, RegistryOpts};
use crate::on_both_engines;

const BASE: &str = "cwbb:latest";

const PIP_MOUNT: &str = "FROM cwbb:latest\n\
    RUN --mount=type=cache,target=/root/.cache/pip echo hi > /root/.cache/pip/x\n";
const OTHER_MOUNT: &str = "FROM cwbb:latest\n\
    RUN --mount=type=cache,id=other,target=/root/.cache/pip echo other > /root/.cache/pip/y\n";

/// A build context holding only a Dockerfile.
fn context(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("create a build context");
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).expect("write the Dockerfile");
    dir
}

fn build(dockerd: &Dockerd, dockerfile: &str, tag: &str) {
    let ctx = context(dockerfile);
    dockerd.build(ctx.path(), tag, &[]);
}

fn of_type<'a>(records: &'a [CacheRecord], record_type: &str) -> Vec<&'a CacheRecord> {
    records
        .iter()
        .filter(|r| r.record_type == record_type)
        .collect()
}

fn find<'a>(records: &'a [CacheRecord], needle: &str) -> &'a CacheRecord {
    records
        .iter()
        .find(|r| r.description.contains(needle))
        .unwrap_or_else(|| panic!("no record mentions `{needle}`: {records:#?}"))
}

/// Listings come in no particular order.
fn sorted(mut records: Vec<CacheRecord>) -> Vec<CacheRecord> {
    records.sort_by(|a, b| a.id.cmp(&b.id));
    records
}

fn now() -> i64 {
    cachewarden::time::now()
}

fn ids(records: &[CacheRecord]) -> BTreeSet<&str> {
    records.iter().map(|r| r.id.as_str()).collect()
}

async fn docker_client(dockerd: &Dockerd) -> BuildkitClient {
    BuildkitClient::connect(&dockerd.host(), Driver::Docker)
        .await
        .unwrap_or_else(|err| {
            panic!(
                "connect: {err}\n{}",
                harness::log_tail(&dockerd.log_path(), 2000)
            )
        })
}

on_both_engines!(async cache_mount_records_are_listed_and_pruned_one_by_one);

/// Cache-mount records are listed with their descriptions and sizes and pruned one by one;
/// a record others are built on, and an id that is not a record id, are not pruned.
async fn cache_mount_records_are_listed_and_pruned_one_by_one(engine: harness::Engine) {
    if !harness::require_engine(engine) {
        return;
    }
    let dockerd = Dockerd::start_engine(engine);
    dockerd.import_busybox(BASE);
    build(&dockerd, PIP_MOUNT, "pip:1");
    build(&dockerd, OTHER_MOUNT, "other:1");

    let mut client = docker_client(&dockerd).await;
    let records = client.disk_usage().await.unwrap();
    let mounts: Vec<CacheRecord> = of_type(&records, "exec.cachemount")
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(mounts.len(), 2, "{mounts:#?}");
    let pip = find(&mounts, "echo hi");
    let other = find(&mounts, "echo other");
    for mount in [pip, other] {
        assert!(mount.description.contains("/root/.cache/pip"), "{mount:?}");
        assert!(mount.size > 0, "{mount:?}");
        assert!(
            mount.created_at.is_some() && mount.last_used_at.is_some(),
            "{mount:?}"
        );
        assert!(mount.parents.is_empty(), "{mount:?}");
    }
    // BuildKit v0.12 and later name the mount's LLB id (namespace `/` + target) too.
    let id = match engine {
        harness::Engine::Docker20 => "",
        harness::Engine::Docker26 => " with id \"//root/.cache/pip\"",
    };
    assert_eq!(
        pip.description,
        format!(
            "cached mount /root/.cache/pip from exec /bin/sh -c echo hi > /root/.cache/pip/x{id}"
        )
    );

    let pruned = client
        .prune_ids(std::slice::from_ref(&pip.id))
        .await
        .unwrap();
    assert_eq!(
        ids(&pruned),
        BTreeSet::from([pip.id.as_str()]),
        "{pruned:#?}"
    );
    assert_eq!(pruned[0].description, pip.description);
    assert_eq!(pruned[0].size, pip.size);

    let after = client.disk_usage().await.unwrap();
    let after_ids = ids(&after);
    assert!(!after_ids.contains(pip.id.as_str()), "{after:#?}");
    assert!(after_ids.contains(other.id.as_str()), "{after:#?}");
    let mut expected = ids(&records);
    expected.remove(pip.id.as_str());
    assert_eq!(after_ids, expected, "only the pruned record went");

    // A record that others are built on (the base image's) stays while they do.
    let from = records
        .iter()
        .find(|r| records.iter().any(|c| c.parents.contains(&r.id)))
        .unwrap_or_else(|| panic!("no record is a parent: {records:#?}"));
    assert!(
        client
            .prune_ids(std::slice::from_ref(&from.id))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(ids(&client.disk_usage().await.unwrap()).contains(from.id.as_str()));

    // Nothing asked, nothing pruned.
    assert!(client.prune_ids(&[]).await.unwrap().is_empty());
    assert_eq!(ids(&client.disk_usage().await.unwrap()), expected);
    // An id that is not a record id is refused before it reaches a filter.
    let err = client
        .prune_ids(&["a,type==regular".to_owned()])
        .await
        .unwrap_err();
    assert!(err.message.contains("refusing to prune"), "{err}");
}

/// The Engine API version the client negotiates with each engine.
fn api_version(engine: harness::Engine) -> &'static str {
    match engine {
        harness::Engine::Docker20 => "1.41",
        harness::Engine::Docker26 => "1.45",
    }
}

fn record<'a>(records: &'a [CacheRecord], id: &str) -> &'a CacheRecord {
    records
        .iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("record {id} is gone: {records:#?}"))
}

/// Docker 20.10 only: what its BuildKit v0.8 writes into record descriptions (no mount ids)
/// and how listing and rebuilding change usage counts, facts its record reader relies on.
#[tokio::test]
async fn descriptions_and_reuse_of_records_on_docker_20_10() {
    if !harness::require_dockerd() {
        return;
    }
    let dockerd = Dockerd::start();
    dockerd.import_busybox(BASE);
    // One context directory throughout: the local sources are reused only for the same one.
    let ctx = context(
        "FROM cwbb:latest\n\
         RUN echo layer > /l\n\
         RUN --mount=type=cache,target=/root/.cache/pip echo hi > /root/.cache/pip/x\n",
    );
    dockerd.build(ctx.path(), "layered:1", &[]);
    let mut client = docker_client(&dockerd).await;
    let listed_at = now();
    let first = client.disk_usage().await.unwrap();

    let from = find(&first, "from local ");
    assert_eq!(
        from.description, "from local ",
        "a FROM image the daemon has locally"
    );
    assert_eq!(
        (from.record_type.as_str(), from.parents.len()),
        ("regular", 0)
    );
    let layer = find(&first, "mount / from exec /bin/sh -c echo layer > /l");
    assert_eq!(layer.record_type, "regular");
    assert_eq!(layer.parents, [from.id.as_str()]);
    let step = find(
        &first,
        "mount / from exec /bin/sh -c echo hi > /root/.cache/pip/x",
    );
    assert_eq!(step.parents, [layer.id.as_str()]);
    let mount = find(&first, "cached mount /root/.cache/pip from exec");
    assert_eq!(mount.record_type, "exec.cachemount");
    assert!(mount.mutable && mount.parents.is_empty(), "{mount:?}");
    assert_eq!(
        of_type(&first, "source.local").len(),
        2,
        "the context and the Dockerfile"
    );
    assert!(first.iter().all(|r| r.usage_count == 1), "{first:#?}");

    // Listing is not read-only on 20.10: the first listing after a mount was used measures
    // it, which counts as a use that the next listing shows.
    let again = client.disk_usage().await.unwrap();
    let mount_listed = record(&again, &mount.id);
    assert_eq!(mount_listed.usage_count, 2);
    assert!(
        mount_listed.last_used_at.unwrap() >= listed_at,
        "{mount_listed:?}"
    );
    for r in again.iter().filter(|r| r.id != mount.id) {
        assert_eq!(r, record(&first, &r.id), "only the mount changed");
    }
    assert_eq!(
        sorted(client.disk_usage().await.unwrap()),
        sorted(again.clone()),
        "the effect happens once per use"
    );

    // The same Dockerfile again: every step is cached, nothing is created, the layers and
    // sources count a use and the mount is not touched.
    std::thread::sleep(Duration::from_millis(20));
    let rebuilt_at = now();
    dockerd.build(ctx.path(), "layered:2", &[]);
    let second = client.disk_usage().await.unwrap();
    assert_eq!(
        ids(&second),
        ids(&first),
        "a cached rebuild adds no records"
    );
    for r in &second {
        let before = record(&again, &r.id);
        if r.id == mount.id {
            assert_eq!(r, before, "a cached step does not use its mount");
        } else {
            assert_eq!(r.usage_count, before.usage_count + 1, "{r:?}");
            assert!(r.last_used_at.unwrap() >= rebuilt_at, "{r:?}");
        }
    }

    // A new command on the same mount: one new layer record; the mount record is reused and
    // keeps the description of the command that created it.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM cwbb:latest\n\
         RUN echo layer > /l\n\
         RUN --mount=type=cache,target=/root/.cache/pip echo again >> /root/.cache/pip/x\n",
    )
    .unwrap();
    let changed_at = now();
    dockerd.build(ctx.path(), "layered:3", &[]);
    let third = client.disk_usage().await.unwrap();
    let created: Vec<&CacheRecord> = third
        .iter()
        .filter(|r| !ids(&second).contains(r.id.as_str()))
        .collect();
    assert_eq!(created.len(), 1, "{created:#?}");
    assert_eq!(
        created[0].description,
        "mount / from exec /bin/sh -c echo again >> /root/.cache/pip/x"
    );
    assert_eq!(created[0].parents, [layer.id.as_str()]);
    assert_eq!(of_type(&third, "exec.cachemount").len(), 1);
    let mount_3 = record(&third, &mount.id);
    assert_eq!(
        mount_3.description, mount.description,
        "the description keeps the first command"
    );
    assert_eq!(
        mount_3.usage_count,
        record(&second, &mount.id).usage_count + 1
    );
    assert!(mount_3.last_used_at.unwrap() >= changed_at, "{mount_3:?}");
    let old_step = record(&third, &step.id);
    assert_eq!(
        old_step,
        record(&second, &step.id),
        "the replaced step's layer is left alone"
    );
}

on_both_engines!(async workers_and_engine_views_agree);

/// The Control API and the Engine API list the same records alike, and the Engine helpers
/// inspect and remove images.
async fn workers_and_engine_views_agree(version: harness::Engine) {
    if !harness::require_engine(version) {
        return;
    }
    let dockerd = Dockerd::start_engine(version);
    let image_id = dockerd.import_busybox(BASE);
    build(&dockerd, PIP_MOUNT, "pip:1");

    let mut client = docker_client(&dockerd).await;
    let workers = client.list_workers().await.unwrap();
    eprintln!("workers: {workers:#?}");
    assert_eq!(workers.len(), 1, "{workers:#?}");
    // 20.10's BuildKit predates `Info`; Docker 26's answers it, though unversioned.
    let reported = client.buildkit_version().await.unwrap();
    match version {
        harness::Engine::Docker20 => assert_eq!(reported, None),
        harness::Engine::Docker26 => assert_eq!(reported.as_deref(), Some("v0.0.0+unknown")),
    }
    assert!(
        workers[0].platforms.iter().any(|p| p.starts_with("linux/")),
        "{workers:#?}"
    );

    let engine = Engine::connect(&dockerd.host()).await.unwrap();
    assert_eq!(engine.api_version(), api_version(version));
    // The first listing after the build changes the mount record (see above); settle it.
    client.disk_usage().await.unwrap();
    let from_df = engine.build_cache().await.unwrap();
    let from_control = client.disk_usage().await.unwrap();
    assert_eq!(ids(&from_df), ids(&from_control));
    for record in &from_df {
        let twin = from_control.iter().find(|r| r.id == record.id).unwrap();
        assert_eq!(
            BuilderRecord::from(record.clone()),
            twin.to_builder_record(),
            "df and DiskUsage describe {} alike",
            record.id
        );
        assert_eq!(record.parents, twin.parents);
        assert_eq!(record.usage_count, twin.usage_count);
    }

    let image = engine
        .image_inspect(BASE)
        .await
        .unwrap()
        .expect("the imported image");
    assert_eq!(image.id, image_id);
    assert_eq!(image.repo_tags, [BASE]);
    // The containerd image store names an image's own digest under its name, pushed or not.
    let repo_digests = match version {
        harness::Engine::Docker20 => vec![],
        harness::Engine::Docker26 => vec![format!("cwbb@{image_id}")],
    };
    assert_eq!(image.repo_digests, repo_digests);
    assert_eq!(engine.image_inspect("absent:latest").await.unwrap(), None);
    assert!(engine.remove_image("pip:1", false).await.unwrap());
    assert!(!engine.remove_image("pip:1", false).await.unwrap());
    assert_eq!(engine.image_inspect("pip:1").await.unwrap(), None);
}

on_both_engines!(async reaches_the_control_api_over_tcp_and_as_plain_grpc);

/// The Control API is reached through the Engine over TCP and as plain gRPC (a
/// buildkitd-style endpoint), and the wrong driver for an endpoint fails in one line naming it.
async fn reaches_the_control_api_over_tcp_and_as_plain_grpc(version: harness::Engine) {
    if !harness::require_engine(version) {
        return;
    }
    let dockerd = Dockerd::start_engine(version);
    dockerd.import_busybox(BASE);
    build(&dockerd, PIP_MOUNT, "pip:1");
    let mut direct = docker_client(&dockerd).await;
    direct.disk_usage().await.unwrap();
    let expected: BTreeSet<String> = direct
        .disk_usage()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    // `moby` on 20.10, a random id on 26.
    let worker = direct.list_workers().await.unwrap().remove(0).id;
    let listed =
        |records: Vec<CacheRecord>| records.into_iter().map(|r| r.id).collect::<BTreeSet<_>>();

    // The Docker driver over TCP: the Engine API, then the upgrade.
    let tcp = Forwarder::start(&dockerd.socket(), Listen::Tcp, Mode::Raw);
    let mut client = BuildkitClient::connect(tcp.endpoint(), Driver::Docker)
        .await
        .unwrap();
    assert_eq!(listed(client.disk_usage().await.unwrap()), expected);
    let engine = Engine::connect(tcp.endpoint()).await.unwrap();
    assert_eq!(engine.api_version(), api_version(version));
    assert_eq!(listed(engine.build_cache().await.unwrap()), expected);

    // A buildkitd-style endpoint: plain gRPC on a unix socket and on TCP.
    let socket = dockerd.dir().join("bk.sock");
    let unix = Forwarder::start(&dockerd.socket(), Listen::Unix(socket), Mode::PlainGrpc);
    let plain_tcp = Forwarder::start(&dockerd.socket(), Listen::Tcp, Mode::PlainGrpc);
    for (endpoint, driver) in [
        (unix.endpoint(), Driver::Buildkitd),
        (plain_tcp.endpoint(), Driver::Buildkitd),
        (unix.endpoint(), Driver::DockerContainer),
    ] {
        let mut client = BuildkitClient::connect(endpoint, driver).await.unwrap();
        assert_eq!(
            listed(client.disk_usage().await.unwrap()),
            expected,
            "{endpoint}"
        );
        let workers = client.list_workers().await.unwrap();
        assert_eq!(workers[0].id, worker, "{endpoint}");
    }

    // The wrong driver for an endpoint fails with a one-line message naming it.
    for (endpoint, driver) in [
        (unix.endpoint().to_owned(), Driver::Docker),
        (dockerd.host(), Driver::Buildkitd),
    ] {
        let err = match BuildkitClient::connect(&endpoint, driver).await {
            Ok(mut client) => client.disk_usage().await.unwrap_err(),
            Err(err) => err,
        };
        eprintln!("{endpoint} as {driver:?}: {err}");
        assert!(err.message.contains(&endpoint), "{err}");
        assert!(!err.message.contains('\n'), "{err}");
    }
}

#[tokio::test]
async fn connect_errors_name_the_endpoint_without_credentials() {
    let missing = "unix:///nonexistent/cachewarden/docker.sock";
    let err = BuildkitClient::connect(missing, Driver::Docker)
        .await
        .err()
        .expect("no daemon there");
    assert!(err.message.contains(missing), "{err}");
    assert!(!err.message.contains('\n'), "{err}");

    let port = harness::registry::free_port();
    let secret = format!("tcp://user:hunter2@127.0.0.1:{port}");
    let err = BuildkitClient::connect(&secret, Driver::Docker)
        .await
        .err()
        .expect("nothing listens");
    assert!(!err.message.contains("hunter2"), "{err}");
    assert!(err.message.contains(&format!("127.0.0.1:{port}")), "{err}");

    let err = BuildkitClient::connect(
        "docker-container://buildx_buildkit_x0",
        Driver::DockerContainer,
    )
    .await
    .err()
    .expect("not supported");
    assert!(
        err.message
            .contains("docker-container://buildx_buildkit_x0"),
        "{err}"
    );

    if !harness::require_registry() {
        return;
    }
    // An HTTP server that is not a Docker Engine refuses the upgrade.
    let registry = Registry::start(RegistryOpts::default());
    let endpoint = format!("tcp://{}", registry.host());
    let err = BuildkitClient::connect(&endpoint, Driver::Docker)
        .await
        .err()
        .expect("not a daemon");
    assert!(err.message.contains(&endpoint), "{err}");
    assert!(err.message.contains("POST /grpc answered 404"), "{err}");
}
