//! Who is sending: a CI OIDC token verified against a configured issuer, or a static
//! per-runner token. Identity comes from here only, never from the request body.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::claims::{ClaimedRun, claimed_run};
use super::jwks::{Jwks, JwksSource};
use crate::config::{Config, IssuerConfig, TokenConfig};

/// A verified sender.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `issuer#pipeline` or `token:name`: what rate limits and evidence name.
    pub name: String,
    pub source: Source,
    /// The token's `iat`, seconds since the epoch.
    pub issued_at: Option<i64>,
    /// The token's `exp`, seconds since the epoch.
    pub expires_at: Option<i64>,
    /// The token expired, within the configured grace: a run sent from a spool.
    pub late: bool,
}

#[derive(Debug, Clone)]
pub enum Source {
    /// An OIDC token and the run its claims name.
    Oidc { issuer: String, run: ClaimedRun },
    /// A static token and the pipeline globs it may record.
    Static { pipelines: Vec<String> },
}

/// Why a request was refused: the HTTP status, a stable code for metrics, and a reason for
/// the collector's log and the evidence kept.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub reason: String,
    /// Who the request claimed to be (unverified when the refusal is about the token).
    pub claimed: String,
    /// What the client is told instead of `reason`, when the reason holds what is not the
    /// client's to read (the store's location, facts of runs the sender may not own); the
    /// collector's log and its kept refusals have the reason.
    pub told: Option<&'static str>,
}

/// How much of a refusal's reason and claimed identity is kept: they quote unverified
/// tokens (an `iss`, a `kid`), and refusals are kept as evidence.
pub const REFUSAL_BYTES: usize = 1024;

/// `text` cut to [`REFUSAL_BYTES`] on a character boundary, marked when cut.
pub(crate) fn bounded(mut text: String) -> String {
    if text.len() > REFUSAL_BYTES {
        let mut end = REFUSAL_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

impl Refusal {
    pub fn new(status: u16, code: &'static str, reason: impl Into<String>) -> Self {
        Self {
            status,
            code,
            reason: bounded(reason.into()),
            claimed: String::new(),
            told: None,
        }
    }

    /// Tells the client `told` instead of the reason.
    pub fn telling(mut self, told: &'static str) -> Self {
        self.told = Some(told);
        self
    }

    pub fn claiming(mut self, claimed: impl Into<String>) -> Self {
        self.claimed = bounded(claimed.into());
        self
    }
}

struct Issuer {
    config: IssuerConfig,
    jwks: Jwks,
}

/// Verifies bearer tokens against the config's `[[issuer]]` and `[[token]]` entries.
pub struct Verifier {
    issuers: HashMap<String, Arc<Issuer>>,
    tokens: Vec<TokenConfig>,
    leeway: u64,
    late_grace: u64,
}

/// How long a key-set fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

impl Verifier {
    pub fn new(config: &Config) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        let mut issuers = HashMap::new();
        for issuer in &config.issuers {
            let source = JwksSource::parse(&issuer.jwks)?;
            let jwks = Jwks::new(
                source,
                Duration::from_secs(issuer.jwks_refresh_seconds),
                client.clone(),
            );
            issuers.insert(
                issuer.issuer.clone(),
                Arc::new(Issuer {
                    config: issuer.clone(),
                    jwks,
                }),
            );
        }
        Ok(Self {
            issuers,
            tokens: config.tokens.clone(),
            leeway: config.server.clock_skew_seconds,
            late_grace: config.server.late_grace_seconds,
        })
    }

    /// Verifies the `Authorization` header's bearer token. `late_ok` accepts a token expired
    /// within the grace (a spooled run), marking the identity late. `now` is in seconds.
    pub async fn verify(
        &self,
        authorization: Option<&str>,
        late_ok: bool,
        now: i64,
    ) -> Result<Identity, Refusal> {
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Refusal::new(401, "missing_token", "no bearer token"))?;
        let hash = hex::encode(Sha256::digest(token.as_bytes()));
        if let Some(entry) = self
            .tokens
            .iter()
            .find(|t| constant_time_eq(t.sha256.as_bytes(), hash.as_bytes()))
        {
            return Ok(Identity {
                name: format!("token:{}", entry.name),
                source: Source::Static {
                    pipelines: entry.pipelines.clone(),
                },
                issued_at: None,
                expires_at: None,
                late: false,
            });
        }
        self.verify_jwt(token, late_ok, now).await
    }

    async fn verify_jwt(&self, token: &str, late_ok: bool, now: i64) -> Result<Identity, Refusal> {
        let malformed = |what: &str| {
            Refusal::new(
                401,
                "malformed_token",
                format!("not a known static token nor a JWT: {what}"),
            )
        };
        let mut parts = token.split('.');
        let (Some(head), Some(body), Some(_sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("not three dot-separated parts"));
        };
        let header = decode_part(head).ok_or_else(|| malformed("unreadable header"))?;
        let payload = decode_part(body).ok_or_else(|| malformed("unreadable claims"))?;
        let claimed = describe(&payload);
        let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
        let algorithm = match alg {
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            other => {
                return Err(Refusal::new(
                    401,
                    "alg_refused",
                    format!("signature algorithm `{other}` is refused (RS256 or ES256)"),
                )
                .claiming(claimed));
            }
        };
        let iss = payload.get("iss").and_then(Value::as_str).unwrap_or("");
        let issuer = self.issuers.get(iss).ok_or_else(|| {
            Refusal::new(
                401,
                "unknown_issuer",
                format!("issuer `{iss}` is not configured"),
            )
            .claiming(claimed.clone())
        })?;
        let kid = header.get("kid").and_then(Value::as_str);
        let jwk = issuer
            .jwks
            .key(kid)
            .await
            .map_err(|e| Refusal::new(503, "jwks_unavailable", e).claiming(claimed.clone()))?
            .ok_or_else(|| {
                Refusal::new(
                    401,
                    "unknown_key",
                    format!(
                        "key `{}` is not in the key set of `{iss}`",
                        kid.unwrap_or("(none)")
                    ),
                )
                .claiming(claimed.clone())
            })?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| {
            Refusal::new(401, "unknown_key", format!("unusable key: {e}")).claiming(claimed.clone())
        })?;
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway;
        validation.validate_exp = false;
        validation.validate_nbf = true;
        validation.set_issuer(&[&issuer.config.issuer]);
        validation.set_audience(&[&issuer.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).map_err(
            |err| {
                let (code, reason) = match err.kind() {
                    ErrorKind::InvalidSignature => ("bad_signature", "bad signature".to_owned()),
                    ErrorKind::InvalidAudience => (
                        "wrong_audience",
                        format!("audience is not `{}`", issuer.config.audience),
                    ),
                    ErrorKind::InvalidIssuer => ("wrong_issuer", "wrong issuer".to_owned()),
                    ErrorKind::ImmatureSignature => (
                        "not_yet_valid",
                        "the token is not valid yet (nbf)".to_owned(),
                    ),
                    ErrorKind::InvalidAlgorithm => {
                        ("alg_refused", format!("the key does not sign with `{alg}`"))
                    }
                    _ => ("malformed_token", format!("invalid token: {err}")),
                };
                Refusal::new(401, code, reason).claiming(claimed.clone())
            },
        )?;
        let claims = data.claims;
        let exp = numeric_date(&claims, "exp").ok_or_else(|| {
            Refusal::new(
                401,
                "malformed_token",
                "the token's `exp` is not a NumericDate (seconds since the epoch)",
            )
            .claiming(claimed.clone())
        })?;
        let mut late = false;
        let secs = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
        if now > exp.saturating_add(secs(self.leeway)) {
            if late_ok && now <= exp.saturating_add(secs(self.late_grace)) {
                late = true;
            } else {
                return Err(Refusal::new(
                    401,
                    "expired",
                    format!("the token expired {}s ago", now.saturating_sub(exp)),
                )
                .claiming(claimed));
            }
        }
        let run = claimed_run(
            issuer.config.kind,
            (
                issuer.config.pipeline_claim.as_deref(),
                issuer.config.run_claim.as_deref(),
            ),
            &claims,
        )
        .map_err(|e| Refusal::new(401, "missing_claims", e).claiming(claimed.clone()))?;
        if !issuer
            .config
            .pipelines
            .iter()
            .any(|p| crate::config::glob_match(p, &run.pipeline))
        {
            return Err(Refusal::new(
                403,
                "pipeline_not_allowed",
                format!("issuer `{iss}` may not record pipeline `{}`", run.pipeline),
            )
            .claiming(claimed));
        }
        Ok(Identity {
            name: format!("{iss}#{}", run.pipeline),
            source: Source::Oidc {
                issuer: iss.to_owned(),
                run,
            },
            issued_at: numeric_date(&claims, "iat"),
            expires_at: numeric_date(&claims, "exp"),
            late,
        })
    }
}

/// A NumericDate claim (`exp`, `nbf`, `iat`) in whole seconds since the epoch. RFC 7519 lets
/// it carry a fraction; it is rounded down, so a token never lives past the second it names.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Option<i64> {
    let Value::Number(n) = claims.get(name)? else {
        return None;
    };
    n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.is_finite())
            // `as` saturates: a date past the range of i64 stays the largest one.
            .map(|f| f.floor() as i64)
    })
}

/// One base64url JSON part of a JWT, as an object.
fn decode_part(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// What an unverified token claims to be, for evidence: `iss`, `sub`, and the claims that
/// name a run. Each value is cut to keep the evidence bounded.
fn describe(claims: &Map<String, Value>) -> String {
    const NAMES: [&str; 8] = [
        "iss",
        "sub",
        "repository",
        "workflow",
        "run_id",
        "project_path",
        "pipeline_id",
        "job_id",
    ];
    NAMES
        .iter()
        .filter_map(|name| {
            let value = match claims.get(*name)? {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let cut: String = value.chars().take(200).collect();
            Some(format!("{name}={cut}"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NumericDates with a fraction (RFC 7519 allows them) are read as the second they fall
    /// in, not as 0; what is not a number is not a date.
    #[test]
    fn numeric_dates_with_a_fraction_are_read_rounded_down() {
        let claims = serde_json::json!({
            "exp": 1_796_493_992.75, "iat": 1_796_493_000, "nbf": -1.5, "big": 1e300,
            "text": "1796493992", "huge": u64::MAX
        });
        let claims = claims.as_object().unwrap();
        assert_eq!(numeric_date(claims, "exp"), Some(1_796_493_992));
        assert_eq!(numeric_date(claims, "iat"), Some(1_796_493_000));
        assert_eq!(numeric_date(claims, "nbf"), Some(-2));
        assert_eq!(numeric_date(claims, "big"), Some(i64::MAX));
        assert_eq!(numeric_date(claims, "huge"), Some(i64::MAX));
        assert_eq!(numeric_date(claims, "text"), None);
        assert_eq!(numeric_date(claims, "missing"), None);
    }

    /// A forged token's unverified `iss` or `kid` cannot make the refusal kept as evidence (and
    /// logged) as large as the request: a flood of refusals stays small.
    #[tokio::test]
    async fn refusals_quoting_a_forged_token_are_bounded() {
        let verifier = Verifier::new(&Config::default()).unwrap();
        let part = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let huge = "i".repeat(200_000);
        for (header, claims) in [
            (
                serde_json::json!({"alg": "RS256"}),
                serde_json::json!({"iss": huge}),
            ),
            (
                serde_json::json!({"alg": huge}),
                serde_json::json!({"iss": "x"}),
            ),
        ] {
            let token = format!("{}.{}.sig", part(header), part(claims));
            let refusal = verifier
                .verify(Some(&format!("Bearer {token}")), false, 0)
                .await
                .unwrap_err();
            assert!(
                refusal.reason.len() <= REFUSAL_BYTES + 3,
                "{}",
                refusal.reason.len()
            );
            assert!(refusal.claimed.len() <= REFUSAL_BYTES + 3);
        }
    }
}
