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
#[derive(Debug)]
pub struct Jwks {
    source: JwksSource,
    refresh: Duration,
    state: Mutex<State>,
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

/// How many bytes of a key set are read.
const JWKS_BYTES: usize = 1 << 20;

impl Jwks {
    pub fn new(source: JwksSource, refresh: Duration, client: reqwest::Client) -> Self {
        Self {
            source,
            refresh,
            state: Mutex::new(State::default()),
            client,
        }
    }

    /// The key with id `kid` (or the only key, when the token names none). On a miss the set
    /// is fetched again unless it was fetched within the refresh interval.
    /// `Ok(None)`: no such key; `Err`: the key set could not be read.
    pub async fn key(&self, kid: Option<&str>) -> Result<Option<jsonwebtoken::jwk::Jwk>, String> {
        let mut state = self.state.lock().await;
        if let Some(found) = state.keys.as_ref().and_then(|set| find(set, kid)) {
            return Ok(Some(found));
        }
        let stale = state
            .fetched_at
            .is_none_or(|at| at.elapsed() >= self.refresh);
        if !stale {
            return match &state.failed {
                Some(why) => Err(why.clone()),
                None => Ok(None),
            };
        }
        state.fetched_at = Some(Instant::now());
        match self.fetch().await {
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
        let bytes = match &self.source {
            JwksSource::File(path) => tokio::fs::read(path)
                .await
                .map_err(|e| format!("cannot read key set `{}`: {e}", path.display()))?,
            JwksSource::Url(url) => {
                let response = self
                    .client
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| format!("cannot fetch key set `{url}`: {e}"))?;
                if !response.status().is_success() {
                    return Err(format!(
                        "cannot fetch key set `{url}`: HTTP {}",
                        response.status()
                    ));
                }
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|e| format!("cannot fetch key set `{url}`: {e}"))?;
                bytes.to_vec()
            }
        };
        if bytes.len() > JWKS_BYTES {
            return Err("the key set is over 1 MiB".to_owned());
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
