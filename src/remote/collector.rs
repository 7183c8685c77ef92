//! The hook's side of the collector: its token, sending a run with bounded retries, asking
//! `/v1/check`, and the spool that keeps what could not be sent.
//!
//! Recording never fails or holds up a build: a send makes at most [`ATTEMPTS`] tries of at
//! most [`REQUEST_TIMEOUT`] each, then the run is spooled with its token. A refusal (401,
//! 403, 409, 400) is an answer, not an outage: it is never spooled.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::redact::Redacted;

/// Tries per send.
pub const ATTEMPTS: u32 = 3;
/// How long one try may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What sending got.
#[derive(Debug)]
pub enum Sent {
    /// Stored (`created` false when it was already).
    Stored { created: bool, answer: Value },
    /// The collector refused it: status and reason.
    Refused { status: u16, reason: String },
    /// The collector could not be reached or could not store it now.
    Unavailable(String),
}

/// A 200 or 201 to a sent run: stored only when the body is the collector's answer (its
/// version, the run's name, whether it was created). A page that is not (a login page, a
/// proxy's) stored nothing: the run is as good as unsent, and is spooled.
fn stored(status: u16, body: Value, base: &str) -> Sent {
    let answer = body["v"].as_u64() == Some(1)
        && body["run"].as_str().is_some()
        && body["created"].as_bool().is_some();
    if answer {
        Sent::Stored {
            created: status == 201,
            answer: body,
        }
    } else {
        Sent::Unavailable(format!(
            "`{}` answered {status} with something that is not the collector's answer: the run was not stored",
            Redacted::url(base)
        ))
    }
}

/// Reads a check's answer, whole or not at all: every digest asked has its result, with the
/// incidents holding it as numbers, and so does every mount asked, when the answer has mounts
/// (a collector of an earlier release has none). A page that is not the collector's (a login
/// page, a proxy's) is no answer, not an answer that nothing is held.
fn read_check(
    body: &Value,
    digests: &[String],
    mounts: &[(String, String)],
) -> Result<CheckAnswer, String> {
    if body["v"].as_u64() != Some(1) {
        return Err("no `v` of 1".to_owned());
    }
    let incidents = |r: &Value| -> Result<Vec<i64>, String> {
        r["tainted_in"]
            .as_array()
            .ok_or("a result without `tainted_in`")?
            .iter()
            .map(|i| {
                i.as_i64()
                    .ok_or_else(|| "an incident that is not a number".to_owned())
            })
            .collect()
    };
    let results = body["results"].as_array().ok_or("no `results`")?;
    let mut answered = Vec::with_capacity(results.len());
    for result in results {
        let digest = result["digest"]
            .as_str()
            .ok_or("a result without `digest`")?;
        answered.push((digest.to_owned(), incidents(result)?));
    }
    if let Some(missing) = digests
        .iter()
        .find(|d| !answered.iter().any(|(a, _)| a == *d))
    {
        return Err(format!("no result for `{missing}`"));
    }
    let held = match body.get("mounts") {
        None | Some(Value::Null) => None,
        Some(held) => {
            let held = held.as_array().ok_or("`mounts` is not a list")?;
            let mut out = Vec::with_capacity(held.len());
            for m in held {
                let field = |k: &str| m[k].as_str().map(str::to_owned);
                let (Some(builder), Some(id)) = (field("builder"), field("id")) else {
                    return Err("a mount result without `builder` and `id`".to_owned());
                };
                out.push(((builder, id), incidents(m)?));
            }
            if let Some((builder, id)) = mounts
                .iter()
                .find(|m| !out.iter().any(|(asked, _)| asked == *m))
            {
                return Err(format!("no result for mount `{builder}:{id}`"));
            }
            Some(out)
        }
    };
    Ok(CheckAnswer {
        digests: answered,
        mounts: held,
        holding: body["holding"].as_bool(),
    })
}

/// A cache mount (builder, id) and the open incidents holding it.
pub type MountHeld = ((String, String), Vec<i64>);

/// The collector's answer to a check.
#[derive(Debug, Clone, Default)]
pub struct CheckAnswer {
    /// The open incidents holding each digest asked.
    pub digests: Vec<(String, Vec<i64>)>,
    /// The open incidents holding each cache mount asked ((builder, id), incidents); `None`
    /// from a collector that does not check mounts.
    pub mounts: Option<Vec<MountHeld>>,
    /// Whether any open incident holds anything; `None` from a collector that does not say.
    pub holding: Option<bool>,
}

/// A collector client.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str) -> Result<Self, String> {
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(format!("`{}` is not an http(s) URL", Redacted::url(base)));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one run line, retrying outages (no answer, 429, 5xx) with a short backoff.
    pub async fn send_run(&self, token: Option<&str>, line: &Value) -> Sent {
        let url = format!("{}/v1/runs", self.base);
        let refusal = |status| matches!(status, 400 | 401 | 403 | 409 | 413);
        let answer = self
            .exchange(
                || self.http.post(&url).json(line),
                token,
                |status| !matches!(status, 200 | 201) && !refusal(status),
            )
            .await;
        match answer {
            Ok((status @ (200 | 201), body)) => stored(status, body, &self.base),
            Ok((status, body)) => Sent::Refused {
                status,
                reason: body["reason"].as_str().unwrap_or("").to_owned(),
            },
            Err(last) => Sent::Unavailable(last),
        }
    }

    /// Which of `digests` an open incident holds tainted, per digest: the incidents.
    pub async fn check(
        &self,
        token: Option<&str>,
        digests: &[String],
    ) -> Result<Vec<(String, Vec<i64>)>, String> {
        Ok(self.check_with_mounts(token, digests, &[]).await?.digests)
    }

    /// Which of `digests`, and of the cache `mounts` (builder, id in the default namespace),
    /// open incidents hold tainted. The mounts' answer is `None` from a collector that does
    /// not check mounts (an earlier release).
    pub async fn check_with_mounts(
        &self,
        token: Option<&str>,
        digests: &[String],
        mounts: &[(String, String)],
    ) -> Result<CheckAnswer, String> {
        let mounts_asked: Vec<String> = mounts
            .iter()
            .map(|m| serde_json::to_string(m).expect("strings serialize"))
            .collect();
        let query: Vec<(&str, &str)> = digests
            .iter()
            .map(|d| ("digest", d.as_str()))
            .chain(mounts_asked.iter().map(|m| ("mount", m.as_str())))
            .collect();
        let url = format!("{}/v1/check", self.base);
        match self
            .exchange(|| self.http.get(&url).query(&query), token, outage)
            .await?
        {
            (200, body) => read_check(&body, digests, mounts).map_err(|why| {
                format!(
                    "`{}` answered the check with something that is not a check's answer ({why}): nothing was checked",
                    crate::report::escape::Term(&url)
                )
            }),
            (status, body) => Err(self.answered(status, &body)),
        }
    }

    /// Sends the overrides of a build that went ahead from tainted inputs; how many the
    /// collector kept.
    pub async fn send_overrides(&self, token: Option<&str>, body: &Value) -> Result<i64, String> {
        let url = format!("{}/v1/overrides", self.base);
        match self
            .exchange(|| self.http.post(&url).json(body), token, outage)
            .await?
        {
            (201, answer) => Ok(answer["kept"].as_i64().unwrap_or(0)),
            (status, answer) => Err(self.answered(status, &answer)),
        }
    }

    /// Makes the request `make` builds, with the bearer `token`, at most [`ATTEMPTS`] times
    /// with a short backoff while it goes unanswered or its status is one to `retry`; the
    /// first other answer, or why the last try failed.
    async fn exchange(
        &self,
        make: impl Fn() -> reqwest::RequestBuilder,
        token: Option<&str>,
        retry: impl Fn(u16) -> bool,
    ) -> Result<(u16, Value), String> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(300 << attempt)).await;
            }
            let mut request = make();
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            match request.send().await {
                Err(err) => {
                    last = format!(
                        "cannot reach `{}`: {}",
                        Redacted::url(&self.base),
                        err.without_url()
                    )
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    if !retry(status) {
                        return Ok((status, body));
                    }
                    last = self.answered(status, &body);
                }
            }
        }
        Err(last)
    }

    /// `` `BASE` answered STATUS: REASON ``.
    fn answered(&self, status: u16, body: &Value) -> String {
        format!(
            "`{}` answered {status}: {}",
            Redacted::url(&self.base),
            body["reason"].as_str().unwrap_or("")
        )
    }
}

/// A status that says the collector cannot answer now: tried again.
fn outage(status: u16) -> bool {
    status >= 500 || status == 429
}

/// The hook's bearer token: `CACHEWARDEN_TOKEN`, else on GitHub Actions the job's OIDC
/// token for `audience` (the workflow grants `id-token: write`). `Ok(None)`: neither.
pub async fn hook_token(
    var: &dyn Fn(&str) -> Option<String>,
    audience: &str,
) -> Result<Option<String>, String> {
    let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if let Some(token) = get("CACHEWARDEN_TOKEN") {
        return Ok(Some(token.trim().to_owned()));
    }
    let (Some(url), Some(bearer)) = (
        get("ACTIONS_ID_TOKEN_REQUEST_URL"),
        get("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
    ) else {
        return Ok(None);
    };
    let http = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let response = http
        .get(&url)
        .query(&[("audience", audience)])
        .bearer_auth(bearer)
        .send()
        .await
        .map_err(|e| format!("cannot get the job's OIDC token: {e}"))?;
    if !response.status().is_success() {
        return Err(format!(
            "cannot get the job's OIDC token: HTTP {} (does the workflow grant `id-token: write`?)",
            response.status()
        ));
    }
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("cannot get the job's OIDC token: {e}"))?;
    body["value"]
        .as_str()
        .map(|t| Some(t.to_owned()))
        .ok_or_else(|| "the OIDC token answer has no `value`".to_owned())
}

/// One spooled run: where it was going, the token it had, the line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spooled {
    pub v: u32,
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub line: Value,
}

/// The spool directory: `--spool`, else `$XDG_STATE_HOME/cachewarden/spool`.
pub fn spool_dir(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(dir) = explicit {
        return Some(dir.to_path_buf());
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("cachewarden").join("spool"))
}

/// Refuses a spool directory another user could write to: one owned by someone else (they
/// could delete spooled runs, so the collector never hears of them, or plant runs a flush
/// would send), writable by group or others, or a symbolic link. A new one is made `0700`.
fn trusted_spool(dir: &Path, create: bool) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if create && std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let meta = std::fs::symlink_metadata(dir)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let untrusted = if !meta.is_dir() {
        Some("is not a directory (a symbolic link is refused)".to_owned())
    } else if meta.uid() != me {
        Some(format!("is owned by uid {}, not by this user", meta.uid()))
    } else if meta.permissions().mode() & 0o022 != 0 {
        Some(format!(
            "is writable by other users (mode {:o})",
            meta.permissions().mode() & 0o777
        ))
    } else {
        None
    };
    match untrusted {
        Some(why) => Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("the spool `{}` {why}", dir.display()),
        )),
        None => Ok(()),
    }
}

/// Writes a run to the spool, whole or not at all (written aside, then renamed), readable
/// only by its owner (it holds a token), in a directory only its owner can write. Returns its
/// path.
pub fn spool(dir: &Path, entry: &Spooled) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    trusted_spool(dir, true)?;
    let name = format!("{}-{}.json", crate::time::now(), std::process::id());
    let path = dir.join(&name);
    let temp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)?;
    file.write_all(&serde_json::to_vec(entry).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&temp, &path)?;
    Ok(path)
}

/// The spooled runs, oldest first: regular files only, in a spool only this user can write.
pub fn spooled(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    match trusted_spool(dir, false) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other?,
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    paths.sort();
    Ok(paths)
}

#[cfg(test)]
mod spool_tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn entry() -> Spooled {
        Spooled {
            v: 1,
            server: "http://127.0.0.1:9".into(),
            token: Some("secret".into()),
            line: Value::Null,
        }
    }

    /// A spool is made `0700`; one another user could write to (planted, world-writable) or
    /// owned by someone else is refused for spooling and flushing, and a symbolic link planted
    /// among the spooled runs is never read.
    #[test]
    fn a_spool_others_can_write_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state/spool");
        spool(&dir, &entry()).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::os::unix::fs::symlink("/etc/passwd", dir.join("0-planted.json")).unwrap();
        assert_eq!(spooled(&dir).unwrap().len(), 1);

        let shared = root.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = spool(&shared, &entry()).unwrap_err();
        assert!(err.to_string().contains("writable by other users"), "{err}");
        assert!(spooled(&shared).is_err());

        let link = root.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(spool(&link, &entry()).is_err());
        assert!(spooled(&link).is_err());

        let foreign = root.path().join("foreign");
        std::fs::create_dir(&foreign).unwrap();
        std::os::unix::fs::chown(&foreign, Some(65534), None).unwrap();
        std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = spool(&foreign, &entry()).unwrap_err();
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
        assert!(spooled(&foreign).is_err());
    }

    /// Only a whole check's answer is one: a page that is not the collector's, or an answer
    /// that leaves out a digest or mount asked, is no answer at all.
    #[test]
    fn only_a_whole_answer_is_read() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let mount = ("ci-1".to_owned(), "pip".to_owned());
        let asked = (std::slice::from_ref(&digest), std::slice::from_ref(&mount));
        for body in [
            Value::Null,
            serde_json::json!("<html>login</html>"),
            serde_json::json!({"v": 1}),
            serde_json::json!({"v": 1, "results": [{"digest": "x"}]}),
            serde_json::json!({"v": 1, "results": []}),
            serde_json::json!({"v": 1, "results": [{"digest": digest, "tainted_in": ["1"]}]}),
            serde_json::json!({"v": 1, "results": [{"digest": digest, "tainted_in": []}], "mounts": []}),
        ] {
            assert!(read_check(&body, asked.0, asked.1).is_err(), "{body}");
        }
        let whole = serde_json::json!({
            "v": 1,
            "results": [{"digest": digest, "tainted_in": [3]}],
            "mounts": [{"builder": "ci-1", "id": "pip", "tainted_in": []}],
            "holding": true,
        });
        let answer = read_check(&whole, asked.0, asked.1).unwrap();
        assert_eq!(answer.digests, [(digest.clone(), vec![3])]);
        assert_eq!(answer.mounts, Some(vec![(mount.clone(), vec![])]));
        // A collector of an earlier release says nothing of mounts: that is not a refusal.
        let older = serde_json::json!({"v": 1, "results": [{"digest": digest, "tainted_in": []}]});
        assert_eq!(read_check(&older, asked.0, asked.1).unwrap().mounts, None);
    }

    /// A 200 that is not the collector's answer to a run stored nothing: the run is spooled.
    #[test]
    fn only_the_collectors_answer_stores_a_run() {
        let base = "https://collector.example";
        for body in [
            Value::Null,
            serde_json::json!("<html>login</html>"),
            serde_json::json!({"v": 1}),
        ] {
            assert!(matches!(stored(200, body, base), Sent::Unavailable(_)));
        }
        let answer = serde_json::json!({"v": 1, "run": "p/1/s", "created": true});
        assert!(matches!(
            stored(201, answer, base),
            Sent::Stored { created: true, .. }
        ));
    }
}
