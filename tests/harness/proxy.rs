//! A fault-injecting HTTP proxy in front of a real registry.
//!
//! Each request is read whole; a queued [`Fault`] whose method matches answers it instead of
//! the registry (a status with headers, or a hang-up without an answer), else the request goes
//! to the registry on a fresh connection. Every connection closes after one exchange, so
//! clients see each fault on its own request.
//!
//! With [`FaultProxy::pass_connections`], a connection that meets no fault is handed to the
//! registry whole, keep-alive and all, so tests can count the connections a client opens.
//!
//! With [`FaultProxy::paginate_tags`], tag listings that ask for `n` are cut into pages with a
//! `Link` header the way the distribution spec (and distribution 3) does it: distribution 2.8
//! ignores `n` for tags, so this is how clients meet pagination against it.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::serve::{Incoming, parse_form, read_request, respond};

/// An answer the proxy gives in the registry's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Only requests with this method meet the fault; any request when `None`.
    pub method: Option<String>,
    /// The status to answer; `None` closes the connection without answering.
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    /// Waits this long, then lets the registry answer (`status` and `headers` unused).
    pub delay: Option<Duration>,
}

impl Fault {
    pub fn status(status: u16) -> Self {
        Self {
            method: None,
            status: Some(status),
            headers: Vec::new(),
            delay: None,
        }
    }

    /// Closes the connection after reading the request, answering nothing.
    pub fn hang_up() -> Self {
        Self {
            method: None,
            status: None,
            headers: Vec::new(),
            delay: None,
        }
    }

    /// The registry's own answer, `delay` late: a slow registry.
    pub fn delay(delay: Duration) -> Self {
        Self {
            method: None,
            status: None,
            headers: Vec::new(),
            delay: Some(delay),
        }
    }

    pub fn on(mut self, method: &str) -> Self {
        self.method = Some(method.to_owned());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// One request the proxy saw and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub target: String,
    /// The status the client got; `None` for a hang-up or an unreachable registry.
    pub status: Option<u16>,
    /// Whether a fault answered instead of the registry.
    pub injected: bool,
    pub at: Instant,
}

struct Shared {
    upstream: String,
    faults: Mutex<VecDeque<Fault>>,
    seen: Mutex<Vec<Seen>>,
    paginate_tags: AtomicBool,
    pass_connections: AtomicBool,
    connections: AtomicUsize,
}

/// A running proxy; dropping it stops it.
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy's port");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream: upstream.to_owned(),
            faults: Mutex::new(VecDeque::new()),
            seen: Mutex::new(Vec::new()),
            paginate_tags: AtomicBool::new(false),
            pass_connections: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let shared = Arc::clone(&shared);
                    std::thread::spawn(move || serve(stream, &shared));
                }
            })
        };
        Self {
            port,
            shared,
            stop,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// Queues a fault; faults are used in the order queued.
    pub fn inject(&self, fault: Fault) {
        self.shared.faults.lock().unwrap().push_back(fault);
    }

    /// Faults not used yet.
    pub fn pending_faults(&self) -> usize {
        self.shared.faults.lock().unwrap().len()
    }

    /// Every request so far, in the order they were answered.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Hands connections that meet no fault to the registry as they are, instead of one
    /// request each; requests after the first on such a connection are not seen.
    pub fn pass_connections(&self, on: bool) {
        self.shared.pass_connections.store(on, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Cuts tag listings that ask for `n` into pages linked by `Link: <…>; rel="next"`.
    pub fn paginate_tags(&self, on: bool) {
        self.shared.paginate_tags.store(on, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn serve(mut client: TcpStream, shared: &Shared) {
    shared.connections.fetch_add(1, Ordering::SeqCst);
    let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
    let Some(request) = read_request(&mut client) else {
        return;
    };
    let fault = {
        let mut faults = shared.faults.lock().unwrap();
        let position = faults
            .iter()
            .position(|f| f.method.as_deref().is_none_or(|m| m == request.method));
        position.and_then(|i| faults.remove(i))
    };
    // Recorded before the client hears the answer, so a test that got it sees the record.
    let (status, answer) = match fault {
        Some(Fault {
            delay: Some(delay), ..
        }) => {
            std::thread::sleep(delay);
            let (status, answer) = forward(&request, shared).unwrap_or_default();
            record(shared, &request, status, false);
            (status, answer)
        }
        Some(fault) => {
            let mut answer = Vec::new();
            if let Some(status) = fault.status {
                let body = format!(
                    r#"{{"errors":[{{"code":"INJECTED","message":"injected {status}"}}]}}"#
                );
                let mut headers = fault.headers.clone();
                headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
                respond(&mut answer, status, &headers, body.as_bytes());
            }
            record(shared, &request, fault.status, true);
            (fault.status, answer)
        }
        None if shared.pass_connections.load(Ordering::SeqCst) => {
            record(shared, &request, None, false);
            pass(client, &request, &shared.upstream);
            return;
        }
        None => {
            let (status, answer) = forward(&request, shared).unwrap_or_default();
            record(shared, &request, status, false);
            (status, answer)
        }
    };
    if status.is_some() {
        let _ = client.write_all(&answer);
    }
    let _ = client.shutdown(Shutdown::Both);
}

fn record(shared: &Shared, request: &Incoming, status: Option<u16>, injected: bool) {
    shared.seen.lock().unwrap().push(Seen {
        method: request.method.clone(),
        target: request.target.clone(),
        status,
        injected,
        at: Instant::now(),
    });
}

/// Sends the request as it came, then copies both ways until either side closes.
fn pass(client: TcpStream, request: &Incoming, upstream: &str) {
    let Ok(mut registry) = TcpStream::connect(upstream) else {
        return;
    };
    let mut head = format!(
        "{} {} {}\r\n",
        request.method, request.target, request.version
    );
    for (name, value) in &request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    if registry.write_all(head.as_bytes()).is_err() || registry.write_all(&request.body).is_err() {
        return;
    }
    let (Ok(mut client_read), Ok(mut registry_write)) = (client.try_clone(), registry.try_clone())
    else {
        return;
    };
    let there = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut registry_write);
        let _ = registry_write.shutdown(Shutdown::Write);
    });
    let (mut registry_read, mut client_write) = (registry, client);
    let _ = std::io::copy(&mut registry_read, &mut client_write);
    let _ = client_write.shutdown(Shutdown::Write);
    let _ = there.join();
}

/// Sends the request to the registry; its status and the answer for the client.
fn forward(request: &Incoming, shared: &Shared) -> Option<(Option<u16>, Vec<u8>)> {
    let page = if shared.paginate_tags.load(Ordering::SeqCst) && request.method == "GET" {
        tags_page_request(request)
    } else {
        None
    };
    let target = match &page {
        Some((path, _, _)) => path.clone(),
        None => request.target.clone(),
    };
    // HTTP/1.0 and no keep-alive: the registry ends its answer by closing, never chunked.
    let mut head = format!("{} {target} HTTP/1.0\r\n", request.method);
    for (name, value) in &request.headers {
        if !name.eq_ignore_ascii_case("connection") && !name.eq_ignore_ascii_case("keep-alive") {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut upstream = TcpStream::connect(&shared.upstream).ok()?;
    let _ = upstream.set_read_timeout(Some(Duration::from_secs(60)));
    upstream.write_all(head.as_bytes()).ok()?;
    upstream.write_all(&request.body).ok()?;
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer).ok()?;
    let status = answer
        .split(|b| *b == b'\r')
        .next()
        .and_then(|line| std::str::from_utf8(line).ok())
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok());
    match page {
        Some((path, n, last)) if status == Some(200) => {
            Some((status, paginate(&answer, &path, n, last.as_deref())))
        }
        _ => Some((status, answer)),
    }
}

/// For `GET /v2/NAME/tags/list?n=N[&last=T]`: the unpaginated path, `n` and `last`.
fn tags_page_request(request: &Incoming) -> Option<(String, usize, Option<String>)> {
    let path = request.path();
    if !(path.starts_with("/v2/") && path.ends_with("/tags/list")) {
        return None;
    }
    let params = parse_form(request.query());
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let n = get("n")?.parse().ok().filter(|n| *n > 0)?;
    Some((path.to_owned(), n, get("last")))
}

/// One page of the registry's full tag listing, in lexical order, as an answer.
fn paginate(answer: &[u8], path: &str, n: usize, last: Option<&str>) -> Vec<u8> {
    let body = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(&[][..], |end| &answer[end + 4..]);
    let listing: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let mut tags: Vec<String> = listing["tags"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    let rest: Vec<String> = tags
        .into_iter()
        .filter(|t| last.is_none_or(|last| t.as_str() > last))
        .collect();
    let page: Vec<String> = rest.iter().take(n).cloned().collect();
    let mut headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
    if rest.len() > n
        && let Some(end) = page.last()
    {
        headers.push((
            "Link".to_owned(),
            format!(r#"<{path}?last={end}&n={n}>; rel="next""#),
        ));
    }
    let page_body = serde_json::json!({"name": listing["name"], "tags": page});
    let mut paged = Vec::new();
    respond(&mut paged, 200, &headers, page_body.to_string().as_bytes());
    paged
}
