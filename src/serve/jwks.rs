//! An issuer's signing keys: where they come from, fetched and cached, fetched again (at most
//! once per interval) when a token names a key id the cache does not have, for key rotation.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use tokio::sync::Mutex;

/// Where a key set is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    Url(String),
    File(PathBuf),
}

impl JwksSource {
    /// An `https://` URL, an `http://` URL whose host is a loopback address (or `localhost`),
    /// or a local path. The error says why a value is none of them.
    pub fn parse(value: &str) -> Result<Self, String> {
        if let Some(rest) = value.strip_prefix("http://") {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let host = if let Some(v6) = host.strip_prefix('[') {
                v6.split(']').next().unwrap_or_default()
            } else {
                host.rsplit_once(':').map_or(host, |(h, _)| h)
            };
            let loopback =
                host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(format!(
                    "`jwks` `{value}`: plain http is allowed only on loopback; use https"
                ));
            }
            return Ok(Self::Url(value.to_owned()));
        }
        if value.starts_with("https://") {
            return Ok(Self::Url(value.to_owned()));
        }
        if value.contains("://") {
            return Err(format!("`jwks` `{value}`: not an https URL or a file"));
        }
        if value.trim().is_empty() {
            return Err("`jwks` is empty".to_owned());
        }
        Ok(Self::File(PathBuf::from(value)))
    }
}

/// A cached key set.
///
/// The cache is behind a lock held only to read or replace it, never across a fetch: a token
/// naming a cached key is verified while a fetch for a rotated one is under way. Fetches take
/// turns behind a lock of their own, so a burst of tokens naming a new key fetches once.
#[derive(Debug)]
pub struct Jwks {
    source: JwksSource,
    refresh: Duration,
    state: std::sync::Mutex<State>,
    fetching: Mutex<()>,
    client: reqwest::Client,
}

#[derive(Debug, Default)]
struct State {
    keys: Option<JwkSet>,
    fetched_at: Option<Instant>,
    /// Why the last fetch failed, when it did: repeated until the next fetch, so an issuer
    /// that cannot be reached reads as unavailable (retry) and not as an unknown key (refuse).
    failed: Option<String>,
}

/// What the cache answers for a key id without fetching: `None` when the key is not there
/// and the set may be fetched again.
type Cached = Option<Result<Option<jsonwebtoken::jwk::Jwk>, String>>;

impl State {
    fn lookup(&self, kid: Option<&str>, refresh: Duration) -> Cached {
        if let Some(found) = self.keys.as_ref().and_then(|set| find(set, kid)) {
            return Some(Ok(Some(found)));
        }
        if self.fetched_at.is_none_or(|at| at.elapsed() >= refresh) {
            return None;
        }
        Some(match &self.failed {
            Some(why) => Err(why.clone()),
            None => Ok(None),
        })
    }
}

/// How many bytes of a key set are read.
const JWKS_BYTES: usize = 1 << 20;

impl Jwks {
    pub fn new(source: JwksSource, refresh: Duration, client: reqwest::Client) -> Self {
        Self {
            source,
            refresh,
            state: std::sync::Mutex::new(State::default()),
            fetching: Mutex::new(()),
            client,
        }
    }

    fn cached(&self, kid: Option<&str>) -> Cached {
        self.state
            .lock()
            .expect("key set lock")
            .lookup(kid, self.refresh)
    }

    /// The key with id `kid` (or the only key, when the token names none). On a miss the set
    /// is fetched again unless it was fetched within the refresh interval.
    /// `Ok(None)`: no such key; `Err`: the key set could not be read.
    pub async fn key(&self, kid: Option<&str>) -> Result<Option<jsonwebtoken::jwk::Jwk>, String> {
        if let Some(answer) = self.cached(kid) {
            return answer;
        }
        let _turn = self.fetching.lock().await;
        // A fetch that finished while this one waited may have brought the key, or says the
        // set is fresh.
        if let Some(answer) = self.cached(kid) {
            return answer;
        }
        let fetched = self.fetch().await;
        let mut state = self.state.lock().expect("key set lock");
        state.fetched_at = Some(Instant::now());
        match fetched {
            Ok(set) => {
                let found = find(&set, kid);
                state.keys = Some(set);
                state.failed = None;
                Ok(found)
            }
            Err(why) => {
                state.failed = Some(why.clone());
                Err(why)
            }
        }
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let over = || "the key set is over 1 MiB".to_owned();
        let bytes = match &self.source {
            JwksSource::File(path) => {
                use tokio::io::AsyncReadExt;
                let cannot =
                    |e: std::io::Error| format!("cannot read key set `{}`: {e}", path.display());
                let file = tokio::fs::File::open(path).await.map_err(cannot)?;
                let mut bytes = Vec::new();
                file.take(JWKS_BYTES as u64 + 1)
                    .read_to_end(&mut bytes)
                    .await
                    .map_err(cannot)?;
                bytes
            }
            JwksSource::Url(url) => {
                let cannot = |e: reqwest::Error| format!("cannot fetch key set `{url}`: {e}");
                let mut response = self.client.get(url).send().await.map_err(cannot)?;
                if !response.status().is_success() {
                    return Err(format!(
                        "cannot fetch key set `{url}`: HTTP {}",
                        response.status()
                    ));
                }
                if response
                    .content_length()
                    .is_some_and(|n| n > JWKS_BYTES as u64)
                {
                    return Err(over());
                }
                // Read in chunks, and stop once past the limit: a body that does not say its
                // length, or says it wrongly, is never held whole.
                let mut bytes = Vec::new();
                while let Some(chunk) = response.chunk().await.map_err(cannot)? {
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() > JWKS_BYTES {
                        return Err(over());
                    }
                }
                bytes
            }
        };
        if bytes.len() > JWKS_BYTES {
            return Err(over());
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("the key set is not a JWK set: {e}"))
    }
}

fn find(set: &JwkSet, kid: Option<&str>) -> Option<jsonwebtoken::jwk::Jwk> {
    match kid {
        Some(kid) => set.find(kid).cloned(),
        None if set.keys.len() == 1 => set.keys.first().cloned(),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key set that cannot be read is an outage on every try within the refresh interval,
    /// never an unknown key: a hook told "unknown key" would drop the run instead of spooling.
    #[tokio::test]
    async fn an_unreadable_key_set_stays_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let jwks = Jwks::new(
            JwksSource::File(dir.path().join("missing.json")),
            Duration::from_secs(3600),
            reqwest::Client::new(),
        );
        assert!(jwks.key(Some("k")).await.is_err());
        assert!(
            jwks.key(Some("k")).await.is_err(),
            "the second try within the interval"
        );
        std::fs::write(dir.path().join("missing.json"), r#"{"keys": []}"#).unwrap();
        let fresh = Jwks::new(
            JwksSource::File(dir.path().join("missing.json")),
            Duration::from_secs(3600),
            reqwest::Client::new(),
        );
        assert_eq!(fresh.key(Some("k")).await, Ok(None));
    }

    /// A server on loopback that answers every request with `head` and then `body` forever
    /// (or, with an empty `body`, never answers at all); its URL.
    async fn endless_server(head: &'static str, body: &'static [u8]) -> String {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut request).await;
                    if body.is_empty() {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    let _ = socket.write_all(head.as_bytes()).await;
                    while socket.write_all(body).await.is_ok() {}
                });
            }
        });
        url
    }

    /// A key set served without a length is refused as over 1 MiB once that much has been
    /// read, not after the whole body: an endless body ends the fetch. One that declares more
    /// is refused before its body is read.
    #[tokio::test]
    async fn an_endless_key_set_is_cut_at_the_limit() {
        for head in [
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n",
        ] {
            let url = endless_server(head, &[b' '; 65536]).await;
            let jwks = Jwks::new(
                JwksSource::Url(url),
                Duration::from_secs(3600),
                reqwest::Client::new(),
            );
            let answer = tokio::time::timeout(Duration::from_secs(20), jwks.key(Some("k")))
                .await
                .expect("the fetch stops at the limit");
            assert_eq!(
                answer,
                Err("the key set is over 1 MiB".to_owned()),
                "{head}"
            );
        }
    }

    /// A fetch for a key the cache lacks does not hold up a token naming a cached key.
    #[tokio::test]
    async fn a_cached_key_is_served_while_a_fetch_hangs() {
        let url = endless_server("", b"").await;
        let jwks = std::sync::Arc::new(Jwks::new(
            JwksSource::Url(url),
            Duration::from_secs(0),
            reqwest::Client::new(),
        ));
        let set: JwkSet = serde_json::from_value(serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "cached", "alg": "ES256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
        }]}))
        .unwrap();
        jwks.state.lock().unwrap().keys = Some(set);
        let fetching = {
            let jwks = jwks.clone();
            tokio::spawn(async move { jwks.key(Some("rotated")).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let cached = tokio::time::timeout(Duration::from_secs(2), jwks.key(Some("cached")))
            .await
            .expect("the cached key is not held up by the fetch");
        assert!(cached.unwrap().is_some());
        fetching.abort();
    }

    /// Keys are fetched over https, or plain http only from loopback: a key set sent in the
    /// clear across a network could be swapped by anyone on the path.
    #[test]
    fn plain_http_key_sets_only_on_loopback() {
        for ok in [
            "https://token.actions.githubusercontent.com/.well-known/jwks",
            "http://127.0.0.1:8080/jwks",
            "http://localhost/jwks",
            "http://[::1]:9/jwks",
            "/etc/cachewarden/jwks.json",
        ] {
            assert!(JwksSource::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://issuer.example/jwks",
            "http://127.0.0.1.evil.example/jwks",
            "http://user@10.0.0.1/jwks",
            "ftp://x/jwks",
            "",
        ] {
            assert!(JwksSource::parse(bad).is_err(), "{bad}");
        }
    }
}
