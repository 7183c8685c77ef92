//! `cachewarden serve`: the collector. Hooks send runs over HTTP with a CI OIDC token (or a
//! static runner token); the collector verifies who is sending, names the run from the
//! token's claims, refuses a body that contradicts them, stamps the time it received the
//! run, and writes it to the store. The API is `schema/collector.openapi.yaml`.
//!
//! Every accepted run is committed before it is answered, so a hook that got its answer has
//! its run stored whatever happens to the collector next, and a hook that got none sends it
//! again (a run sent twice is stored once).

pub mod auth;
pub mod claims;
pub mod jwks;
pub mod metrics;
mod tls;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use self::auth::{Identity, Refusal, Source, Verifier};
use crate::config::{Config, glob_match};
use crate::model::{RunRecord, limits};
use crate::report::escape::{Line, Term};
use crate::store::{ImportItem, Receipt, Refused, Store, StoreError};
use crate::time::{self, Micros};

pub use tls::TlsFiles;

/// The API version in paths and bodies.
pub const API_VERSION: u32 = 1;

/// The collector's state, shared by its handlers.
pub struct Collector {
    store: Mutex<Store>,
    config: Config,
    verifier: Verifier,
    metrics: metrics::Metrics,
    /// Recent accepted-run times per identity, for `[server] runs_per_minute`.
    recent: Mutex<HashMap<String, VecDeque<Instant>>>,
    /// When the refusals of the last minute were kept, for `[server]
    /// refusals_kept_per_minute`.
    kept: Mutex<VecDeque<Instant>>,
    /// When a failed health probe was last logged, and how many failed since: anyone may
    /// probe, so a store that is down is logged once a minute, not once a probe.
    unhealthy: Mutex<(Option<Instant>, u64)>,
}

impl Collector {
    pub fn new(store: Store, config: Config) -> Result<Self, String> {
        let verifier = Verifier::new(&config)?;
        Ok(Self {
            store: Mutex::new(store),
            config,
            verifier,
            metrics: metrics::Metrics::default(),
            recent: Mutex::new(HashMap::new()),
            kept: Mutex::new(VecDeque::new()),
            unhealthy: Mutex::new((None, 0)),
        })
    }
}

/// The routes.
pub fn router(collector: Arc<Collector>) -> Router {
    Router::new()
        .route("/v1/runs", post(post_run))
        .route("/v1/check", get(check))
        .route("/v1/overrides", post(post_overrides))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        // A run is one provenance line; a line is at most `limits::LINE_BYTES`. A larger body
        // reaches the handlers as a rejection, which they refuse as any other request.
        .layer(DefaultBodyLimit::max(limits::LINE_BYTES + 2))
        .with_state(collector)
}

/// Serves until `shutdown` resolves, then finishes the requests in flight (each accepted run
/// is committed before its answer) and returns.
pub async fn run(
    listener: tokio::net::TcpListener,
    tls: Option<TlsFiles>,
    collector: Arc<Collector>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = Deadlines {
        head: Duration::from_secs(collector.config.server.request_head_seconds.max(1)),
        body: Duration::from_secs(collector.config.server.request_body_seconds.max(1)),
    };
    let app = router(collector);
    match tls {
        None => serve_guarded(listener, app, limits, shutdown).await,
        Some(files) => {
            let listener = tls::TlsListener::new(listener, files.acceptor()?)?;
            serve_guarded(listener, app, limits, shutdown).await
        }
    }
}

/// How long a request's head (request line and headers), and then its body, may take to
/// arrive (`[server] request_head_seconds`, `request_body_seconds`): anyone can open a
/// connection, and one that trickles its request would otherwise be held open for good.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    head: Duration,
    body: Duration,
}

/// Connections served at once; a connection past them waits to be accepted.
const CONNECTIONS: usize = 1024;

/// Serves HTTP/1 on `listener` with `app`: at most [`CONNECTIONS`] at once, each request within
/// its [`Deadlines`]. On `shutdown`, stops accepting, lets the requests in flight finish, and
/// returns.
async fn serve_guarded<L>(
    mut listener: L,
    app: Router,
    deadlines: Deadlines,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (io, _) = tokio::select! {
            conn = listener.accept() => conn,
            () = &mut shutdown => break,
        };
        let service =
            app.clone()
                .map_request(move |req: axum::http::Request<hyper::body::Incoming>| {
                    req.map(|body| axum::body::Body::new(Deadline::new(body, deadlines.body)))
                });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(deadlines.head)
            .serve_connection(
                TokioIo::new(io),
                hyper_util::service::TowerToHyperService::new(service),
            );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
    }
    graceful.shutdown().await;
    Ok(())
}

/// A request's body that must arrive whole within its time, counted from when its head did:
/// past it, reading the body fails with [`BodyTooSlow`], which the handlers refuse (408).
struct Deadline<B> {
    body: B,
    limit: Duration,
    expiry: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<B> Deadline<B> {
    fn new(body: B, limit: Duration) -> Self {
        Self {
            body,
            limit,
            expiry: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

/// A body that did not arrive within its time.
#[derive(Debug, thiserror::Error)]
#[error("the body did not arrive within {} s", .0.as_secs())]
struct BodyTooSlow(Duration);

impl<B> hyper::body::Body for Deadline<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(axum::Error::new))),
            Poll::Pending => match this.expiry.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    Poll::Ready(Some(Err(axum::Error::new(BodyTooSlow(this.limit)))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

async fn healthz(State(c): State<Arc<Collector>>) -> Response {
    let probe = run_store(&c, |store| store.ping()).await;
    match probe {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(err) => {
            let mut unhealthy = c.unhealthy.lock().unwrap_or_else(|e| e.into_inner());
            let (logged, failed) = &mut *unhealthy;
            *failed += 1;
            if logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                let since = match *failed {
                    1 => String::new(),
                    n => format!(" ({n} failed probes since the last line)"),
                };
                eprintln!("store unavailable: {}{since}", Line(&err.to_string()));
                *logged = Some(Instant::now());
                *failed = 0;
            }
            drop(unhealthy);
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{STORE_UNAVAILABLE}\n"),
            )
                .into_response()
        }
    }
}

async fn metrics_text(State(c): State<Arc<Collector>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        c.metrics.render(),
    )
        .into_response()
}

/// Runs `f` on the store off the async threads.
async fn run_store<T: Send + 'static>(
    c: &Arc<Collector>,
    f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let c = Arc::clone(c);
    tokio::task::spawn_blocking(move || {
        let mut store = c.store.lock().unwrap_or_else(|e| e.into_inner());
        store.reconnect_if_closed()?;
        f(&mut store)
    })
    .await
    .unwrap_or_else(|join| {
        Err(StoreError::Unusable {
            path: Default::default(),
            reason: format!("the store task failed: {join}"),
        })
    })
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

fn now_seconds(now: Micros) -> i64 {
    now.div_euclid(1_000_000)
}

/// A body the collector could not take in whole: over the limit (413, `body_too_large`), not
/// in within its time (408, `body_too_slow`), or cut short by the sender (400,
/// `unreadable_body`). Refused as any other request is.
fn unreadable(rejection: &BytesRejection, what: &str) -> Refusal {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(err) = cause {
        if let Some(slow) = err.downcast_ref::<BodyTooSlow>() {
            return Refusal::new(408, "body_too_slow", slow.to_string());
        }
        cause = err.source();
    }
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Refusal::new(
            413,
            "body_too_large",
            format!(
                "the body is over {} bytes, the most {what} may take",
                limits::LINE_BYTES + 2
            ),
        ),
        _ => Refusal::new(
            400,
            "unreadable_body",
            format!("the body cannot be read: {}", rejection.body_text()),
        ),
    }
}

async fn post_run(
    State(c): State<Arc<Collector>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let received_at = time::now();
    let accepted = match &body {
        Ok(body) => accept_run(&c, &headers, body, received_at).await,
        Err(rejection) => Err((unreadable(rejection, "a run"), None)),
    };
    let response = match accepted {
        Ok(response) => response,
        Err((refusal, run_name)) => refuse(&c, refusal, run_name, received_at).await,
    };
    c.metrics.observe(started.elapsed());
    response
}

/// A refusal and the run the body named, when it named one.
type Rejection = (Refusal, Option<String>);

async fn accept_run(
    c: &Arc<Collector>,
    headers: &HeaderMap,
    body: &[u8],
    received_at: Micros,
) -> Result<Response, Rejection> {
    let identity = c
        .verifier
        .verify(authorization(headers), true, now_seconds(received_at))
        .await
        .map_err(|r| (r, None))?;
    let (record, receipt, steps, notes) = admit(&identity, body, &c.config, received_at)?;
    let name = crate::model::run_name(&record.pipeline.name, &record.run_id, &record.step);
    rate_limit(c, &identity).map_err(|r| (r, Some(name.clone())))?;
    let config = c.config.clone();
    let stored = run_store(c, move |store| {
        let steps = steps.as_ref().map(|(mode, hits)| (*mode, hits.as_slice()));
        let stored = store.record_received_run(&record, &config, &receipt, steps)?;
        // The chain head after the run: logged, so a head lives outside the store too.
        let head = if stored.0.created {
            Some(store.chain_head()?)
        } else {
            None
        };
        Ok((stored, head))
    })
    .await;
    let ((outcome, kept), head) = match stored {
        Ok(stored) => stored,
        // The conflict's message lists what the store holds of the run (its times, commit,
        // builder): another sender of the pipeline could match them to add to a run it does
        // not own. The log has it.
        Err(StoreError::Conflict(message)) => {
            return Err((
                Refusal::new(409, "conflict", message)
                    .claiming(identity.name.clone())
                    .telling(CONFLICT),
                Some(name),
            ));
        }
        Err(StoreError::Input(message)) => {
            return Err((
                Refusal::new(409, "conflict", message).claiming(identity.name.clone()),
                Some(name),
            ));
        }
        Err(err) => {
            return Err((
                Refusal::new(503, "store_unavailable", err.to_string())
                    .claiming(identity.name.clone())
                    .telling(STORE_UNAVAILABLE),
                Some(name),
            ));
        }
    };
    c.metrics
        .accepted(outcome.created, kept.late, kept.time_suspect.is_some());
    if outcome.created {
        // The run's name and the identity are the sender's words: in backticks, which `Term`
        // escapes inside them, so neither can write on as the line's own (a fake identity or
        // chain head).
        eprintln!(
            "accepted `{}` from `{}`{}{}{}",
            Term(&name),
            Term(&identity.name),
            if kept.late { " (late)" } else { "" },
            kept.time_suspect
                .as_deref()
                .map(|why| format!(" (time-suspect: {})", Line(why)))
                .unwrap_or_default(),
            head.map(|h| format!("; chain head {} length {}", h.head, h.length))
                .unwrap_or_default()
        );
    }
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let doc = json!({
        "v": API_VERSION,
        "run": name,
        "created": outcome.created,
        "events": outcome.events,
        "trust_level": outcome.trust_level,
        "received_at": time::format(kept.received_at),
        "late": kept.late,
        "time_suspect": kept.time_suspect,
        "warnings": notes.iter().chain(&outcome.warnings).collect::<Vec<_>>(),
    });
    Ok((status, axum::Json(doc)).into_response())
}

/// Turns a body into the run to store, checked against the identity: the token names the
/// pipeline and run (and for GitHub and GitLab the project, commit, ref and trust); a body
/// that says otherwise is refused. Fills what the body leaves out from the claims. The
/// run's per-step cache hits, where the body has them, come with it.
fn admit(
    identity: &Identity,
    body: &[u8],
    config: &Config,
    received_at: Micros,
) -> Result<(RunRecord, Receipt, Option<Steps>, Vec<String>), Rejection> {
    let bad = |reason: String| (Refusal::new(400, "invalid_line", reason), None);
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the body is not a provenance line: {e}")))?;
    if let Some(field) = crate::wire::provenance::nul_field(&value) {
        return Err(bad(crate::wire::provenance::nul_message(&field)));
    }
    let Some(line) = value.as_object_mut() else {
        return Err(bad("the body is not a JSON object".to_owned()));
    };
    if line.get("type").and_then(Value::as_str) != Some("run") {
        return Err(bad("the collector takes `run` lines only".to_owned()));
    }
    let text_of = |line: &serde_json::Map<String, Value>, key: &str| {
        line.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    // Kept with a refusal: bounded as its reason is.
    let body_name = |line: &serde_json::Map<String, Value>| {
        Some(auth::bounded(format!(
            "{}/{}",
            text_of(line, "pipeline").unwrap_or_default(),
            text_of(line, "run").unwrap_or_default()
        )))
    };
    let contradicts = |field: &str, body: &str, claim: &str| {
        Refusal::new(
            403,
            "contradicts_claims",
            format!("`{field}` `{body}` contradicts the token, which says `{claim}`"),
        )
        .claiming(identity.name.clone())
    };
    match &identity.source {
        Source::Oidc { run, .. } => {
            let claimed: [(&str, Option<&String>); 5] = [
                ("pipeline", Some(&run.pipeline)),
                ("run", run.run_id.as_ref()),
                ("project", run.project.as_ref()),
                ("commit", run.commit.as_ref()),
                ("git_ref", run.git_ref.as_ref()),
            ];
            for (field, claim) in claimed {
                let Some(claim) = claim else { continue };
                match text_of(line, field) {
                    Some(sent) if sent != *claim => {
                        return Err((contradicts(field, &sent, claim), body_name(line)));
                    }
                    Some(_) => {}
                    None => {
                        line.insert(field.to_owned(), Value::String(claim.clone()));
                    }
                }
            }
        }
        Source::Static { pipelines } => {
            let pipeline = text_of(line, "pipeline").unwrap_or_default();
            if !pipelines.iter().any(|p| glob_match(p, &pipeline)) {
                return Err((
                    Refusal::new(
                        403,
                        "pipeline_not_allowed",
                        format!("`{}` may not record pipeline `{pipeline}`", identity.name),
                    )
                    .claiming(identity.name.clone()),
                    body_name(line),
                ));
            }
        }
    }
    let name = body_name(line);
    let steps = crate::wire::steps::take(line).map_err(|reason| {
        (
            Refusal::new(400, "invalid_steps", reason).claiming(identity.name.clone()),
            name.clone(),
        )
    })?;
    let text = Value::Object(line.clone()).to_string();
    let item = crate::wire::provenance::parse_line(&text).map_err(bad)?;
    let ImportItem::Run(mut record) = item else {
        return Err(bad("the collector takes `run` lines only".to_owned()));
    };
    crate::wire::provenance::sent_caches_named_by_key(&record).map_err(bad)?;
    let lowest = config.trust_levels().into_iter().next().unwrap_or_default();
    if let Source::Oidc { run, .. } = &identity.source
        && let Some(why) = &run.untrusted
    {
        if let Some(asked) = record.trust_level.as_ref().filter(|l| **l != lowest) {
            return Err((
                contradicts("trust_level", asked, &format!("{lowest} ({why})")),
                name,
            ));
        }
        record.trust_level = Some(lowest.clone());
    }
    // A pipeline the collector's config gives no ceiling: a level above the lowest would be
    // the sender's word alone, and the first run's would become the pipeline's ceiling. The
    // run is kept, at the lowest level, and the sender told.
    let mut notes = Vec::new();
    let ceiling = config
        .pipeline(&record.pipeline.name)
        .and_then(|p| p.trust_level.as_ref());
    if ceiling.is_none() {
        if let Some(asked) = record.trust_level.take_if(|l| *l != lowest) {
            notes.push(format!(
                "pipeline `{}` has no trust ceiling in the collector's config (a `[[pipeline]]` \
                 with `trust_level`): the run is recorded at `{}`, not at the `{}` it asked for",
                Term(&record.pipeline.name),
                Term(&lowest),
                Term(&asked)
            ));
        }
        // Asking for nothing would take the ceiling a store may hold from an earlier run.
        record.trust_level = Some(lowest);
    }
    let receipt = Receipt {
        received_at,
        identity: identity.name.clone(),
        late: identity.late,
        time_suspect: time_suspect(&record, identity, config, received_at),
        began_after: began_after(identity, config, received_at),
    };
    Ok((*record, receipt, steps, notes))
}

/// A run's per-step cache hits and the progress output they were read from.
type Steps = (
    crate::ingest::progress::Mode,
    Vec<crate::ingest::progress::StepHit>,
);

/// Why a run's own times cannot be believed: it claims to have finished after the collector
/// received it, or to have started longer than a run may take before its token was issued, or
/// its token lives longer than `max_token_life_seconds` (which a trace takes as a token's
/// longest life to bound how much later than it began a run claims to have started).
/// A token with no issue time (a static `[[token]]`, or a JWT without `iat`) bounds nothing, so
/// such a run is held to when it was received: a run may take `max_run_seconds` and then wait
/// `late_grace_seconds` in a spool, and one claiming to have started before that is not
/// believed.
fn time_suspect(
    record: &RunRecord,
    identity: &Identity,
    config: &Config,
    received_at: Micros,
) -> Option<String> {
    let skew = time::seconds(config.server.clock_skew_seconds);
    let mut why = Vec::new();
    if record.finished_at > received_at.saturating_add(skew) {
        why.push(format!(
            "finished at {}, after it was received at {}",
            time::format(record.finished_at),
            time::format(received_at)
        ));
    }
    // How long before its reference a run may have started, and what that reference is.
    let server = &config.server;
    let (reference, seconds, before) = match identity.issued_at {
        Some(iat) => (
            iat.saturating_mul(1_000_000),
            server.max_run_seconds,
            "its token was issued".to_owned(),
        ),
        None => (
            received_at,
            server
                .max_run_seconds
                .saturating_add(server.late_grace_seconds),
            format!(
                "it was received at {} (its token has no issue time)",
                time::format(received_at)
            ),
        ),
    };
    let limit = reference
        .saturating_sub(time::seconds(seconds))
        .saturating_sub(skew);
    if record.started_at < limit {
        why.push(format!(
            "started at {}, more than {seconds}s before {before}",
            time::format(record.started_at)
        ));
    }
    // A trace bounds how much later than it began a run may claim to have started by taking
    // a token to live no longer than `max_token_life_seconds`: a token that lives longer, or
    // an OIDC token without an issue time, bounds nothing.
    let life = server.token_life_seconds();
    match (&identity.source, identity.issued_at, identity.expires_at) {
        (_, Some(iat), Some(exp))
            if exp.saturating_sub(iat) > i64::try_from(life).unwrap_or(i64::MAX) =>
        {
            why.push(format!(
                "its token lives {}s, longer than max_token_life_seconds ({life})",
                exp.saturating_sub(iat)
            ));
        }
        (Source::Oidc { .. }, None, _) => {
            why.push(
                "its token has no issue time, which bounds nothing about when it began".into(),
            );
        }
        _ => {}
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// The earliest a run may have begun, as its token bounds it: issued (at the latest when it
/// was received) at most `max_run_seconds` after the run began, on clocks each up to
/// `clock_skew_seconds` off. Kept with the receipt, so a trace bounds the run as the collector
/// was set when it received the run, whatever the config of whoever traces. A token with no
/// issue time (a static `[[token]]`, a JWT without `iat`) bounds nothing.
fn began_after(identity: &Identity, config: &Config, received_at: Micros) -> Option<Micros> {
    let server = &config.server;
    let issued = identity
        .issued_at?
        .saturating_mul(1_000_000)
        .min(received_at);
    Some(
        issued
            .saturating_sub(time::seconds(server.max_run_seconds))
            .saturating_sub(time::seconds(server.clock_skew_seconds).saturating_mul(2)),
    )
}

/// Whether one more event fits in `limit` a minute (0: no limit), counting it when it does.
fn within_minute(times: &mut VecDeque<Instant>, limit: usize) -> bool {
    if limit == 0 {
        return true;
    }
    let now = Instant::now();
    while times
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
    {
        times.pop_front();
    }
    if times.len() >= limit {
        return false;
    }
    times.push_back(now);
    true
}

fn rate_limit(c: &Collector, identity: &Identity) -> Result<(), Refusal> {
    let limit = c.config.server.runs_per_minute as usize;
    let mut recent = c.recent.lock().unwrap_or_else(|e| e.into_inner());
    let times = recent.entry(identity.name.clone()).or_default();
    if !within_minute(times, limit) {
        return Err(Refusal::new(
            429,
            "rate_limited",
            format!("more than {limit} runs a minute"),
        )
        .claiming(identity.name.clone()));
    }
    Ok(())
}

/// Answers a refused request: logged (escaped), counted, and kept as evidence unless it is
/// the rate limit or the store's own trouble (keeping those would be the flood).
async fn refuse(
    c: &Arc<Collector>,
    refusal: Refusal,
    run_name: Option<String>,
    at: Micros,
) -> Response {
    c.metrics.refused(refusal.code);
    eprintln!(
        "refused {} {}: {}{}",
        refusal.status,
        refusal.code,
        Line(&refusal.reason),
        if refusal.claimed.is_empty() {
            String::new()
        } else {
            format!(" (claimed: {})", Line(&refusal.claimed))
        }
    );
    let keep = !matches!(refusal.code, "rate_limited" | "store_unavailable");
    let keep = keep && {
        let limit = c.config.server.refusals_kept_per_minute as usize;
        let mut kept = c.kept.lock().unwrap_or_else(|e| e.into_inner());
        limit > 0 && within_minute(&mut kept, limit)
    };
    if !keep {
        c.metrics.not_kept();
    } else {
        let kept = Refused {
            at,
            status: refusal.status,
            code: refusal.code.to_owned(),
            reason: refusal.reason.clone(),
            claimed: refusal.claimed.clone(),
            run_name,
        };
        if let Err(err) = run_store(c, move |store| store.record_refusal(&kept)).await {
            eprintln!(
                "warning: cannot keep the refusal as evidence: {}",
                Line(&err.to_string())
            );
        }
    }
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::FORBIDDEN);
    let reason = refusal.told.unwrap_or(&refusal.reason);
    let doc = json!({"v": API_VERSION, "error": refusal.code, "reason": reason});
    (status, axum::Json(doc)).into_response()
}

/// `GET /v1/check?digest=sha256:...`: which of the digests an open incident holds tainted.
/// Any valid token of a configured issuer (or a static token) may ask.
async fn check(
    State(c): State<Arc<Collector>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let now = time::now();
    if let Err(refusal) = c
        .verifier
        .verify(authorization(&headers), false, now_seconds(now))
        .await
    {
        return refuse(&c, refusal, None, now).await;
    }
    let mut digests = Vec::new();
    let mut mounts: Vec<(String, String)> = Vec::new();
    for (key, value) in form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "digest" => match crate::model::Digest::parse(&value, "digest") {
                Ok(digest) => digests.push(digest.to_string()),
                Err(err) => {
                    let doc = json!({"v": API_VERSION, "error": "invalid_digest", "reason": err.to_string()});
                    return (StatusCode::BAD_REQUEST, axum::Json(doc)).into_response();
                }
            },
            // A cache mount: `["BUILDER","ID"]`, its id in the default namespace.
            "mount" => match serde_json::from_str::<(String, String)>(&value) {
                Ok((builder, id))
                    if [&builder, &id].into_iter().all(|v| {
                        !v.trim().is_empty() && v.len() <= limits::NAME_BYTES && !v.contains('\0')
                    }) =>
                {
                    mounts.push((builder, id));
                }
                Ok(_) => {
                    let doc = json!({"v": API_VERSION, "error": "invalid_mount", "reason": format!("a mount's builder and id are 1 to {} bytes, without NUL", limits::NAME_BYTES)});
                    return (StatusCode::BAD_REQUEST, axum::Json(doc)).into_response();
                }
                Err(err) => {
                    let doc = json!({"v": API_VERSION, "error": "invalid_mount", "reason": format!("a mount is `[\"BUILDER\",\"ID\"]`: {err}")});
                    return (StatusCode::BAD_REQUEST, axum::Json(doc)).into_response();
                }
            },
            _ => {}
        }
    }
    // Nothing asked is a question too: whether any open incident holds anything.
    if digests.len() + mounts.len() > limits::REFERENCES {
        let doc = json!({"v": API_VERSION, "error": "invalid_request", "reason": format!("name at most {} digests and mounts", limits::REFERENCES)});
        return (StatusCode::BAD_REQUEST, axum::Json(doc)).into_response();
    }
    let asked = digests.clone();
    let asked_mounts = mounts.clone();
    let found = run_store(&c, move |store| {
        let holding = !store.holding_incidents()?.is_empty();
        let hits = store.contained_listing(&asked)?;
        let held = store.incidents_holding_mounts(&asked_mounts)?;
        Ok((hits, held, holding))
    })
    .await;
    match found {
        Ok((hits, held, holding)) => {
            let results: Vec<Value> = digests
                .iter()
                .map(|d| {
                    let incidents: Vec<i64> = hits
                        .iter()
                        .filter(|h| h.digest == *d)
                        .map(|h| h.incident)
                        .collect();
                    json!({"digest": d, "tainted_in": incidents})
                })
                .collect();
            let mounts: Vec<Value> = mounts
                .iter()
                .zip(held)
                .map(|((builder, id), incidents)| {
                    json!({"builder": builder, "id": id, "tainted_in": incidents})
                })
                .collect();
            // Whether any open incident holds anything: while none does, a client need not
            // ask what its inputs list.
            axum::Json(
                json!({"v": API_VERSION, "results": results, "mounts": mounts, "holding": holding}),
            )
            .into_response()
        }
        Err(err) => store_unavailable(&err),
    }
}

/// What a client is told when the store failed: the collector's log has why. The store's
/// message names its location, roles and server processes, which are not the client's.
const STORE_UNAVAILABLE: &str =
    "the collector cannot reach its store now: nothing was recorded; send it again later";

/// What a client is told when the store holds the run with other facts.
const CONFLICT: &str = "the run is already recorded with other facts: history is append-only, \
     so nothing was written (record the build under a new run id or step)";

/// The answer when the store failed, its message logged.
fn store_unavailable(err: &StoreError) -> Response {
    eprintln!("store unavailable: {}", Line(&err.to_string()));
    let doc = json!({"v": API_VERSION, "error": "store_unavailable", "reason": STORE_UNAVAILABLE});
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(doc)).into_response()
}

/// `POST /v1/overrides`: a build that went ahead from inputs open incidents hold tainted
/// (`wrap --server --allow-tainted`), kept with each incident under the token's identity, so
/// the fleet's record holds it. The token names the pipeline and run as for a run; each
/// override must name a digest an open incident holds tainted, or none is kept.
async fn post_overrides(
    State(c): State<Arc<Collector>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let now = time::now();
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let refusal = unreadable(&rejection, "an overrides body");
            c.metrics.override_refused(refusal.code);
            return refuse(&c, refusal, None, now).await;
        }
    };
    let identity = match c
        .verifier
        .verify(authorization(&headers), false, now_seconds(now))
        .await
    {
        Ok(identity) => identity,
        Err(refusal) => {
            c.metrics.override_refused(refusal.code);
            return refuse(&c, refusal, None, now).await;
        }
    };
    let (pipeline, run, asked) = match admit_overrides(&identity, &body) {
        Ok(admitted) => admitted,
        Err((refusal, name)) => {
            c.metrics.override_refused(refusal.code);
            return refuse(&c, refusal, name, now).await;
        }
    };
    let name = format!("{pipeline}/{run}");
    let by = identity.name.clone();
    let kept = run_store(&c, move |store| {
        let digests: Vec<String> = asked.iter().map(|(d, _)| d.clone()).collect();
        let held = store.contained(&digests)?;
        let mut hits = Vec::new();
        for (digest, incident) in &asked {
            match held
                .iter()
                .find(|h| h.digest == *digest && h.incident == *incident)
            {
                Some(hit) => hits.push(hit.clone()),
                None => return Ok(Err((digest.clone(), *incident))),
            }
        }
        for hit in &hits {
            store.record_override(hit, &pipeline, &run, &by)?;
        }
        Ok(Ok(hits.len()))
    })
    .await;
    match kept {
        Ok(Ok(kept)) => {
            c.metrics.override_accepted();
            eprintln!(
                "override by {}: {} built from {kept} tainted input(s)",
                Line(&identity.name),
                Line(&name)
            );
            let doc = json!({"v": API_VERSION, "run": name, "kept": kept});
            (StatusCode::CREATED, axum::Json(doc)).into_response()
        }
        Ok(Err((digest, incident))) => {
            let refusal = Refusal::new(
                409,
                "not_contained",
                format!("no open incident {incident} holds `{digest}` tainted"),
            )
            .claiming(identity.name.clone());
            c.metrics.override_refused(refusal.code);
            refuse(&c, refusal, Some(name), now).await
        }
        Err(err) => {
            c.metrics.override_refused("store_unavailable");
            store_unavailable(&err)
        }
    }
}

/// What an overrides body names: the pipeline, the run, and (digest, incident) pairs.
type Overrides = (String, String, Vec<(String, i64)>);

/// The overrides a body names, checked against the identity as a run's body is.
fn admit_overrides(identity: &Identity, body: &[u8]) -> Result<Overrides, Rejection> {
    let bad = |reason: String| (Refusal::new(400, "invalid_override", reason), None);
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the body is not an override: {e}")))?;
    if let Some(field) = crate::wire::provenance::nul_field(&value) {
        return Err(bad(crate::wire::provenance::nul_message(&field)));
    }
    let text = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let (sent_pipeline, sent_run) = (text("pipeline"), text("run"));
    let contradicts = |field: &str, sent: &str, claim: &str| {
        (
            Refusal::new(
                403,
                "contradicts_claims",
                format!("`{field}` `{sent}` contradicts the token, which says `{claim}`"),
            )
            .claiming(identity.name.clone()),
            None,
        )
    };
    let (pipeline, run) = match &identity.source {
        Source::Oidc { run, .. } => {
            let mut named = [
                (sent_pipeline, Some(&run.pipeline), "pipeline"),
                (sent_run, run.run_id.as_ref(), "run"),
            ]
            .into_iter()
            .map(|(sent, claim, field)| match (sent, claim) {
                (Some(sent), Some(claim)) if sent != *claim => {
                    Err(contradicts(field, &sent, claim))
                }
                (_, Some(claim)) => Ok(claim.clone()),
                (Some(sent), None) => Ok(sent),
                (None, None) => Err(bad(format!("name the `{field}`"))),
            });
            let pipeline = named.next().expect("two")?;
            let run = named.next().expect("two")?;
            (pipeline, run)
        }
        Source::Static { pipelines } => {
            let pipeline = sent_pipeline.ok_or_else(|| bad("name the `pipeline`".to_owned()))?;
            if !pipelines.iter().any(|p| glob_match(p, &pipeline)) {
                return Err((
                    Refusal::new(
                        403,
                        "pipeline_not_allowed",
                        format!("`{}` may not record pipeline `{pipeline}`", identity.name),
                    )
                    .claiming(identity.name.clone()),
                    None,
                ));
            }
            let run = sent_run.ok_or_else(|| bad("name the `run`".to_owned()))?;
            (pipeline, run)
        }
    };
    let mut asked = Vec::new();
    for item in value
        .get("overrides")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let digest = item.get("digest").and_then(Value::as_str).unwrap_or("");
        let digest = crate::model::Digest::parse(digest, "digest")
            .map_err(|e| bad(e.to_string()))?
            .to_string();
        let incident = item
            .get("incident")
            .and_then(Value::as_i64)
            .ok_or_else(|| bad("each override names its `incident`".to_owned()))?;
        asked.push((digest, incident));
    }
    if asked.is_empty() || asked.len() > limits::REFERENCES {
        return Err(bad(format!("name 1 to {} overrides", limits::REFERENCES)));
    }
    Ok((pipeline, run, asked))
}

/// The address the collector listens on, for its first log line.
pub fn describe_listen(addr: SocketAddr, tls: bool) -> String {
    format!(
        "collector listening on {}://{addr}",
        if tls { "https" } else { "http" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A static token's identity, for pipelines under `infra/`.
    fn static_identity() -> Identity {
        Identity {
            name: "token:rack".into(),
            source: Source::Static {
                pipelines: vec!["infra/*".into()],
            },
            issued_at: None,
            expires_at: None,
            late: false,
        }
    }

    /// A refused body's pipeline and run, kept with the refusal as evidence, are bounded: a
    /// flood of megabyte names cannot fill the store at the kept-refusals rate.
    #[test]
    fn a_refused_bodys_run_name_is_bounded() {
        let identity = static_identity();
        let body = json!({"v": 1, "type": "run", "pipeline": "p".repeat(500_000), "run": "1"});
        let (refusal, name) = admit(
            &identity,
            body.to_string().as_bytes(),
            &Config::default(),
            0,
        )
        .unwrap_err();
        assert_eq!(refusal.code, "pipeline_not_allowed");
        assert!(refusal.reason.len() <= auth::REFUSAL_BYTES + 3);
        assert!(name.unwrap().len() <= auth::REFUSAL_BYTES + 3);
    }

    /// A run sent with a token that lives longer than `max_token_life_seconds` is
    /// time-suspect: nothing then bounds how much later than it began it may claim to have
    /// started.
    #[test]
    fn a_run_whose_token_outlives_the_grace_is_time_suspect() {
        let config = Config::default();
        let received_at = time::parse_rfc3339("2026-12-01T10:00:00Z", "received_at").unwrap();
        let iat = received_at / 1_000_000 - 60;
        let grace = config.server.token_life_seconds() as i64;
        let admitted = |identity: &Identity| {
            let body = json!({
                "v": 1, "type": "run", "pipeline": "infra/base", "run": "1", "step": "image",
                "started_at": time::format(received_at - 30_000_000),
                "finished_at": time::format(received_at - 20_000_000),
            });
            let (_, receipt, _, _) =
                admit(identity, body.to_string().as_bytes(), &config, received_at).unwrap();
            receipt.time_suspect
        };
        let suspect = |life: i64| {
            admitted(&Identity {
                issued_at: Some(iat),
                expires_at: Some(iat + life),
                ..static_identity()
            })
        };
        assert_eq!(suspect(grace), None);
        let why = suspect(grace + 1).unwrap();
        assert!(why.contains("longer than max_token_life_seconds"), "{why}");
        // An OIDC token without an issue time bounds nothing either.
        let identity = Identity {
            name: "https://ci.example#infra/base".into(),
            source: Source::Oidc {
                issuer: "https://ci.example".into(),
                run: crate::serve::claims::ClaimedRun {
                    pipeline: "infra/base".into(),
                    project: None,
                    run_id: None,
                    commit: None,
                    git_ref: None,
                    untrusted: None,
                },
            },
            issued_at: None,
            expires_at: Some(iat + 300),
            late: false,
        };
        let why = admitted(&identity).unwrap();
        assert!(why.contains("no issue time"), "{why}");
    }

    /// A run sent with a token that has no issue time may claim to have started at most a
    /// run's length plus the late grace (and the clock skew) before it was received.
    #[test]
    fn a_run_without_an_issue_time_is_held_to_its_receipt() {
        let identity = static_identity();
        let config = Config::default();
        let server = &config.server;
        let longest =
            (server.max_run_seconds + server.late_grace_seconds + server.clock_skew_seconds) as i64
                * 1_000_000;
        let received_at = time::parse_rfc3339("2026-12-01T10:00:00Z", "received_at").unwrap();
        let suspect = |started_at: Micros| {
            let body = json!({
                "v": 1, "type": "run", "pipeline": "infra/base", "run": "1", "step": "image",
                "started_at": time::format(started_at), "finished_at": time::format(started_at),
            });
            let (_, receipt, _, _) =
                admit(&identity, body.to_string().as_bytes(), &config, received_at).unwrap();
            receipt.time_suspect
        };
        assert_eq!(suspect(received_at - longest), None);
        let why = suspect(received_at - longest - 1_000_000).unwrap();
        assert!(why.ends_with("(its token has no issue time)"), "{why}");
    }
}
