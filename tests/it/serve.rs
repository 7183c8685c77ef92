//! The collector: identity from CI OIDC tokens verified against a real issuer on loopback,
//! runs named from claims, refusals kept, idempotence, shutdown and crash safety.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Env, ok};
use crate::harness::http;
use crate::harness::oidc::{self, AUDIENCE, Collector, Issuer, Key};

/// An environment with an RSA and a P-256 key, their issuer, and a collector trusting it.
struct Setup {
    env: Env,
    rsa: Key,
    ec: Key,
    issuer: Issuer,
    collector: Collector,
}

impl Setup {
    /// A GitHub token of `acme/web`'s `build` workflow, run `run`, signed by the RSA key.
    fn github_token(&self, run: &str) -> String {
        self.rsa.sign(&oidc::github_claims(
            &self.issuer.url,
            "acme/web",
            "build",
            run,
        ))
    }
}

fn setup(kind: &str, extra: &str) -> Setup {
    let env = Env::new();
    let rsa = Key::rsa(env.path(), "rsa-1");
    let ec = Key::p256(env.path(), "ec-1");
    let issuer = Issuer::start(&[&rsa, &ec]);
    let config = env.write("collector.toml", &oidc::config(&issuer, kind, extra));
    let collector = Collector::start(serve_cmd(&env, &config), 0);
    Setup {
        env,
        rsa,
        ec,
        issuer,
        collector,
    }
}

fn serve_cmd(env: &Env, config: &std::path::Path) -> Command {
    let mut cmd = env.cmd();
    cmd.arg("--config").arg(config);
    cmd
}

/// The runs the store holds, as exported lines.
fn stored_runs(env: &Env) -> Vec<Value> {
    let out = env.cmd().arg("export").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["type"] == "run")
        .collect()
}

fn sql_rows(env: &Env, sql: &str) -> Vec<Vec<String>> {
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |row| {
        Ok((0..n)
            .map(|i| match row.get_ref(i).unwrap() {
                rusqlite::types::ValueRef::Null => "NULL".to_owned(),
                rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                other => format!("{other:?}"),
            })
            .collect())
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// A generic issuer with a `run_claim` names the run from the token: a body naming another
/// run is refused, one naming none is given the token's. A conflict with the stored run tells
/// the sender none of what the store holds (its times, builder, commit), which another job of
/// the pipeline could match to add to the run; the collector's log has it.
#[test]
fn a_generic_issuers_run_claim_names_the_run() {
    let s = setup(
        "generic",
        "pipeline_claim = \"pipeline_slug\"\nrun_claim = \"build_id\"\n",
    );
    let now = oidc::now();
    let token = s.rsa.sign(&json!({
        "iss": s.issuer.url, "aud": AUDIENCE, "sub": "organization:acme:pipeline:web",
        "iat": now, "nbf": now - 5, "exp": now + 300,
        "pipeline_slug": "web", "build_id": "77",
    }));
    let refused = s.collector.post(&token, &oidc::run_line("web", "78"));
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(refused.json()["error"], "contradicts_claims");
    let mut line = oidc::run_line("web", "77");
    line.as_object_mut().unwrap().remove("run");
    let stored = s.collector.post(&token, &line);
    assert_eq!(stored.status, 201, "{}", stored.text());
    let runs = stored_runs(&s.env);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["run"], "77");

    line["builder"] = json!("ci-2");
    let conflict = s.collector.post(&token, &line);
    assert_eq!(conflict.status, 409, "{}", conflict.text());
    let reason = conflict.json()["reason"].as_str().unwrap().to_owned();
    assert!(
        reason.contains("already recorded with other facts"),
        "{reason}"
    );
    assert!(
        !reason.contains("ci-1") && !reason.contains("recorded `"),
        "the stored facts stay in the collector: {reason}"
    );
    let log = s.collector.log_with("recorded `ci-1`");
    assert!(log.contains("recorded `ci-1`"), "{log}");
}

/// A generic issuer without a `run_claim` vouches for the pipeline only: the collector says so
/// when it starts.
#[test]
fn a_generic_issuer_without_a_run_claim_is_named_at_start() {
    let s = setup("generic", "");
    let log = s.collector.log_with("names no `run_claim`");
    assert!(
        log.contains(&format!("issuer `{}` names no `run_claim`", s.issuer.url)),
        "{log}"
    );
}

/// A GitHub token (RS256) records the run its claims name, at most once; a GitLab-shaped
/// token signed with ES256 works the same way.
#[test]
fn valid_tokens_record_the_run_their_claims_name() {
    let s = setup("github", "");
    let claims = oidc::github_claims(&s.issuer.url, "acme/web", "build", "4242");
    let token = s.rsa.sign(&claims);
    // The hook leaves pipeline and run to the token.
    let mut line = oidc::run_line("acme/web/build", "4242-1");
    let first = s.collector.post(&token, &line);
    assert_eq!(first.status, 201, "{}", first.text());
    // No ceiling in the collector's config: the lowest level.
    assert_eq!(first.json()["trust_level"], "untrusted");
    let again = s.collector.post(&token, &line);
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["created"], false);
    line.as_object_mut().unwrap().remove("pipeline");
    line.as_object_mut().unwrap().remove("run");
    let filled = s.collector.post(&token, &line);
    assert_eq!(filled.status, 200, "{}", filled.text());
    let runs = stored_runs(&s.env);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["pipeline"], "acme/web/build");
    assert_eq!(runs[0]["run"], "4242-1");
    assert_eq!(
        runs[0]["commit"],
        "0123456789abcdef0123456789abcdef01234567"
    );
    let receipts = sql_rows(
        &s.env,
        "SELECT identity, late, time_suspect FROM run_receipts",
    );
    assert_eq!(
        receipts,
        [vec![
            format!("{}#acme/web/build", s.issuer.url),
            "0".into(),
            "NULL".into()
        ]]
    );
    // The collector logs the chain head each accepted run leaves: a head kept outside the
    // store, which `verify-log --head` checks the store against.
    let verified: Value =
        serde_json::from_str(&ok(s.env.cmd().args(["verify-log", "--format", "json"]))).unwrap();
    let head = verified["head"].as_str().unwrap();
    let logged = "accepted `acme%2Fweb%2Fbuild/4242-1/";
    let line = s
        .collector
        .log_with(logged)
        .lines()
        .find(|l| l.starts_with(logged))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no accepted line: {}", s.collector.log()));
    assert!(
        line.ends_with(&format!("; chain head {head} length 1")),
        "{line}"
    );
    ok(s.env.cmd().args(["verify-log", "--head", head]));

    let gitlab = setup("gitlab", "");
    let token = gitlab.ec.sign(&oidc::gitlab_claims(
        &gitlab.issuer.url,
        "grp/api",
        "77",
        "901",
    ));
    let response = gitlab
        .collector
        .post(&token, &oidc::run_line("grp/api", "77-901"));
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(stored_runs(&gitlab.env)[0]["run"], "77-901");
}

/// A token whose `exp`, `nbf` and `iat` carry a fraction (RFC 7519 NumericDates may) is
/// accepted; one whose fractional `exp` has passed is refused as expired by its real age.
#[test]
fn fractional_numeric_dates_are_accepted() {
    let s = setup("github", "");
    let now = oidc::now() as f64;
    let mut claims = oidc::github_claims(&s.issuer.url, "acme/web", "build", "3");
    claims["exp"] = json!(now + 300.5);
    claims["nbf"] = json!(now - 5.25);
    claims["iat"] = json!(now + 0.75);
    let response = s.collector.post(
        &s.rsa.sign(&claims),
        &oidc::run_line("acme/web/build", "3-1"),
    );
    assert_eq!(response.status, 201, "{}", response.text());
    claims["exp"] = json!(now - 2.0 * 86400.0 + 0.5);
    claims["run_id"] = json!("4");
    let response = s.collector.post(
        &s.rsa.sign(&claims),
        &oidc::run_line("acme/web/build", "4-1"),
    );
    assert_eq!(response.status, 401, "{}", response.text());
    assert_eq!(response.json()["error"], "expired");
    let log = s.collector.log_with("the token expired 17280");
    assert!(log.contains("the token expired 17280"), "{log}");
}

/// Every forged or unusable token is refused with 401 and its reason in the collector log,
/// nothing of its run is stored, and the attempt is kept as evidence and counted.
#[test]
fn forged_and_unusable_tokens_are_refused() {
    let s = setup("github", "");
    let base = oidc::github_claims(&s.issuer.url, "acme/web", "build", "1");
    let with = |changes: Value| {
        let mut claims = base.clone();
        for (k, v) in changes.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let now = oidc::now();
    let stranger = Key::rsa(s.env.path(), "rsa-1");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            s.rsa.sign(&with(
                json!({"exp": now - 2 * 86400, "iat": now - 2 * 86400 - 300}),
            )),
            "expired",
        ),
        (
            "not yet valid",
            s.rsa.sign(&with(json!({"nbf": now + 3600}))),
            "not_yet_valid",
        ),
        (
            "wrong audience",
            s.rsa.sign(&with(json!({"aud": "someone-else"}))),
            "wrong_audience",
        ),
        (
            "wrong issuer",
            s.rsa
                .sign(&with(json!({"iss": "https://token.evil.example"}))),
            "unknown_issuer",
        ),
        ("alg none", oidc::unsigned(&base), "alg_refused"),
        (
            "unknown key",
            {
                let mut other = Key::rsa(s.env.path(), "rsa-404");
                other.kid = "rsa-404".into();
                other.sign(&base)
            },
            "unknown_key",
        ),
        // The same key id as the issuer's, signed with another key.
        ("bad signature", stranger.sign(&base), "bad_signature"),
        ("no token", String::new(), "missing_token"),
    ];
    for (what, token, code) in &cases {
        let response = s
            .collector
            .post(token, &oidc::run_line("acme/web/build", "1-1"));
        assert_eq!(response.status, 401, "{what}: {}", response.text());
        assert_eq!(response.json()["error"], *code, "{what}");
    }
    assert!(stored_runs(&s.env).is_empty());
    // Refusals are logged in order: the last case's line comes after every other.
    let (_, _, last) = cases.last().unwrap();
    let log = s.collector.log_with(&format!("refused 401 {last}:"));
    for (_, _, code) in &cases {
        assert!(
            log.contains(&format!("refused 401 {code}:")),
            "{code}: {log}"
        );
    }
    let kept = sql_rows(
        &s.env,
        "SELECT status, code FROM collector_refusals ORDER BY id",
    );
    assert_eq!(kept.len(), cases.len(), "{kept:?}");
    let metrics = s.collector.get("/metrics").text();
    assert!(
        metrics.contains("cachewarden_requests_refused_total{reason=\"alg_refused\"} 1"),
        "{metrics}"
    );
}

/// A body that names another pipeline, another run (a token replayed for another run), or a
/// higher trust than a pull-request token allows is refused with 403 and not stored.
#[test]
fn bodies_that_contradict_the_token_are_refused() {
    let s = setup("github", "");
    let token = s.github_token("10");
    for (what, line) in [
        (
            "forged pipeline",
            oidc::run_line("acme/release/deploy", "10-1"),
        ),
        (
            "replay for another run",
            oidc::run_line("acme/web/build", "11-1"),
        ),
    ] {
        let response = s.collector.post(&token, &line);
        assert_eq!(response.status, 403, "{what}: {}", response.text());
        assert_eq!(response.json()["error"], "contradicts_claims");
    }
    let mut pr = oidc::github_claims(&s.issuer.url, "acme/web", "build", "12");
    pr["event_name"] = json!("pull_request");
    let token = s.rsa.sign(&pr);
    let mut line = oidc::run_line("acme/web/build", "12-1");
    line["trust_level"] = json!("release");
    let response = s.collector.post(&token, &line);
    assert_eq!(response.status, 403, "{}", response.text());
    assert!(stored_runs(&s.env).is_empty());
    let kept = sql_rows(
        &s.env,
        "SELECT status, run_name FROM collector_refusals ORDER BY id",
    );
    assert_eq!(kept[0], ["403", "acme/release/deploy/10-1"]);
    let log = s.collector.log_with("refused 403 contradicts_claims");
    assert!(log.contains("refused 403 contradicts_claims"), "{log}");
}

/// A pull-request token's run is stored untrusted, whatever its pipeline's ceiling.
#[test]
fn pull_request_tokens_record_untrusted_runs() {
    let s = setup(
        "github",
        "[[pipeline]]\nname = \"acme/web/build\"\ntrust_level = \"release\"\n",
    );
    let mut pr = oidc::github_claims(&s.issuer.url, "acme/web", "build", "20");
    pr["event_name"] = json!("pull_request_target");
    let response = s
        .collector
        .post(&s.rsa.sign(&pr), &oidc::run_line("acme/web/build", "20-1"));
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(response.json()["trust_level"], "untrusted");
    let push = oidc::github_claims(&s.issuer.url, "acme/web", "build", "21");
    let response = s.collector.post(
        &s.rsa.sign(&push),
        &oidc::run_line("acme/web/build", "21-1"),
    );
    assert_eq!(response.json()["trust_level"], "release");
}

/// A pull request's run sent to the collector names a poisoned layer as a pulled one: the
/// push build that reused it, named in the builder's own words, is traced from the pull
/// request all the same.
#[test]
fn a_pull_requests_word_for_a_layer_it_left_is_not_believed() {
    let s = setup(
        "github",
        "[[pipeline]]\nname = \"acme/web/build\"\ntrust_level = \"release\"\n",
    );
    let mut pr = oidc::github_claims(&s.issuer.url, "acme/web", "build", "30");
    pr["event_name"] = json!("pull_request_target");
    let mut line = oidc::run_line("acme/web/build", "30-1");
    line.as_object_mut().unwrap().remove("imported");
    line.as_object_mut().unwrap().remove("exported");
    let pulled = format!(
        "pulled from docker.io/library/busybox:latest@sha256:{}",
        "1".repeat(64)
    );
    line["records"] = json!({"created": [{"id": "rec-poison", "type": "regular", "description": pulled}], "reused": []});
    let response = s.collector.post(&s.rsa.sign(&pr), &line);
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(response.json()["trust_level"], "untrusted");
    let push = oidc::github_claims(&s.issuer.url, "acme/web", "build", "31");
    let mut line = oidc::run_line("acme/web/build", "31-1");
    line.as_object_mut().unwrap().remove("imported");
    line.as_object_mut().unwrap().remove("exported");
    let now = chrono::Utc::now();
    line["started_at"] = json!((now - chrono::Duration::seconds(20)).to_rfc3339());
    line["finished_at"] = json!((now - chrono::Duration::seconds(5)).to_rfc3339());
    line["records"] = json!({"created": [], "reused": [{"id": "rec-poison", "type": "regular", "description": "mount / from exec /bin/sh -c make"}]});
    let response = s.collector.post(&s.rsa.sign(&push), &line);
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(response.json()["trust_level"], "release");
    let out = s
        .env
        .cmd()
        .args(["trace", "--run", "acme/web/build/30-1", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs: Vec<&str> = (doc["runs"].as_array().unwrap().iter())
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        runs.contains(&"run:acme%2Fweb%2Fbuild/31-1/image"),
        "{runs:?}"
    );
    assert_eq!(
        doc["records"][0]["description"], "mount / from exec /bin/sh -c make",
        "{doc}"
    );
}

/// A pipeline the collector's config gives no trust ceiling: a protected push asking for more
/// than the lowest level is recorded at the lowest, and told so (the level would be the
/// sender's word, and the first run's would become the pipeline's ceiling). Once the config
/// names a ceiling, runs ask up to it.
#[test]
fn a_pipeline_without_a_configured_ceiling_runs_at_the_lowest_level() {
    let s = setup("github", "");
    let push = oidc::github_claims(&s.issuer.url, "acme/web", "build", "60");
    let mut line = oidc::run_line("acme/web/build", "60-1");
    line["trust_level"] = json!("release");
    let response = s.collector.post(&s.rsa.sign(&push), &line);
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(response.json()["trust_level"], "untrusted");
    let warnings = response.json()["warnings"].to_string();
    assert!(warnings.contains("no trust ceiling"), "{warnings}");
    let runs = stored_runs(&s.env);
    assert_eq!(runs[0]["trust_level"], "untrusted", "{runs:?}");
    // Asking for nothing takes no ceiling either.
    let push = oidc::github_claims(&s.issuer.url, "acme/web", "build", "62");
    let response = s.collector.post(
        &s.rsa.sign(&push),
        &oidc::run_line("acme/web/build", "62-1"),
    );
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(response.json()["trust_level"], "untrusted");

    let s = setup(
        "github",
        "[[pipeline]]\nname = \"acme/web/build\"\ntrust_level = \"release\"\n",
    );
    let push = oidc::github_claims(&s.issuer.url, "acme/web", "build", "61");
    let mut line = oidc::run_line("acme/web/build", "61-1");
    line["trust_level"] = json!("release");
    let response = s.collector.post(&s.rsa.sign(&push), &line);
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(response.json()["trust_level"], "release");
}

/// A connection that trickles its request is not held open: one whose head does not arrive
/// within `request_head_seconds` is closed, and one whose body does not arrive within
/// `request_body_seconds` gets 408. Runs sent at a normal pace are stored meanwhile.
#[test]
fn slow_requests_are_cut_off() {
    use std::io::{Read, Write};
    let s = setup(
        "github",
        "[server]\nrequest_head_seconds = 1\nrequest_body_seconds = 1\n",
    );
    let answer = |stream: &mut std::net::TcpStream| {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let started = Instant::now();
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got);
        (
            String::from_utf8_lossy(&got).into_owned(),
            started.elapsed(),
        )
    };
    let mut head = std::net::TcpStream::connect(&s.collector.addr).unwrap();
    head.write_all(b"POST /v1/runs HTTP/1.1\r\nHost: collector\r\n")
        .unwrap();
    let (text, waited) = answer(&mut head);
    assert!(waited < Duration::from_secs(8), "held {waited:?}: {text}");
    assert!(!text.contains(" 201 "), "{text}");

    let mut body = std::net::TcpStream::connect(&s.collector.addr).unwrap();
    body.write_all(
        b"POST /v1/runs HTTP/1.1\r\nHost: collector\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"v\": 1",
    )
    .unwrap();
    let (text, waited) = answer(&mut body);
    assert!(waited < Duration::from_secs(8), "held {waited:?}: {text}");
    assert!(
        text.starts_with("HTTP/1.1 408") && text.contains("body_too_slow"),
        "{text}"
    );

    let token = s.github_token("70");
    let stored = s
        .collector
        .post(&token, &oidc::run_line("acme/web/build", "70-1"));
    assert_eq!(stored.status, 201, "{}", stored.text());
}

/// A new signing key is picked up by fetching the key set once; unknown keys do not make
/// the collector fetch again within the refresh interval.
#[test]
fn rotated_keys_are_fetched_once() {
    let s = setup("github", "");
    let claims = oidc::github_claims(&s.issuer.url, "acme/web", "build", "30");
    let response = s.collector.post(
        &s.rsa.sign(&claims),
        &oidc::run_line("acme/web/build", "30-1"),
    );
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(s.issuer.fetches(), 1);
    // Let the refresh interval (2 s in the test config) pass, then rotate.
    std::thread::sleep(Duration::from_millis(2100));
    let rotated = Key::p256(s.env.path(), "ec-2");
    s.issuer.publish(&rotated);
    let claims = oidc::github_claims(&s.issuer.url, "acme/web", "build", "31");
    let response = s.collector.post(
        &rotated.sign(&claims),
        &oidc::run_line("acme/web/build", "31-1"),
    );
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(s.issuer.fetches(), 2);
    let mut unknown = Key::rsa(s.env.path(), "gone");
    unknown.kid = "gone".into();
    for _ in 0..5 {
        let response = s.collector.post(
            &unknown.sign(&claims),
            &oidc::run_line("acme/web/build", "31-1"),
        );
        assert_eq!(response.status, 401);
    }
    assert_eq!(
        s.issuer.fetches(),
        2,
        "unknown keys must not trigger a fetch each"
    );
}

/// A spooled run whose token expired within the grace is accepted and marked late; a run
/// that claims to finish after it was received, or to start long before its token was
/// issued, is stored time-suspect.
#[test]
fn late_and_time_suspect_runs_are_marked() {
    let s = setup("github", "[server]\nmax_run_seconds = 3600\n");
    let now = oidc::now();
    let mut claims = oidc::github_claims(&s.issuer.url, "acme/web", "build", "40");
    claims["iat"] = json!(now - 7200);
    claims["nbf"] = json!(now - 7200);
    claims["exp"] = json!(now - 3600);
    let response = s.collector.post(
        &s.rsa.sign(&claims),
        &oidc::run_line("acme/web/build", "40-1"),
    );
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(response.json()["late"], true);

    let claims = oidc::github_claims(&s.issuer.url, "acme/web", "build", "41");
    let mut line = oidc::run_line("acme/web/build", "41-1");
    let future = chrono::Utc::now() + chrono::Duration::hours(1);
    line["finished_at"] = json!(future.to_rfc3339());
    let response = s.collector.post(&s.rsa.sign(&claims), &line);
    assert_eq!(response.status, 201, "{}", response.text());
    let why = response.json()["time_suspect"].as_str().unwrap().to_owned();
    assert!(why.contains("after it was received"), "{why}");

    let claims = oidc::github_claims(&s.issuer.url, "acme/web", "build", "42");
    let mut line = oidc::run_line("acme/web/build", "42-1");
    let long_ago = chrono::Utc::now() - chrono::Duration::hours(3);
    line["started_at"] = json!(long_ago.to_rfc3339());
    let response = s.collector.post(&s.rsa.sign(&claims), &line);
    let why = response.json()["time_suspect"].as_str().unwrap().to_owned();
    assert!(why.contains("before its token was issued"), "{why}");
    let rows = sql_rows(
        &s.env,
        "SELECT late, time_suspect IS NOT NULL FROM run_receipts ORDER BY run_id",
    );
    assert_eq!(rows, [["1", "0"], ["0", "1"], ["0", "1"]]);
    // The trace shows which runs' times are not believed.
    let out = s
        .env
        .cmd()
        .args(["trace", "--pipeline", "acme/web/build", "--since", "1d"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("[time-suspect:").count(), 2, "{text}");
    let doc = traced_since(&s.env, "1d");
    let suspect = doc.to_string().matches("\"time_suspect\":true").count();
    assert_eq!(suspect, 2, "{doc}");
}

/// `trace --pipeline acme/web/build --since SINCE --format json`, which must succeed.
fn traced_since(env: &Env, since: &str) -> Value {
    let out = env
        .cmd()
        .args([
            "trace",
            "--pipeline",
            "acme/web/build",
            "--since",
            since,
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A run with a fresh token that dates its start three days back, within what this collector
/// believes (runs of up to four days), still reached the collector now: a trace of its
/// pipeline compromised from an hour ago, with the responder's own shorter limits, holds it
/// and the image it pushed. A window that opens after the run was received leaves it out.
#[test]
fn a_run_dating_its_start_back_stays_in_a_window_it_was_received_in() {
    let s = setup("github", "[server]\nmax_run_seconds = 345600\n");
    let claims = oidc::github_claims(&s.issuer.url, "acme/web", "build", "50");
    let mut line = oidc::run_line("acme/web/build", "50-1");
    let started = chrono::Utc::now() - chrono::Duration::hours(72);
    line["started_at"] = json!(started.to_rfc3339());
    line["finished_at"] = json!((started + chrono::Duration::minutes(10)).to_rfc3339());
    line["produced"] = json!([format!("localhost:5000/web@sha256:{}", "c".repeat(64))]);
    let response = s.collector.post(&s.rsa.sign(&claims), &line);
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(
        response.json()["time_suspect"],
        Value::Null,
        "{}",
        response.text()
    );
    let traced = |since: &str| traced_since(&s.env, since);
    let doc = traced("1h");
    let runs: Vec<&str> = doc["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run"].as_str().unwrap())
        .collect();
    assert_eq!(runs, ["50-1"], "{doc:#}");
    assert_eq!(doc["images"].as_array().unwrap().len(), 1, "{doc:#}");
    let later = (chrono::Utc::now() + chrono::Duration::minutes(5)).to_rfc3339();
    let doc = traced(&later);
    assert!(doc["runs"].as_array().unwrap().is_empty(), "{doc:#}");
}

/// Sends [`mount_run`] `id` to the collector with a token of its own, which takes it at its
/// word (not time-suspect).
fn post_mount_run(s: &Setup, id: &str, started: chrono::DateTime<chrono::Utc>, readonly: bool) {
    let claims = oidc::github_claims(&s.issuer.url, "acme/web", "build", id);
    let response = s
        .collector
        .post(&s.rsa.sign(&claims), &mount_run(id, started, readonly));
    assert_eq!(response.status, 201, "{}", response.text());
    assert!(
        response.json()["time_suspect"].is_null(),
        "{}",
        response.text()
    );
}

/// `trace --run acme/web/build/70-1 --format json` with `extra` global flags: the names of
/// the tainted runs, and the document.
fn traced_from_70(s: &Setup, extra: &[&str]) -> (Vec<String>, Value) {
    let out = ok(s.env.cmd().args(extra).args([
        "trace",
        "--run",
        "acme/web/build/70-1",
        "--format",
        "json",
    ]));
    let doc: Value = serde_json::from_str(&out).unwrap();
    let runs: Vec<String> = doc["runs"]
        .as_array()
        .unwrap_or_else(|| panic!("{doc}"))
        .iter()
        .map(|run| run["name"].as_str().unwrap().to_owned())
        .collect();
    (runs, doc)
}

/// A run of `acme/web/build` that used the `pip` cache mount for thirty seconds from
/// `started` (`readonly`: only read it), with record evidence, so that only the mount carries
/// taint between such runs.
fn mount_run(id: &str, started: chrono::DateTime<chrono::Utc>, readonly: bool) -> Value {
    let mut line = oidc::run_line("acme/web/build", &format!("{id}-1"));
    let object = line.as_object_mut().unwrap();
    object.remove("imported");
    object.remove("exported");
    line["started_at"] = json!(started.to_rfc3339());
    line["finished_at"] = json!((started + chrono::Duration::seconds(30)).to_rfc3339());
    line["mounts"] = json!([{"id": "pip", "readonly": readonly}]);
    line["records"] = json!({"created": [], "reused": []});
    line
}

/// A run the collector holds time-suspect that backdates its read of a poisoned cache mount
/// to before the poison was written is still traced; a believed run that read the mount
/// then stays clean.
#[test]
fn a_suspect_run_backdating_its_read_of_a_poisoned_mount_is_traced() {
    // The pipeline's runs are recorded at `release`: an untrusted run's record evidence is not
    // believed, and would put the believed reader on the poisoner's builder in the blast
    // radius however it is dated.
    let s = setup(
        "github",
        "[server]\nmax_run_seconds = 3600\n\n[[pipeline]]\nname = \"acme/web/build\"\ntrust_level = \"release\"\n",
    );
    let now = chrono::Utc::now();
    let post = |id: &str, ago: chrono::Duration, readonly: bool| {
        let claims = oidc::github_claims(&s.issuer.url, "acme/web", "build", id);
        let line = mount_run(id, now - ago, readonly);
        let response = s.collector.post(&s.rsa.sign(&claims), &line);
        assert_eq!(response.status, 201, "{}", response.text());
        response.json()
    };
    // The poisoner writes the mount 90 s ago.
    assert!(post("50", chrono::Duration::seconds(90), false)["time_suspect"].is_null());
    // Claims to have read it three hours ago, long before its token was issued.
    assert!(post("51", chrono::Duration::hours(3), true)["time_suspect"].is_string());
    // Read it twenty minutes ago, before the poison, and is believed.
    assert!(post("52", chrono::Duration::minutes(20), true)["time_suspect"].is_null());

    // Seeded from the mount since the poison was written: the poisoner's own claims are not
    // what dates the poison (a seed run's receipt would date it earlier still).
    let since = (now - chrono::Duration::seconds(90)).to_rfc3339();
    let out = ok(s.env.cmd().args([
        "trace", "--mount", "ci-1:pip", "--since", &since, "--format", "json",
    ]));
    let doc: Value = serde_json::from_str(&out).unwrap();
    let runs: Vec<&str> = doc["runs"]
        .as_array()
        .unwrap_or_else(|| panic!("{doc}"))
        .iter()
        .map(|run| run["name"].as_str().unwrap())
        .collect();
    assert!(runs.iter().any(|r| r.contains("/51-1/")), "{doc}");
    assert!(!runs.iter().any(|r| r.contains("/52-1/")), "{doc}");
    let suspect = doc["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|run| run["name"].as_str().unwrap().contains("/51-1/"))
        .unwrap();
    assert_eq!(suspect["time_suspect"], true, "{suspect}");
    assert_eq!(suspect["via"]["kind"], "mount-read", "{suspect}");
}

/// A compromised run that dates its start later than it began, to put its write of a cache
/// mount after a build that read the poison, cannot hide that build: the collector received
/// it now, so it began at most a run, a token's life and the clocks' skew ago (the trace reads
/// the collector's settings), and its write counts from then. A build that read the mount
/// before that stays clean.
#[test]
fn a_compromised_run_post_dating_its_start_still_taints_the_builds_after_its_write() {
    let config = "[server]\nmax_run_seconds = 3600\nmax_token_life_seconds = 600\n";
    let s = setup("github", config);
    let now = chrono::Utc::now();
    let post = |id: &str, started, readonly| post_mount_run(&s, id, started, readonly);
    // A build that read the mount two hours ago (recorded on its runner, imported) and one
    // that read it twenty minutes ago, through the collector.
    let early = s.env.write(
        "early.jsonl",
        &mount_run("71", now - chrono::Duration::hours(2), true).to_string(),
    );
    ok(s.env.cmd().arg("import").arg(&early));
    post("72", now - chrono::Duration::minutes(20), true);
    // The poisoner wrote it before them, and claims to have started a minute ago.
    post("70", now - chrono::Duration::minutes(1), false);

    let traced = |extra: &[&str]| traced_from_70(&s, extra);
    let config = s.env.path().join("collector.toml");
    let (runs, doc) = traced(&["--config", config.to_str().unwrap()]);
    let has = |runs: &[String], id: &str| runs.iter().any(|r| r.contains(&format!("/{id}-1/")));
    assert!(has(&runs, "70") && has(&runs, "72"), "{doc}");
    assert!(!has(&runs, "71") && runs.len() == 2, "{doc}");
    let mount = &doc["mounts"][0];
    assert_eq!(mount["via"]["kind"], "mount-write", "{mount}");
    let written =
        chrono::DateTime::parse_from_rfc3339(mount["tainted_at"].as_str().unwrap()).unwrap();
    assert!(written < now - chrono::Duration::minutes(70), "{mount}");
    // The text says why the poisoner's write precedes the start it claims.
    let text = ok(s.env.cmd().args([
        "--config",
        config.to_str().unwrap(),
        "trace",
        "--run",
        "acme/web/build/70-1",
    ]));
    let noted = text.lines().filter(|l| l.contains("[writes counted from "));
    assert_eq!(noted.collect::<Vec<_>>().len(), 1, "{text}");
    // With the collector's defaults (a six-hour run, a day-long token), the earlier build too.
    let (runs, doc) = traced(&[]);
    assert_eq!(runs.len(), 3, "{doc}");
}

/// The collector keeps, with each receipt, how early the run may have begun by its own
/// limits. A responder whose config allows shorter runs than the collector did still counts a
/// compromised run's writes from there: the build that read the mount three hours before the
/// poisoner claims to have started is tainted, as the collector allowed four-hour runs.
#[test]
fn a_trace_with_narrower_limits_than_the_collector_keeps_the_collector_bound() {
    let config = "[server]\nmax_run_seconds = 14400\nmax_token_life_seconds = 600\n";
    let s = setup("github", config);
    let now = chrono::Utc::now();
    let early = s.env.write(
        "early.jsonl",
        &mount_run("71", now - chrono::Duration::hours(3), true).to_string(),
    );
    ok(s.env.cmd().arg("import").arg(&early));
    post_mount_run(&s, "70", now - chrono::Duration::minutes(1), false);
    let narrow = s.env.write(
        "responder.toml",
        "[server]\nmax_run_seconds = 1800\nmax_token_life_seconds = 600\nlate_grace_seconds = 600\n",
    );
    let (runs, doc) = traced_from_70(&s, &["--config", narrow.to_str().unwrap()]);
    assert!(
        runs.iter().any(|r| r.contains("/71-1/")) && runs.len() == 2,
        "{doc}"
    );
    let written =
        chrono::DateTime::parse_from_rfc3339(doc["mounts"][0]["tainted_at"].as_str().unwrap())
            .unwrap();
    assert!(written < now - chrono::Duration::hours(3), "{doc}");
    assert!(written > now - chrono::Duration::hours(5), "{doc}");
    // The bound is in the chain.
    let log: Value =
        serde_json::from_str(&ok(s.env.cmd().args(["verify-log", "--format", "json"]))).unwrap();
    assert_eq!(
        (&log["intact"], &log["length"]),
        (&json!(true), &json!(2)),
        "{log}"
    );
}

/// A collected run's receipt is part of its chain entry: editing its `received_at` or
/// `time_suspect`, or deleting it, directly in the store is caught by `verify-log`, and so is
/// a receipt forged for a run the collector never received.
#[test]
fn a_receipt_edited_in_the_store_is_caught_by_verify_log() {
    let s = setup("github", "[server]\nmax_run_seconds = 3600\n");
    let believed = oidc::github_claims(&s.issuer.url, "acme/web", "build", "60");
    let response = s.collector.post(
        &s.rsa.sign(&believed),
        &oidc::run_line("acme/web/build", "60-1"),
    );
    assert_eq!(response.status, 201, "{}", response.text());
    let suspect = oidc::github_claims(&s.issuer.url, "acme/web", "build", "61");
    let mut line = oidc::run_line("acme/web/build", "61-1");
    line["started_at"] = json!((chrono::Utc::now() - chrono::Duration::hours(3)).to_rfc3339());
    let response = s.collector.post(&s.rsa.sign(&suspect), &line);
    assert!(
        response.json()["time_suspect"].is_string(),
        "{}",
        response.text()
    );
    // A run recorded without the collector has no receipt.
    let out = s
        .env
        .cmd()
        .args(["record", "--pipeline", "local", "--run", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let verify = |db: &std::path::Path| {
        let out = s
            .env
            .cmd()
            .arg("--db")
            .arg(db)
            .args(["verify-log", "--format", "json"])
            .output()
            .unwrap();
        let doc: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().unwrap(), doc)
    };
    let (code, doc) = verify(&s.env.db());
    assert_eq!((code, &doc["break"]), (0, &Value::Null), "{doc}");

    for (name, sql, kind, run) in [
        (
            "received",
            "UPDATE run_receipts SET received_at = received_at - 1000000
             WHERE time_suspect IS NULL",
            "hash_mismatch",
            "60-1",
        ),
        (
            "unsuspected",
            "UPDATE run_receipts SET time_suspect = NULL",
            "hash_mismatch",
            "61-1",
        ),
        (
            "deleted",
            "DELETE FROM run_receipts WHERE time_suspect IS NOT NULL",
            "hash_mismatch",
            "61-1",
        ),
        (
            "forged",
            "INSERT INTO run_receipts (run_id, received_at, identity)
             SELECT id, 0, 'forged' FROM runs WHERE run_key = '1'",
            "receipt_not_chained",
            "local/1",
        ),
    ] {
        // A copy of the store as it stands, edited as an attacker would, triggers dropped.
        let copy = s.env.path().join(format!("{name}.db"));
        let conn = rusqlite::Connection::open(s.env.db()).unwrap();
        conn.execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
            .unwrap();
        drop(conn);
        let conn = rusqlite::Connection::open(&copy).unwrap();
        conn.execute_batch(&format!(
            "DROP TRIGGER run_receipts_never_update; DROP TRIGGER run_receipts_never_delete;
             {sql};"
        ))
        .unwrap();
        drop(conn);
        let (code, doc) = verify(&copy);
        assert_eq!(code, 1, "{name}: {doc}");
        assert_eq!(doc["break"]["kind"], kind, "{name}: {doc}");
        let named = doc["break"]["run"].as_str().unwrap_or_default();
        assert!(named.contains(run), "{name}: {doc}");
    }
}

/// A `[[token]]` table for `secret`: the runner `rack-7`, for pipelines under `infra/`.
fn static_token(secret: &str) -> String {
    use sha2::Digest;
    let hash: String = sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("[[token]]\nname = \"rack-7\"\nsha256 = \"{hash}\"\npipelines = [\"infra/*\"]\n")
}

/// Static runner tokens record only the pipelines their globs allow.
#[test]
fn static_tokens_are_bound_to_their_pipelines() {
    let secret = "runner-secret-token-1";
    let s = setup("github", &static_token(secret));
    let ok = s.collector.post(secret, &oidc::run_line("infra/base", "5"));
    assert_eq!(ok.status, 201, "{}", ok.text());
    let other = s
        .collector
        .post(secret, &oidc::run_line("acme/web/build", "5"));
    assert_eq!(other.status, 403, "{}", other.text());
    assert_eq!(other.json()["error"], "pipeline_not_allowed");
}

/// A run spooled without a token (the token service was down) is never sent with none, which
/// the collector would refuse for good: a flush without a token leaves it in the spool, and
/// one with a static token of the collector's sends it.
#[test]
fn a_run_spooled_without_a_token_waits_for_one() {
    let secret = "runner-secret-token-2";
    let s = setup("github", &static_token(secret));
    let spool = s.env.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::set_permissions(&spool, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let entry =
        json!({"v": 1, "server": s.collector.url(), "line": oidc::run_line("infra/base", "7")});
    std::fs::write(spool.join("1-1.json"), entry.to_string()).unwrap();
    let flush = |token: Option<&str>| {
        let mut cmd = s.env.cmd();
        cmd.env("CACHEWARDEN_SPOOL", &spool)
            .env_remove("CACHEWARDEN_TOKEN");
        if let Some(token) = token {
            cmd.env("CACHEWARDEN_TOKEN", token);
        }
        cmd.arg("flush").output().unwrap()
    };
    let out = flush(None);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("has no token"), "{stderr}");
    assert!(spool.join("1-1.json").exists(), "{stderr}");
    assert!(!spool.join("refused").exists(), "{stderr}");
    assert!(stored_runs(&s.env).is_empty());
    let out = flush(Some(secret));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs = stored_runs(&s.env);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["run"], "7");
    assert!(!spool.join("1-1.json").exists());
}

/// A static token has no issue time, so a run it sends is held to when the collector
/// received it: one claiming to have started months earlier (before a purge it ran after) is
/// stored time-suspect, and one whose times fit a run and its spool is believed.
#[test]
fn a_static_token_run_claiming_an_old_start_is_time_suspect() {
    let secret = "runner-secret-token-1";
    let s = setup(
        "github",
        &format!(
            "{}\n[server]\nmax_run_seconds = 3600\nlate_grace_seconds = 3600\n",
            static_token(secret)
        ),
    );
    let now = chrono::Utc::now();
    let post = |run: &str, ago: chrono::Duration| {
        let started = now - ago;
        let line = json!({
            "v": 1, "type": "run", "pipeline": "infra/base", "run": run, "step": "Dockerfile",
            "builder": "b1",
            "started_at": started.to_rfc3339(),
            "finished_at": (started + chrono::Duration::minutes(5)).to_rfc3339(),
            "mounts": [{"id": "/root/.cache/pip"}],
            "records": {"created": [], "reused": []},
        });
        let response = s.collector.post(secret, &line);
        assert_eq!(response.status, 201, "{}", response.text());
        response.json()
    };
    let months = post("1-1", chrono::Duration::days(200));
    let why = months["time_suspect"]
        .as_str()
        .unwrap_or_else(|| panic!("{months}"));
    assert!(
        why.contains("more than 7200s before it was received"),
        "{why}"
    );
    // Past a run's length and its spool's grace.
    let hours = post("2-1", chrono::Duration::hours(3));
    assert!(hours["time_suspect"].is_string(), "{hours}");
    // Within a run's length, and within its length plus the grace (sent from a spool).
    let recent = post("3-1", chrono::Duration::minutes(10));
    assert!(recent["time_suspect"].is_null(), "{recent}");
    let spooled = post("4-1", chrono::Duration::minutes(90));
    assert!(spooled["time_suspect"].is_null(), "{spooled}");

    let rows = sql_rows(
        &s.env,
        "SELECT r.run_key, c.identity, coalesce(c.time_suspect, 'NULL')
         FROM run_receipts c JOIN runs r ON r.id = c.run_id ORDER BY r.run_key",
    );
    assert_eq!(
        rows,
        [
            ["1-1", "token:rack-7", why],
            [
                "2-1",
                "token:rack-7",
                hours["time_suspect"].as_str().unwrap()
            ],
            ["3-1", "token:rack-7", "NULL"],
            ["4-1", "token:rack-7", "NULL"],
        ]
    );
}

/// A token of a public issuer minted by a project the collector does not serve (anyone can
/// ask GitHub for one with any audience) records nothing and cannot ask `/v1/check`; a
/// collector whose issuer lists no pipelines does not start.
#[test]
fn an_issuer_records_only_its_pipelines() {
    let env = Env::new();
    let rsa = Key::rsa(env.path(), "rsa-1");
    let issuer = Issuer::start(&[&rsa]);
    let config = env.write(
        "collector.toml",
        &oidc::config_for(&issuer, "github", "acme/**", ""),
    );
    let collector = Collector::start(serve_cmd(&env, &config), 0);
    let outsider = rsa.sign(&oidc::github_claims(
        &issuer.url,
        "outsider/fork",
        "build",
        "1",
    ));
    let refused = collector.post(&outsider, &oidc::run_line("outsider/fork/build", "1-1"));
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(refused.json()["error"], "pipeline_not_allowed");
    let asked = collector.get_with(
        &format!("/v1/check?digest=sha256:{}", "a".repeat(64)),
        &outsider,
    );
    assert_eq!(asked.status, 403, "{}", asked.text());
    let ours = rsa.sign(&oidc::github_claims(&issuer.url, "acme/web", "build", "2"));
    let ok = collector.post(&ours, &oidc::run_line("acme/web/build", "2-1"));
    assert_eq!(ok.status, 201, "{}", ok.text());
    assert_eq!(stored_runs(&env).len(), 1);

    let open = env.write(
        "open.toml",
        &oidc::config(&issuer, "github", "").replace("pipelines = [\"**\"]\n", ""),
    );
    let out = serve_cmd(&env, &open)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lists no `pipelines`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `[server] runs_per_minute` stops one identity from flooding the store.
#[test]
fn one_identity_is_rate_limited() {
    let s = setup("github", "[server]\nruns_per_minute = 3\n");
    let token = s.github_token("50");
    let statuses: Vec<u16> = (0..5)
        .map(|i| {
            let mut line = oidc::run_line("acme/web/build", "50-1");
            line["step"] = json!(format!("s{i}"));
            s.collector.post(&token, &line).status
        })
        .collect();
    assert_eq!(statuses, [201, 201, 201, 429, 429]);
}

/// 50 hooks at once are all stored, once each; prints throughput and p99 latency.
#[test]
fn fifty_hooks_at_once() {
    let s = setup("github", "[server]\nruns_per_minute = 0\n");
    let runs = 200usize;
    let tokens: Vec<(String, Value)> = (0..runs)
        .map(|i| {
            let run = format!("{}", 1000 + i);
            let token = s.github_token(&run);
            (token, oidc::run_line("acme/web/build", &format!("{run}-1")))
        })
        .collect();
    let tokens = std::sync::Arc::new(tokens);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..50)
        .map(|_| {
            let (tokens, next) = (tokens.clone(), next.clone());
            let addr = s.collector.addr.clone();
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some((token, line)) = tokens.get(i) else {
                        break;
                    };
                    let t = Instant::now();
                    let request = crate::harness::http::Request {
                        body: line.to_string().into_bytes(),
                        ..crate::harness::http::Request::new("POST", "/v1/runs")
                            .header("Authorization", &format!("Bearer {token}"))
                    };
                    let response = crate::harness::http::tcp(&addr, &request).unwrap();
                    assert_eq!(response.status, 201, "{}", response.text());
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let elapsed = started.elapsed();
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100 - 1];
    eprintln!(
        "collector: {runs} runs from 50 concurrent hooks in {:.2}s: {:.0} runs/s, p99 {:.1} ms",
        elapsed.as_secs_f64(),
        runs as f64 / elapsed.as_secs_f64(),
        p99.as_secs_f64() * 1000.0
    );
    assert_eq!(stored_runs(&s.env).len(), runs);
    let metrics = s.collector.get("/metrics").text();
    assert!(
        metrics.contains(&format!("cachewarden_runs_accepted_total {runs}")),
        "{metrics}"
    );
}

/// Signed runs `first..first + n` of `acme/web/build`, each with its own token (ES256, the
/// faster to sign).
fn signed_runs(s: &Setup, first: usize, n: usize) -> Vec<(String, Value)> {
    (first..first + n)
        .map(|i| {
            let run = i.to_string();
            let claims = oidc::github_claims(&s.issuer.url, "acme/web", "build", &run);
            (
                s.ec.sign(&claims),
                oidc::run_line("acme/web/build", &format!("{run}-1")),
            )
        })
        .collect()
}

/// Sends one signed run; the status, or `None` when no answer came.
fn send(addr: &str, token: &str, line: &Value) -> Option<u16> {
    let request = crate::harness::http::Request {
        body: line.to_string().into_bytes(),
        ..crate::harness::http::Request::new("POST", "/v1/runs")
            .header("Authorization", &format!("Bearer {token}"))
    };
    crate::harness::http::tcp(addr, &request)
        .ok()
        .map(|r| r.status)
}

/// 8 hooks sending `lines` at once, counting answers in `answered`; each returns the
/// indices of its runs that got no 201.
fn send_all(
    addr: &str,
    lines: &std::sync::Arc<Vec<(String, Value)>>,
    answered: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Vec<std::thread::JoinHandle<Vec<usize>>> {
    (0..8)
        .map(|w| {
            let (lines, addr, answered) = (lines.clone(), addr.to_owned(), answered.clone());
            std::thread::spawn(move || {
                let mut unanswered = Vec::new();
                for (i, (token, line)) in lines.iter().enumerate().filter(|(i, _)| i % 8 == w) {
                    if send(&addr, token, line) == Some(201) {
                        answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    } else {
                        unanswered.push(i);
                    }
                }
                unanswered
            })
        })
        .collect()
}

/// Waits until `n` runs were answered.
fn wait_for(answered: &std::sync::atomic::AtomicUsize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered.load(std::sync::atomic::Ordering::SeqCst) < n {
        assert!(
            Instant::now() < deadline,
            "the collector answered too few runs"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGTERM in the middle of a stream of runs: the collector finishes the requests in flight
/// and exits 0, and every run that was answered 201 is stored.
#[test]
fn sigterm_loses_no_accepted_run() {
    let s = setup("github", "[server]\nruns_per_minute = 0\n");
    let lines = std::sync::Arc::new(signed_runs(&s, 2000, 400));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let senders = send_all(&s.collector.addr, &lines, &answered);
    wait_for(&answered, 40);
    let Setup { env, collector, .. } = s;
    let status = collector.terminate();
    assert!(status.success(), "{status:?}");
    let unanswered: Vec<usize> = senders
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(
        !unanswered.is_empty(),
        "the collector stopped after the last run, not during"
    );
    let stored: std::collections::BTreeSet<String> = stored_runs(&env)
        .iter()
        .map(|r| r["run"].as_str().unwrap().to_owned())
        .collect();
    for (i, (_, line)) in lines.iter().enumerate() {
        let run = line["run"].as_str().unwrap();
        if !unanswered.contains(&i) {
            assert!(stored.contains(run), "accepted run {run} was lost");
        }
    }
}

/// A collector killed with SIGKILL in the middle of a stream of runs leaves a usable store
/// with each run whole or absent; the hooks that got no answer send again to a restarted
/// collector, and every run is stored exactly once.
#[test]
fn kill_9_mid_write_loses_nothing_sent_again() {
    let s = setup("github", "[server]\nruns_per_minute = 0\n");
    let lines = std::sync::Arc::new(signed_runs(&s, 3000, 400));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let senders = send_all(&s.collector.addr, &lines, &answered);
    wait_for(&answered, 40);
    let Setup {
        env,
        collector,
        issuer,
        ..
    } = s;
    collector.kill();
    let unanswered: Vec<usize> = senders
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(
        !unanswered.is_empty(),
        "the collector was killed after the last run, not during"
    );
    let config = env.path().join("collector.toml");
    let restarted = Collector::start(serve_cmd(&env, &config), 0);
    for i in unanswered {
        let (token, line) = &lines[i];
        let status = send(&restarted.addr, token, line);
        assert!(matches!(status, Some(200 | 201)), "{status:?}");
    }
    let runs = stored_runs(&env);
    assert_eq!(runs.len(), lines.len());
    let receipts = sql_rows(&env, "SELECT count(*) FROM run_receipts");
    assert_eq!(receipts, [[lines.len().to_string()]]);
    drop(issuer);
}

/// `/healthz` answers while the store answers; `/v1/check` tells a runner whether a digest
/// is held tainted, for any valid token, and refuses a request without one.
#[test]
fn health_and_check() {
    let s = setup("github", "");
    assert_eq!(s.collector.get("/healthz").status, 200);
    let token = s.github_token("60");
    let digest = format!("sha256:{}", "c".repeat(64));
    let path = format!("/v1/check?digest={digest}");
    let request = crate::harness::http::Request::get(&path);
    let refused = crate::harness::http::tcp(&s.collector.addr, &request).unwrap();
    assert_eq!(refused.status, 401);
    let request = crate::harness::http::Request::get(&path)
        .header("Authorization", &format!("Bearer {token}"));
    let answer = crate::harness::http::tcp(&s.collector.addr, &request).unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["results"][0]["tainted_in"], json!([]));
    let _ = AUDIENCE;
}

/// A free loopback port with nothing listening on it (yet).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `record --server` on GitHub Actions asks the job's token endpoint for a token with the
/// configured audience, leaves pipeline and run to the token, and the collector stores it.
#[test]
fn record_sends_to_the_collector_with_the_jobs_oidc_token() {
    let s = setup("github", "");
    let token = s.github_token("70");
    s.issuer.hand_out(&token);
    let out = s
        .env
        .cmd()
        .env("GITHUB_ACTIONS", "true")
        .env(
            "ACTIONS_ID_TOKEN_REQUEST_URL",
            format!("{}/token?api-version=2.0", s.issuer.url),
        )
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", oidc::REQUEST_TOKEN)
        .env("CACHEWARDEN_AUDIENCE", AUDIENCE)
        .args([
            "record",
            "--server",
            &s.collector.url(),
            "--builder",
            "ci-1",
        ])
        .args([
            "--cache-from",
            &format!("localhost:5000/c@sha256:{}", "d".repeat(64)),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("recorded run `acme%2Fweb%2Fbuild/70-1/"),
        "{stderr}"
    );
    assert_eq!(s.issuer.audiences(), [AUDIENCE]);
    let runs = stored_runs(&s.env);
    assert_eq!(runs[0]["pipeline"], "acme/web/build");
    assert!(!s.env.db().with_extension("never").exists());
}

/// A run the collector refuses exits 5 and is never spooled.
#[test]
fn a_refused_record_exits_5_and_is_not_spooled() {
    let s = setup("github", "");
    let token = s.github_token("80");
    let spool = s.env.path().join("spool");
    let out = s
        .env
        .cmd()
        .env("CACHEWARDEN_TOKEN", &token)
        .env("CACHEWARDEN_SPOOL", &spool)
        .args([
            "record",
            "--server",
            &s.collector.url(),
            "--pipeline",
            "acme/release/deploy",
        ])
        .args(["--run", "80-1", "--builder", "ci-1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("contradicts the token"), "{stderr}");
    assert!(!spool.exists() || std::fs::read_dir(&spool).unwrap().count() == 0);
}

/// With the collector down, a wrapped build succeeds on time and its run is spooled with its
/// token; `flush` sends it once the collector is up, and nothing is lost or doubled.
#[test]
fn collector_down_during_wrap_spools_and_flushes_later() {
    let env = Env::new();
    let rsa = Key::rsa(env.path(), "rsa-1");
    let issuer = Issuer::start(&[&rsa]);
    let config = env.write("collector.toml", &oidc::config(&issuer, "github", ""));
    let port = free_port();
    let server = format!("http://127.0.0.1:{port}");
    // A docker client that builds nothing and succeeds: the build itself is not under test.
    // Its Dockerfile names no input, so no containment check needs the collector.
    let docker = env.fake_docker("echo built\nexit 0\n");
    env.write("Dockerfile", "FROM scratch\n");
    let spool = env.path().join("spool");
    let mut hooks = Vec::new();
    for run in ["90", "91"] {
        let token = rsa.sign(&oidc::github_claims(&issuer.url, "acme/web", "build", run));
        let started = Instant::now();
        let out = env
            .cmd()
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_REPOSITORY", "acme/web")
            .env("GITHUB_WORKFLOW", "build")
            .env("GITHUB_RUN_ID", run)
            .env("GITHUB_RUN_ATTEMPT", "1")
            .env("CACHEWARDEN_TOKEN", &token)
            .env("CACHEWARDEN_SPOOL", &spool)
            .env("DOCKER_HOST", "unix:///nonexistent.sock")
            .args(["wrap", "--server", &server, "--builder", "ci-1", "--"])
            .arg(&docker)
            .args(["build", "-t", "app:1", "."])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the hook held up the build"
        );
        assert!(stderr.contains("spooled"), "{stderr}");
        hooks.push(token);
    }
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 2);
    let collector = Collector::start(serve_cmd(&env, &config), port);
    let out = env
        .cmd()
        .env("CACHEWARDEN_SPOOL", &spool)
        .arg("flush")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs: Vec<String> = stored_runs(&env)
        .iter()
        .map(|r| r["run"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs.contains(&"90-1".to_owned()) && runs.contains(&"91-1".to_owned()));
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);
    drop(collector);
}

/// `check --server` asks the collector, so a runner with no store of its own still refuses
/// an input an open incident holds tainted; with the collector down, `[containment]
/// on_unavailable` decides.
#[test]
fn check_asks_the_collector_for_containment() {
    let s = setup("github", "");
    let token = s.github_token("100");
    let response = s
        .collector
        .post(&token, &oidc::run_line("acme/web/build", "100-1"));
    assert_eq!(response.status, 201, "{}", response.text());
    let out = s
        .env
        .cmd()
        .args([
            "incident",
            "open",
            "--pipeline",
            "acme/web/build",
            "--since",
            "1d",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported = format!("sha256:{}", "b".repeat(64));
    let clean = format!("sha256:{}", "e".repeat(64));
    // The runner's own store is elsewhere and empty.
    let runner = Env::new();
    let check = |server: &str, digest: &str, config: Option<&std::path::Path>| {
        let mut cmd = runner.cmd();
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        cmd.env("CACHEWARDEN_TOKEN", &token)
            .args(["check", "--server", server, digest])
            .output()
            .unwrap()
    };
    let tainted = check(&s.collector.url(), &exported, None);
    assert_eq!(
        tainted.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&tainted.stderr)
    );
    assert!(String::from_utf8_lossy(&tainted.stdout).contains("TAINTED"));
    let ok = check(&s.collector.url(), &clean, None);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let down = format!("http://127.0.0.1:{}", free_port());
    let closed = check(&down, &clean, None);
    assert_eq!(
        closed.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&closed.stderr)
    );
    let open = runner.write(
        "open.toml",
        "[containment]\non_unavailable = \"fail-open\"\n",
    );
    let passed = check(&down, &clean, Some(&open));
    assert_eq!(
        passed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&passed.stderr)
    );
    assert!(String::from_utf8_lossy(&passed.stderr).contains("containment not checked"));
}

/// With `--tls-cert` and `--tls-key` the collector speaks only TLS, and accepts runs over it.
#[test]
fn the_collector_serves_tls() {
    let env = Env::new();
    let rsa = Key::rsa(env.path(), "rsa-1");
    let issuer = Issuer::start(&[&rsa]);
    let config = env.write("collector.toml", &oidc::config(&issuer, "github", ""));
    let (cert, key) = (env.path().join("cert.pem"), env.path().join("key.pem"));
    let made = Command::new(crate::harness::token::OPENSSL)
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let collector = Collector::start_with(
        serve_cmd(&env, &config),
        0,
        &[
            "--tls-cert".as_ref(),
            cert.as_os_str(),
            "--tls-key".as_ref(),
            key.as_os_str(),
        ],
    );
    assert!(collector.log().contains("https://"), "{}", collector.log());
    let token = rsa.sign(&oidc::github_claims(
        &issuer.url,
        "acme/web",
        "build",
        "110",
    ));
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&cert)
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "-H",
            "Content-Type: application/json",
            "-w",
            "\n%{http_code}",
        ])
        .args([
            "--data",
            &oidc::run_line("acme/web/build", "110-1").to_string(),
        ])
        .arg(format!("https://{}/v1/runs", collector.addr))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.ends_with("\n201"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Plain HTTP gets no answer from a TLS listener.
    let plain = crate::harness::http::tcp(
        &collector.addr,
        &crate::harness::http::Request::get("/healthz"),
    );
    assert!(plain.is_err() || plain.unwrap().status != 200);
    assert_eq!(stored_runs(&env).len(), 1);
}

/// `wrap --server` on a runner with no store of its own refuses to build from a cache the
/// collector's open incident holds tainted: the build command never runs.
#[test]
fn wrap_refuses_inputs_the_collector_holds_tainted() {
    let s = setup("github", "");
    let token = s.github_token("120");
    let response = s
        .collector
        .post(&token, &oidc::run_line("acme/web/build", "120-1"));
    assert_eq!(response.status, 201, "{}", response.text());
    let out = s
        .env
        .cmd()
        .args([
            "incident",
            "open",
            "--pipeline",
            "acme/web/build",
            "--since",
            "1d",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runner = Env::new();
    let marker = runner.path().join("built");
    let docker = runner.write(
        "bin/docker",
        &format!("#!/bin/sh\ntouch {}\nexit 0\n", marker.display()),
    );
    std::fs::set_permissions(&docker, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let next = s.github_token("121");
    let tainted = format!("localhost:5000/cache/app@sha256:{}", "b".repeat(64));
    let out = runner
        .cmd()
        .env("CACHEWARDEN_TOKEN", &next)
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .args([
            "wrap",
            "--server",
            &s.collector.url(),
            "--pipeline",
            "acme/web/build",
        ])
        .args(["--run", "121-1", "--builder", "ci-1", "--"])
        .arg(&docker)
        .args(["build", "--cache-from", &tainted, "."])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("tainted in open incident 1"), "{stderr}");
    assert!(!marker.exists(), "the build ran");
}

/// `wrap --server` asks the collector about the build's cache mounts too: a mount its open
/// incident holds on the build's builder is refused (exit 5) before the build runs; the same
/// mount id on another builder builds.
#[test]
fn wrap_refuses_a_mount_the_collector_holds() {
    let s = setup("github", "");
    let token = s.github_token("130");
    let mut line = oidc::run_line("acme/web/build", "130-1");
    line["mounts"] = serde_json::json!([{"id": "pip"}]);
    let response = s.collector.post(&token, &line);
    assert_eq!(response.status, 201, "{}", response.text());
    let out = s
        .env
        .cmd()
        .args([
            "incident",
            "open",
            "--pipeline",
            "acme/web/build",
            "--since",
            "1d",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runner = Env::new();
    let marker = runner.path().join("built");
    let docker = runner.write(
        "bin/docker",
        &format!("#!/bin/sh\ntouch {}\nexit 0\n", marker.display()),
    );
    std::fs::set_permissions(&docker, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    runner.write(
        "ctx/Dockerfile",
        "FROM scratch\nRUN --mount=type=cache,id=pip,target=/root/.cache/pip true\n",
    );
    let wrap = |run: &str, builder: &str| {
        runner
            .cmd()
            .env("CACHEWARDEN_TOKEN", s.github_token(run))
            .env("DOCKER_HOST", "unix:///nonexistent.sock")
            .args([
                "wrap",
                "--server",
                &s.collector.url(),
                "--pipeline",
                "acme/web/build",
            ])
            .args(["--run", &format!("{run}-1"), "--builder", builder, "--"])
            .arg(&docker)
            .args(["build", "-t", "app"])
            .arg(runner.path().join("ctx"))
            .output()
            .unwrap()
    };
    let out = wrap("131", "ci-1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("`cache mount ci-1:pip` is tainted in open incident 1"),
        "{stderr}"
    );
    assert!(!marker.exists(), "the build ran");
    let out = wrap("132", "ci-2");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(marker.exists());
    // A build wrap cannot read has inputs nobody can check: refused while the collector's
    // incident holds anything, and when no collector answers.
    std::fs::remove_file(&marker).unwrap();
    for server in [s.collector.url(), "http://127.0.0.1:9".to_owned()] {
        let out = runner
            .cmd()
            .env("CACHEWARDEN_TOKEN", s.github_token("133"))
            .args(["wrap", "--server", &server, "--pipeline", "acme/web/build"])
            .args(["--run", "133-1", "--builder", "ci-1", "--"])
            .arg(&docker)
            .args(["buildx", "bake"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{server}: {stderr}");
        assert!(!marker.exists(), "the build ran");
    }
}

/// `wrap --server --allow-tainted` builds from a cache the collector's open incident holds
/// tainted and sends the override there: the fleet's record holds it, named by the token's
/// pipeline and run and its identity, not by anything the runner claims. An override naming
/// a digest no open incident holds, or another pipeline than the token's, is refused.
#[test]
fn wrap_sends_its_override_to_the_collector() {
    let s = setup("github", "");
    let token = s.github_token("130");
    let response = s
        .collector
        .post(&token, &oidc::run_line("acme/web/build", "130-1"));
    assert_eq!(response.status, 201, "{}", response.text());
    let out = s
        .env
        .cmd()
        .args([
            "incident",
            "open",
            "--pipeline",
            "acme/web/build",
            "--since",
            "1d",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runner = Env::new();
    let marker = runner.path().join("built");
    let docker = runner.write(
        "bin/docker",
        &format!("#!/bin/sh\ntouch {}\nexit 0\n", marker.display()),
    );
    std::fs::set_permissions(&docker, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let next = s.github_token("131");
    let tainted_digest = format!("sha256:{}", "b".repeat(64));
    let tainted = format!("localhost:5000/cache/app@{tainted_digest}");
    let out = runner
        .cmd()
        .env("CACHEWARDEN_TOKEN", &next)
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .args(["wrap", "--server", &s.collector.url(), "--allow-tainted"])
        .args(["--builder", "ci-1", "--"])
        .arg(&docker)
        .args(["build", "--cache-from", &tainted, "."])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(marker.exists(), "the build did not run: {stderr}");
    assert!(
        stderr.contains("override is recorded at the collector"),
        "{stderr}"
    );
    let rows = sql_rows(
        &s.env,
        "SELECT incident_id, digest, pipeline, run_key, by FROM containment_overrides",
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0][..4],
        ["1", tainted_digest.as_str(), "acme/web/build", "131-1"]
    );
    assert!(rows[0][4].ends_with("#acme/web/build"), "{rows:?}");
    // The runner's own store holds nothing.
    assert!(
        !runner.db().exists() || {
            let conn = rusqlite::Connection::open(runner.db()).unwrap();
            conn.query_row("SELECT count(*) FROM containment_overrides", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap_or(0)
                == 0
        }
    );

    let addr = s.collector.url().trim_start_matches("http://").to_owned();
    let post = |body: Value| {
        let request = crate::harness::http::Request::new("POST", "/v1/overrides")
            .header("Authorization", &format!("Bearer {next}"))
            .header("Content-Type", "application/json");
        let request = crate::harness::http::Request {
            body: body.to_string().into_bytes(),
            ..request
        };
        crate::harness::http::tcp(&addr, &request).unwrap()
    };
    let clean = post(json!({"v": 1, "overrides": [
        {"digest": format!("sha256:{}", "c".repeat(64)), "incident": 1}
    ]}));
    assert_eq!(clean.status, 409, "{}", clean.text());
    let other = post(
        json!({"v": 1, "pipeline": "acme/other/build", "overrides": [
            {"digest": tainted_digest, "incident": 1}
        ]}),
    );
    assert_eq!(other.status, 403, "{}", other.text());
    let rows = sql_rows(&s.env, "SELECT count(*) FROM containment_overrides");
    assert_eq!(rows, [["1"]]);
    let metrics = s.collector.get("/metrics").text();
    for counted in [
        "cachewarden_overrides_accepted_total 1",
        "cachewarden_overrides_refused_total{reason=\"not_contained\"} 1",
        "cachewarden_overrides_refused_total{reason=\"contradicts_claims\"} 1",
    ] {
        assert!(metrics.contains(counted), "{counted}: {metrics}");
    }
}

/// A fleet runner's per-step cache hits reach the store with its run: a run line's `steps`
/// are stored as `wrap` stores them locally, once however often the run is sent.
#[test]
fn a_run_sent_with_steps_is_stored_with_them() {
    let s = setup("github", "");
    let token = s.github_token("140");
    let mut line = oidc::run_line("acme/web/build", "140-1");
    let digest = format!("sha256:{}", "d".repeat(64));
    line["step_progress"] = json!("rawjson");
    line["steps"] = json!([
        {"ordinal": 0, "name": "[1/2] RUN make deps", "digest": digest, "cached": true},
        {"ordinal": 1, "name": "[2/2] RUN make\u{1b}[2J", "cached": false},
    ]);
    let first = s.collector.post(&token, &line);
    assert_eq!(first.status, 201, "{}", first.text());
    let again = s.collector.post(&token, &line);
    assert_eq!(again.status, 200, "{}", again.text());
    let rows = sql_rows(
        &s.env,
        "SELECT s.ordinal, s.name, s.digest, s.cached, s.source, r.run_key
         FROM step_events s JOIN runs r ON r.id = s.run_id ORDER BY s.ordinal",
    );
    assert_eq!(
        rows,
        [
            [
                "0",
                "[1/2] RUN make deps",
                digest.as_str(),
                "1",
                "rawjson",
                "140-1"
            ],
            ["1", "[2/2] RUN make\u{1b}[2J", "", "0", "rawjson", "140-1"],
        ]
    );
    // The audit counts them as the pipeline's hit rate on its builder.
    let audit: Value = serde_json::from_str(&ok(s
        .env
        .cmd()
        .args(["audit", "builds", "--format", "json"])))
    .unwrap();
    assert_eq!(audit["summary"]["steps"], 2, "{audit}");
    assert_eq!(audit["hit_rates"][0]["pipeline"], "acme/web/build");
    assert_eq!(audit["hit_rates"][0]["cached"], 1);
}

/// A hook cannot flood the store through a run's steps: a `steps` array over the limit
/// is refused with 400 and a reason naming it, and nothing of the run is stored.
#[test]
fn an_oversized_steps_array_is_refused() {
    let s = setup("github", "");
    let token = s.github_token("141");
    let mut line = oidc::run_line("acme/web/build", "141-1");
    line["step_progress"] = json!("plain");
    line["steps"] = (0..1001)
        .map(|i| json!({"ordinal": i, "name": "RUN x", "cached": true}))
        .collect();
    let response = s.collector.post(&token, &line);
    assert_eq!(response.status, 400, "{}", response.text());
    assert_eq!(response.json()["error"], "invalid_steps");
    assert_eq!(
        response.json()["reason"],
        "`steps` has 1001 entries, over the limit of 1000"
    );
    assert!(stored_runs(&s.env).is_empty());
    let metrics = s.collector.get("/metrics").text();
    assert!(
        metrics.contains("cachewarden_requests_refused_total{reason=\"invalid_steps\"} 1"),
        "{metrics}"
    );
}

/// A body over the largest provenance line is refused as every other request is: 413 with
/// the JSON reason, logged, counted and kept, for runs and overrides alike.
#[test]
fn an_oversized_body_is_refused_logged_counted_and_kept() {
    let s = setup("github", "");
    let token = s.github_token("143");
    let mut line = oidc::run_line("acme/web/build", "143-1");
    line["commit"] = json!("a".repeat(1 << 20));
    let response = s.collector.post(&token, &line);
    assert_eq!(response.status, 413, "{}", response.text());
    assert_eq!(response.json()["error"], "body_too_large");
    assert!(
        response.json()["reason"]
            .as_str()
            .unwrap()
            .contains("the body is over 1048578 bytes"),
        "{}",
        response.text()
    );
    let request = http::Request::new("POST", "/v1/overrides")
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", "application/json");
    let request = http::Request {
        body: vec![b' '; (1 << 20) + 3],
        ..request
    };
    let response = http::tcp(&s.collector.url()["http://".len()..], &request).unwrap();
    assert_eq!(response.status, 413, "{}", response.text());
    assert_eq!(response.json()["error"], "body_too_large");
    assert!(stored_runs(&s.env).is_empty());
    let log = s.collector.log_with("refused 413 body_too_large");
    assert!(log.contains("refused 413 body_too_large"), "{log}");
    let metrics = s.collector.get("/metrics").text();
    assert!(
        metrics.contains("cachewarden_requests_refused_total{reason=\"body_too_large\"} 2"),
        "{metrics}"
    );
    let kept = sql_rows(
        &s.env,
        "SELECT status, code FROM collector_refusals ORDER BY id",
    );
    assert_eq!(kept, [["413", "body_too_large"], ["413", "body_too_large"]]);
}

/// A run body with a NUL character in a value is refused with 400 and a reason naming the
/// field, on both engines alike, and nothing of the run is stored.
#[test]
fn a_run_with_a_nul_is_refused_naming_the_field() {
    let s = setup("github", "");
    let token = s.github_token("142");
    let mut line = oidc::run_line("acme/web/build", "142-1");
    line["commit"] = json!("abc\u{0}def");
    let response = s.collector.post(&token, &line);
    assert_eq!(response.status, 400, "{}", response.text());
    assert_eq!(response.json()["error"], "invalid_line");
    assert_eq!(
        response.json()["reason"],
        "`commit` holds a NUL character (U+0000), which the store does not keep"
    );
    assert!(stored_runs(&s.env).is_empty());
}

/// A flood of bad tokens is logged and counted, but only `[server]
/// refusals_kept_per_minute` of it is kept in the store: the evidence cannot fill the disk.
#[test]
fn a_flood_of_refusals_is_kept_only_up_to_the_allowance() {
    let s = setup("github", "[server]\nrefusals_kept_per_minute = 3\n");
    let line = oidc::run_line("acme/web/build", "1-1");
    for _ in 0..10 {
        assert_eq!(s.collector.post("not-a-token", &line).status, 401);
    }
    assert_eq!(
        sql_rows(&s.env, "SELECT count(*) FROM collector_refusals"),
        [["3"]]
    );
    let metrics = s.collector.get("/metrics").text();
    assert!(
        metrics.contains("cachewarden_requests_refused_total{reason=\"malformed_token\"} 10"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cachewarden_refusals_not_kept_total 7"),
        "{metrics}"
    );
}

/// Two collectors in front of one PostgreSQL store take runs at once from hooks that reach
/// either: every run is stored once (a run sent again to the other collector is a repeat, 200),
/// and the run chain over them verifies.
#[test]
fn two_collectors_share_one_postgresql_store() {
    if !crate::harness::require_postgres() {
        return;
    }
    let db = crate::harness::PgCluster::shared().database();
    let env = Env::new();
    ok(env.cmd().args(["--db", &db, "db", "migrate"]));
    let rsa = Key::rsa(env.path(), "rsa-1");
    let issuer = Issuer::start(&[&rsa]);
    let config = env.write(
        "collector.toml",
        &oidc::config(&issuer, "github", "[server]\nruns_per_minute = 0\n"),
    );
    let collectors: std::sync::Arc<Vec<Collector>> = std::sync::Arc::new(
        (0..2)
            .map(|_| {
                let mut cmd = serve_cmd(&env, &config);
                cmd.args(["--db", &db]);
                Collector::start(cmd, 0)
            })
            .collect(),
    );
    let runs = 60usize;
    let sent: Vec<(String, Value)> = (0..runs)
        .map(|i| {
            let run = format!("{}", 5000 + i);
            let token = rsa.sign(&oidc::github_claims(&issuer.url, "acme/web", "build", &run));
            (token, oidc::run_line("acme/web/build", &format!("{run}-1")))
        })
        .collect();
    let sent = std::sync::Arc::new(sent);
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let (sent, collectors) = (sent.clone(), collectors.clone());
            std::thread::spawn(move || {
                for i in (w..sent.len()).step_by(6) {
                    let (token, line) = &sent[i];
                    let response = collectors[i % 2].post(token, line);
                    assert_eq!(response.status, 201, "{}", response.text());
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let (token, line) = &sent[0];
    assert_eq!(collectors[1].post(token, line).status, 200);
    let export = ok(env.cmd().args(["--db", &db, "export"]));
    let stored = export
        .lines()
        .filter(|l| l.contains("\"type\":\"run\""))
        .count();
    assert_eq!(stored, runs);
    ok(env.cmd().args(["--db", &db, "verify-log"]));
}
