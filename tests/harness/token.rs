//! A bearer-token issuer for a registry started with `auth: token`.
//!
//! distribution accepts a token only when it is a JWT signed by a key it trusts: the issuer
//! makes an RSA key and a self-signed certificate with the `openssl` CLI, the registry gets the
//! certificate as its `rootcertbundle`, and every token carries it in its `x5c` header and is
//! signed (RS256) by `openssl dgst`. Each token grants exactly the actions its scopes ask for.
//! The issuer records every request, so tests can check which scopes were asked for and how
//! often.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use super::http;
use super::registry::{Registry, RegistryOpts};
use super::serve::{parse_form, read_request, respond};

/// The `service` the registry names in its challenge and the tokens' audience.
pub const SERVICE: &str = "cachewarden-test-registry";
/// The tokens' issuer.
pub const ISSUER: &str = "cachewarden-test-issuer";
pub const OPENSSL: &str = "/usr/bin/openssl";
/// How long a token lives.
pub const LIFETIME: Duration = Duration::from_secs(300);

/// One request the issuer answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// `GET` (credentials in Basic auth) or `POST` (OAuth2 refresh-token grant).
    pub method: String,
    pub service: Option<String>,
    pub scopes: Vec<String>,
    pub account: Option<String>,
    /// Whether a token was issued.
    pub granted: bool,
}

/// What the issuer accepts.
#[derive(Debug, Clone, Default)]
pub struct IssuerOpts {
    /// Required Basic credentials on `GET`; anonymous requests are refused when set.
    pub basic: Option<(String, String)>,
    /// The refresh token a `POST` must present.
    pub refresh_token: Option<String>,
}

struct Keys {
    key: PathBuf,
    /// The certificate, DER, base64: the `x5c` entry.
    x5c: String,
}

/// A running token issuer; dropping it stops it.
pub struct TokenIssuer {
    dir: tempfile::TempDir,
    port: u16,
    keys: Arc<Keys>,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl TokenIssuer {
    pub fn start(opts: IssuerOpts) -> Self {
        assert!(
            Path::new(OPENSSL).exists(),
            "the token issuer needs {OPENSSL}: install openssl"
        );
        let dir = tempfile::Builder::new()
            .prefix("cwtok")
            .tempdir()
            .expect("create the issuer's temporary directory");
        let keys = Arc::new(make_keys(dir.path()));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the issuer's port");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (keys, requests, stop) =
                (Arc::clone(&keys), Arc::clone(&requests), Arc::clone(&stop));
            let opts = Arc::new(opts);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let (keys, requests, opts) =
                        (Arc::clone(&keys), Arc::clone(&requests), Arc::clone(&opts));
                    std::thread::spawn(move || serve(stream, &keys, &opts, &requests));
                }
            })
        };
        Self {
            dir,
            port,
            keys,
            requests,
            stop,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT/token`.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The certificate the registry must trust.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// A token for `scopes` (`repository:NAME:pull,push`), issued without a request: for
    /// setting up content.
    pub fn mint(&self, scopes: &[&str]) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        sign_token(&self.keys, "harness", &scopes)
    }

    /// Starts a registry that accepts only this issuer's tokens.
    pub fn registry(&self, opts: RegistryOpts) -> Registry {
        assert!(opts.auth.is_none(), "a token registry has no htpasswd");
        let mut registry = Registry::start(opts);
        registry.stop();
        let mut config =
            std::fs::read_to_string(registry.config_path()).expect("read the registry config");
        config.push_str(&format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {cert}\n",
            realm = self.realm(),
            cert = self.cert_path().display(),
        ));
        std::fs::write(registry.config_path(), config).expect("write the registry config");
        registry.restart();
        registry
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn make_keys(dir: &Path) -> Keys {
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    let made = Command::new(OPENSSL)
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=cachewarden test token issuer", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl req");
    assert!(
        made.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let der = Command::new(OPENSSL)
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert)
        .output()
        .expect("run openssl x509");
    assert!(
        der.status.success(),
        "openssl x509: {}",
        String::from_utf8_lossy(&der.stderr)
    );
    Keys {
        key,
        x5c: http::base64(&der.stdout),
    }
}

fn base64url(bytes: &[u8]) -> String {
    http::base64(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

static SERIAL: AtomicU64 = AtomicU64::new(0);

/// A JWT granting each `repository:NAME:ACTIONS` scope.
fn sign_token(keys: &Keys, subject: &str, scopes: &[String]) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|scope| {
            let (kind, rest) = scope.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(serde_json::json!({
                "type": kind,
                "name": name,
                "actions": actions.split(',').filter(|a| !a.is_empty()).collect::<Vec<_>>(),
            }))
        })
        .collect();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [keys.x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": subject,
        "aud": SERVICE,
        "exp": now + LIFETIME.as_secs(),
        "nbf": now - 10,
        "iat": now,
        "jti": format!("cw-{}", SERIAL.fetch_add(1, Ordering::SeqCst)),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    );
    let mut child = Command::new(OPENSSL)
        .args(["dgst", "-sha256", "-sign"])
        .arg(&keys.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl dgst");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())
        .expect("feed openssl dgst");
    let signed = child.wait_with_output().expect("wait for openssl dgst");
    assert!(
        signed.status.success(),
        "openssl dgst: {}",
        String::from_utf8_lossy(&signed.stderr)
    );
    format!("{signing_input}.{}", base64url(&signed.stdout))
}

/// Answers one request on a connection, then closes it.
fn serve(
    mut stream: TcpStream,
    keys: &Keys,
    opts: &IssuerOpts,
    requests: &Mutex<Vec<TokenRequest>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Some(request) = read_request(&mut stream) else {
        return;
    };
    let params = if request.method == "POST" {
        parse_form(&String::from_utf8_lossy(&request.body))
    } else {
        parse_form(request.query())
    };
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    let granted = request.path() == "/token"
        && match request.method.as_str() {
            "GET" => opts.basic.as_ref().is_none_or(|(user, password)| {
                let expected = format!(
                    "Basic {}",
                    http::base64(format!("{user}:{password}").as_bytes())
                );
                request.header("authorization") == Some(expected.as_str())
            }),
            "POST" => {
                get("grant_type").as_deref() == Some("refresh_token")
                    && opts.refresh_token.is_some()
                    && get("refresh_token") == opts.refresh_token
            }
            _ => false,
        };
    requests.lock().unwrap().push(TokenRequest {
        method: request.method.clone(),
        service: get("service"),
        scopes: scopes.clone(),
        account: get("account"),
        granted,
    });
    let json = [("Content-Type".to_owned(), "application/json".to_owned())];
    if granted {
        let token = sign_token(keys, &get("account").unwrap_or_default(), &scopes);
        let body = serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": LIFETIME.as_secs(),
        });
        respond(&mut stream, 200, &json, body.to_string().as_bytes());
    } else {
        respond(&mut stream, 401, &json, br#"{"details":"access denied"}"#);
    }
}
