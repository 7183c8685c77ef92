//! A CI OIDC token issuer on loopback, and the collector started against it.
//!
//! The issuer makes its signing keys with the `openssl` CLI (RSA 2048 for RS256, P-256 for
//! ES256), serves their JWK set over HTTP (counting fetches, so tests can see a rotation
//! fetch it once), and mints tokens with GitHub's and GitLab's claim shapes.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::http;
use super::serve::{read_request, respond};
use super::token::OPENSSL;

/// The audience tests configure.
pub const AUDIENCE: &str = "cachewarden-collector";

/// One signing key: its id, algorithm, PEM private key and public JWK.
#[derive(Clone)]
pub struct Key {
    pub kid: String,
    pub alg: Algorithm,
    pem: Vec<u8>,
    pub jwk: Value,
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new(OPENSSL).args(args).output().expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

impl Key {
    /// An RSA 2048 key for RS256.
    pub fn rsa(dir: &Path, kid: &str) -> Self {
        let path = dir.join(format!("{kid}.pem"));
        let p = path.to_str().unwrap();
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            p,
        ]);
        let modulus = String::from_utf8(openssl(&["rsa", "-in", p, "-noout", "-modulus"])).unwrap();
        let n = unhex(modulus.trim().trim_start_matches("Modulus="));
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::RS256,
            pem: std::fs::read(&path).unwrap(),
            jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                        "n": b64(&n), "e": "AQAB"}),
        }
    }

    /// A P-256 key for ES256.
    pub fn p256(dir: &Path, kid: &str) -> Self {
        let path = dir.join(format!("{kid}.pem"));
        let p = path.to_str().unwrap();
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            p,
        ]);
        let der = openssl(&["pkey", "-in", p, "-pubout", "-outform", "DER"]);
        // The SubjectPublicKeyInfo ends with the uncompressed point 04 || x || y.
        let point = &der[der.len() - 65..];
        assert_eq!(point[0], 4);
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::ES256,
            pem: std::fs::read(&path).unwrap(),
            jwk: json!({"kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
                        "x": b64(&point[1..33]), "y": b64(&point[33..])}),
        }
    }

    /// A token signed with this key.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        let key = match self.alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&self.pem).unwrap(),
            _ => EncodingKey::from_ec_pem(&self.pem).unwrap(),
        };
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }
}

/// A token with `alg: none` and no signature.
pub fn unsigned(claims: &Value) -> String {
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    format!("{header}.{}.", b64(claims.to_string().as_bytes()))
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// GitHub Actions claims for `repository/workflow`, run `run_id` attempt 1, a push to a
/// protected `main`.
pub fn github_claims(issuer: &str, repository: &str, workflow: &str, run_id: &str) -> Value {
    let now = now();
    json!({
        "iss": issuer, "aud": AUDIENCE, "sub": format!("repo:{repository}:ref:refs/heads/main"),
        "iat": now, "nbf": now - 5, "exp": now + 300,
        "repository": repository, "repository_owner": repository.split('/').next().unwrap(),
        "workflow": workflow, "run_id": run_id, "run_attempt": "1", "run_number": "7",
        "sha": "0123456789abcdef0123456789abcdef01234567", "ref": "refs/heads/main",
        "ref_type": "branch", "ref_protected": "true", "event_name": "push",
        "actor": "octocat", "job_workflow_ref": format!("{repository}/.github/workflows/{workflow}.yml@refs/heads/main"),
    })
}

/// GitLab CI claims for `project_path`, pipeline `pipeline_id`, job `job_id`, a push to a
/// protected `main`.
pub fn gitlab_claims(issuer: &str, project_path: &str, pipeline_id: &str, job_id: &str) -> Value {
    let now = now();
    json!({
        "iss": issuer, "aud": AUDIENCE, "sub": format!("project_path:{project_path}:ref_type:branch:ref:main"),
        "iat": now, "nbf": now - 5, "exp": now + 300,
        "namespace_path": project_path.split('/').next().unwrap(), "project_path": project_path,
        "pipeline_id": pipeline_id, "pipeline_source": "push", "job_id": job_id,
        "ref": "main", "ref_type": "branch", "ref_protected": "true",
        "sha": "0123456789abcdef0123456789abcdef01234567", "user_login": "dev",
    })
}

/// The issuer's JWK set, served over HTTP on loopback.
pub struct Issuer {
    /// `http://127.0.0.1:PORT`, also the `iss` of its tokens.
    pub url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// What `/token` hands out (GitHub's `ACTIONS_ID_TOKEN_REQUEST_URL`), and the audiences
    /// it was asked for.
    id_token: Arc<Mutex<Option<String>>>,
    audiences: Arc<Mutex<Vec<String>>>,
}

/// The bearer a job presents to the token endpoint (`ACTIONS_ID_TOKEN_REQUEST_TOKEN`).
pub const REQUEST_TOKEN: &str = "job-request-token";

impl Issuer {
    pub fn start(keys: &[&Key]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let served = Arc::new(Mutex::new(keys.iter().map(|k| k.jwk.clone()).collect()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, f, st) = (Arc::clone(&served), Arc::clone(&fetches), Arc::clone(&stop));
        let id_token: Arc<Mutex<Option<String>>> = Arc::default();
        let audiences: Arc<Mutex<Vec<String>>> = Arc::default();
        let (it, au) = (Arc::clone(&id_token), Arc::clone(&audiences));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let Some(request) = read_request(&mut stream) else {
                    continue;
                };
                if request.path() == "/jwks" {
                    f.fetch_add(1, Ordering::SeqCst);
                    let body = json!({"keys": *s.lock().unwrap()}).to_string();
                    let headers = [("Content-Type".to_owned(), "application/json".to_owned())];
                    respond(&mut stream, 200, &headers, body.as_bytes());
                } else if request.path() == "/token"
                    && request.header("Authorization")
                        == Some(format!("Bearer {REQUEST_TOKEN}").as_str())
                    && let Some(token) = it.lock().unwrap().clone()
                {
                    for (k, v) in super::serve::parse_form(request.query()) {
                        if k == "audience" {
                            au.lock().unwrap().push(v);
                        }
                    }
                    let body = json!({"value": token}).to_string();
                    respond(&mut stream, 200, &[], body.as_bytes());
                } else {
                    respond(&mut stream, 404, &[], b"");
                }
            }
        });
        Self {
            url,
            keys: served,
            fetches,
            stop,
            id_token,
            audiences,
        }
    }

    /// Hands out `token` at `/token`, as GitHub's job token endpoint does.
    pub fn hand_out(&self, token: &str) {
        *self.id_token.lock().unwrap() = Some(token.to_owned());
    }

    /// The audiences the token endpoint was asked for.
    pub fn audiences(&self) -> Vec<String> {
        self.audiences.lock().unwrap().clone()
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.url)
    }

    /// Publishes a new key beside the old ones (a rotation).
    pub fn publish(&self, key: &Key) {
        self.keys.lock().unwrap().push(key.jwk.clone());
    }

    /// How many times the key set was fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

/// A running `cachewarden serve`, killed on drop.
pub struct Collector {
    pub child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    log: Arc<Mutex<String>>,
}

impl Collector {
    /// Starts `cmd` (a `cachewarden` command with its env) as `serve --listen 127.0.0.1:PORT`
    /// (0 for a free port) and waits until it listens.
    pub fn start(cmd: Command, port: u16) -> Self {
        Self::start_with(cmd, port, &[])
    }

    /// [`Collector::start`] with more `serve` arguments.
    pub fn start_with(mut cmd: Command, port: u16, extra: &[&std::ffi::OsStr]) -> Self {
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // Logged before the address is handed over, so a caller that has it sees the line.
                {
                    let mut log = sink.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
                let addr = line
                    .strip_prefix("collector listening on http://")
                    .or_else(|| line.strip_prefix("collector listening on https://"));
                if let Some(addr) = addr
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("the collector did not start: {}", log.lock().unwrap())
            });
        Self { child, addr, log }
    }

    /// What the collector logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// What the collector logged, once it holds `needle` (or after ten seconds without it):
    /// a line written before a response may still be on its way through the pipe when the
    /// response arrives.
    pub fn log_with(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.contains(needle) || std::time::Instant::now() >= deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Posts a run line with a bearer token.
    pub fn post(&self, token: &str, line: &Value) -> http::Response {
        let request = http::Request::new("POST", "/v1/runs")
            .header("Authorization", &format!("Bearer {token}"))
            .header("Content-Type", "application/json");
        let request = http::Request {
            body: line.to_string().into_bytes(),
            ..request
        };
        http::tcp(&self.addr, &request).expect("post to the collector")
    }

    pub fn get(&self, path: &str) -> http::Response {
        http::tcp(&self.addr, &http::Request::get(path)).expect("get from the collector")
    }

    /// Gets `path` with a bearer token.
    pub fn get_with(&self, path: &str, token: &str) -> http::Response {
        let request = http::Request::get(path).header("Authorization", &format!("Bearer {token}"));
        http::tcp(&self.addr, &request).expect("get from the collector")
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }

    /// Sends SIGKILL and waits.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A run line for `pipeline`/`run`, started and finished a minute ago.
pub fn run_line(pipeline: &str, run: &str) -> Value {
    let finished = chrono::Utc::now() - chrono::Duration::seconds(60);
    let started = finished - chrono::Duration::seconds(30);
    json!({
        "v": 1, "type": "run", "pipeline": pipeline, "run": run, "step": "image",
        "builder": "ci-1",
        "started_at": started.to_rfc3339(), "finished_at": finished.to_rfc3339(),
        "imported": [format!("localhost:5000/cache/app@sha256:{}", "a".repeat(64))],
        "exported": [format!("localhost:5000/cache/app@sha256:{}", "b".repeat(64))],
    })
}

/// The config for a collector trusting `issuer` as `kind` for every pipeline, with `extra`
/// appended.
pub fn config(issuer: &Issuer, kind: &str, extra: &str) -> String {
    config_for(issuer, kind, "**", extra)
}

/// The config for a collector trusting `issuer` as `kind` for the pipelines `glob` matches.
pub fn config_for(issuer: &Issuer, kind: &str, glob: &str, extra: &str) -> String {
    format!(
        "[[issuer]]\nissuer = \"{}\"\njwks = \"{}\"\naudience = \"{AUDIENCE}\"\nkind = \"{kind}\"\njwks_refresh_seconds = 2\npipelines = [\"{glob}\"]\n\n{extra}",
        issuer.url,
        issuer.jwks_url()
    )
}
