//! Sending a run to the collector (`record --server`, `wrap --server`) and flushing the
//! spool (`cachewarden flush`).

use std::path::Path;

use anyhow::Result;
use serde_json::Value;

use crate::ExitStatus;
use crate::cli::{CollectorArgs, FlushArgs};
use crate::error::{InputError, RefusedError};
use crate::ingest::progress::{Mode, StepHit};
use crate::model::RunRecord;
use crate::printer::Printer;
use crate::remote::collector::{self, Client, Sent, Spooled};
use crate::report::escape::Line;
use crate::wire::provenance::{self, run_line};

/// What became of a run.
#[derive(Debug)]
pub enum Delivered {
    Stored { created: bool, answer: Value },
    Spooled,
}

/// The line the hook sends: what it knows. A pipeline or run it does not know is left to
/// the token.
pub fn wire_line(record: &RunRecord) -> Result<Value> {
    let mut line = serde_json::to_value(provenance::Line::Run(Box::new(run_line(record))))?;
    if let Some(map) = line.as_object_mut() {
        for key in ["pipeline", "run"] {
            if map.get(key).and_then(Value::as_str) == Some("") {
                map.remove(key);
            }
        }
    }
    Ok(line)
}

/// Sends a run to `server`; spools it when the collector cannot be reached. A refusal is an
/// error (exit 5; bad input exit 2) and is never spooled.
pub async fn deliver(
    record: &RunRecord,
    steps: Option<(Mode, &[StepHit])>,
    server: &str,
    opts: &CollectorArgs,
    printer: Printer,
) -> Result<Delivered> {
    let client = Client::new(server).map_err(|e| InputError::invalid(format!("--server: {e}")))?;
    let mut line = wire_line(record)?;
    if let Some((mode, hits)) = steps {
        let left_out = crate::wire::steps::put(&mut line, mode, hits);
        if left_out > 0 {
            printer.warn(format!(
                "{} left out: the run line has no room for them",
                crate::report::count(left_out, "step", "steps")
            ));
        }
    }
    let env = |name: &str| std::env::var(name).ok();
    let token = match collector::hook_token(&env, &opts.audience).await {
        Ok(Some(token)) => Some(token),
        Ok(None) => {
            return Err(InputError::invalid(
                "no token for the collector: set CACHEWARDEN_TOKEN, or on GitHub Actions grant the job `id-token: write`",
            )
            .into());
        }
        // The token service is down: the run waits with no token, for the next hook's.
        Err(err) => {
            printer.warn(Line(&err));
            None
        }
    };
    let sent = match &token {
        Some(token) => client.send_run(Some(token), &line).await,
        None => Sent::Unavailable("no token could be had".to_owned()),
    };
    match sent {
        Sent::Stored { created, answer } => {
            flush_quietly(&client, opts, printer).await;
            Ok(Delivered::Stored { created, answer })
        }
        Sent::Refused { status, reason } => Err(refused(status, &reason)),
        Sent::Unavailable(why) => {
            let dir = collector::spool_dir(opts.spool.as_deref()).ok_or_else(|| {
                InputError::invalid("no spool directory: pass --spool or set CACHEWARDEN_SPOOL")
            })?;
            let entry = Spooled {
                v: 1,
                server: client.base().to_owned(),
                token,
                line,
            };
            let path = collector::spool(&dir, &entry).map_err(|e| {
                anyhow::anyhow!("the run could not be sent ({why}) nor spooled: {e}")
            })?;
            printer.warn(format!(
                "the collector could not be reached ({}): the run is spooled at `{}` for the next hook or `cachewarden flush`",
                Line(&why),
                path.display()
            ));
            Ok(Delivered::Spooled)
        }
    }
}

fn refused(status: u16, reason: &str) -> anyhow::Error {
    let message = format!("the collector refused the run ({status}): {}", Line(reason));
    if status == 400 || status == 413 {
        InputError::invalid(message).into()
    } else {
        RefusedError(message).into()
    }
}

/// After a send went through, sends what waits in the spool for the same collector, until
/// the first that cannot be sent.
async fn flush_quietly(client: &Client, opts: &CollectorArgs, printer: Printer) {
    let Some(dir) = collector::spool_dir(opts.spool.as_deref()) else {
        return;
    };
    let _ = flush_dir(&dir, Some(client.base()), printer).await;
}

/// The token a spooled run saved without one is sent with: a static token in
/// `CACHEWARDEN_TOKEN`. An OIDC token names its own run, so a job's is no use for another's.
fn static_token() -> Option<String> {
    std::env::var("CACHEWARDEN_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty() && t.split('.').count() != 3)
}

/// What a flush did.
#[derive(Debug, Default)]
struct Flushed {
    sent: usize,
    refused: usize,
    left: usize,
}

async fn flush_dir(dir: &Path, only: Option<&str>, printer: Printer) -> Result<Flushed> {
    let mut flushed = Flushed::default();
    let paths = collector::spooled(dir)?;
    let mut down: Vec<String> = Vec::new();
    for path in paths {
        let entry: Spooled = match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(entry) => entry,
            Err(err) => {
                printer.warn(format!("`{}` is not a spooled run: {err}", path.display()));
                flushed.left += 1;
                continue;
            }
        };
        let server = entry.server.trim_end_matches('/').to_owned();
        if only.is_some_and(|o| o != server) || down.contains(&server) {
            flushed.left += 1;
            continue;
        }
        // Spooled without a token (the token service was down): sent with a static token
        // when there is one, else left for a flush that has one. Sent with none, it would be
        // refused for good.
        let fallback = static_token();
        let Some(token) = entry.token.clone().or(fallback) else {
            printer.warn(format!(
                "spooled run `{}` has no token: it waits for a `cachewarden flush` with \
                 CACHEWARDEN_TOKEN set to a static token of the collector's",
                path.display()
            ));
            flushed.left += 1;
            continue;
        };
        let client = Client::new(&server).map_err(InputError::invalid)?;
        match client.send_run(Some(&token), &entry.line).await {
            Sent::Stored { .. } => {
                std::fs::remove_file(&path)?;
                flushed.sent += 1;
            }
            Sent::Refused { status, reason } => {
                let refused_dir = dir.join("refused");
                std::fs::create_dir_all(&refused_dir)?;
                if let Some(name) = path.file_name() {
                    std::fs::rename(&path, refused_dir.join(name))?;
                }
                printer.warn(format!(
                    "the collector refused spooled run `{}` ({status}): {}; moved to `{}`",
                    path.display(),
                    Line(&reason),
                    refused_dir.display()
                ));
                flushed.refused += 1;
            }
            Sent::Unavailable(_) => {
                down.push(server);
                flushed.left += 1;
            }
        }
    }
    Ok(flushed)
}

/// `cachewarden flush`: sends every spooled run to the collector it was meant for. Exit 0
/// when the spool is empty after, 1 when runs are left or were refused.
pub async fn flush(args: &FlushArgs, printer: Printer) -> Result<ExitStatus> {
    let dir = collector::spool_dir(args.spool.as_deref()).ok_or_else(|| {
        InputError::invalid("no spool directory: pass --spool or set CACHEWARDEN_SPOOL")
    })?;
    let only = args
        .server
        .as_deref()
        .map(|s| s.trim_end_matches('/').to_owned());
    let flushed = flush_dir(&dir, only.as_deref(), printer).await?;
    printer.status(format!(
        "sent {}, refused {}, left {}",
        crate::report::count(flushed.sent, "spooled run", "spooled runs"),
        flushed.refused,
        flushed.left
    ));
    Ok(if flushed.left == 0 && flushed.refused == 0 {
        ExitStatus::Success
    } else {
        ExitStatus::Findings
    })
}

/// Tells the collector that the run went ahead from inputs its open incidents hold tainted
/// (`wrap --allow-tainted`), so the fleet's record holds the override; how many it kept. The
/// pipeline and run are the token's when the hook does not know them.
pub async fn send_overrides(
    server: &str,
    opts: &CollectorArgs,
    record: &RunRecord,
    hits: &[crate::store::Contained],
) -> Result<i64, String> {
    let client = Client::new(server)?;
    let env = |name: &str| std::env::var(name).ok();
    let token = collector::hook_token(&env, &opts.audience)
        .await?
        .ok_or("no token for the collector (CACHEWARDEN_TOKEN)")?;
    let mut body = serde_json::json!({
        "v": 1,
        "overrides": hits
            .iter()
            .map(|hit| serde_json::json!({"digest": hit.digest, "incident": hit.incident}))
            .collect::<Vec<_>>(),
    });
    for (key, value) in [("pipeline", &record.pipeline.name), ("run", &record.run_id)] {
        if !value.is_empty() {
            body[key] = Value::String(value.clone());
        }
    }
    client.send_overrides(Some(&token), &body).await
}

/// Which of `digests` the collector's open incidents hold tainted: (digest, incident) pairs.
/// An error when it cannot tell (unreachable, no token): containment's `on_unavailable`
/// decides.
pub async fn remote_contained(
    server: &str,
    opts: &CollectorArgs,
    digests: &[String],
) -> Result<Vec<(String, i64)>, String> {
    Ok(remote_contained_with_mounts(server, opts, digests, &[])
        .await?
        .digests)
}

/// What [`remote_contained`] says, and which of the cache `mounts` (builder, id) the
/// collector's open incidents hold: (mount, incident) pairs, `None` from a collector that does
/// not check mounts.
pub async fn remote_contained_with_mounts(
    server: &str,
    opts: &CollectorArgs,
    digests: &[String],
    mounts: &[(String, String)],
) -> Result<RemoteHits, String> {
    let client = Client::new(server)?;
    let env = |name: &str| std::env::var(name).ok();
    let token = collector::hook_token(&env, &opts.audience)
        .await?
        .ok_or("no token for the collector (CACHEWARDEN_TOKEN)")?;
    let answer = client
        .check_with_mounts(Some(&token), digests, mounts)
        .await?;
    Ok(RemoteHits {
        digests: answer
            .digests
            .into_iter()
            .flat_map(|(digest, incidents)| incidents.into_iter().map(move |i| (digest.clone(), i)))
            .collect(),
        mounts: answer.mounts.map(|held| {
            held.into_iter()
                .flat_map(|(mount, incidents)| {
                    incidents.into_iter().map(move |i| (mount.clone(), i))
                })
                .collect()
        }),
        holding: answer.holding,
    })
}

/// Whether any of the collector's open incidents holds anything a build could read. An error
/// when it cannot tell, or is of a release that does not say.
pub async fn remote_holding(server: &str, opts: &CollectorArgs) -> Result<bool, String> {
    remote_contained_with_mounts(server, opts, &[], &[])
        .await?
        .holding
        .ok_or_else(|| "the collector does not say whether its incidents hold anything".to_owned())
}

/// What the collector's open incidents hold of what was asked.
#[derive(Debug, Clone, Default)]
pub struct RemoteHits {
    /// (digest, incident) pairs.
    pub digests: Vec<(String, i64)>,
    /// ((builder, id), incident) pairs; `None` when the collector does not check mounts.
    pub mounts: Option<Vec<((String, String), i64)>>,
    /// Whether any open incident holds anything; `None` when the collector does not say.
    pub holding: Option<bool>,
}
