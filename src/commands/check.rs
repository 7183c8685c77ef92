//! `cachewarden check`: are these references tainted in an open incident?
//!
//! A reader: it never creates or migrates the store. A missing or empty store is an error
//! (exit 3), not a pass. A store that exists but cannot be read is decided by `[containment]
//! on_unavailable`: refused (exit 5, the default) or passed with a warning, each reference
//! shown as unchecked.

use std::path::Path;

use anyhow::Result;

use crate::ExitStatus;
use crate::cli::{CheckArgs, OutputFormat};
use crate::commands::{open_read_store, write_stdout};
use crate::config::{Config, OnUnavailable};
use crate::error::RefusedError;
use crate::ingest::ci;
use crate::model::{Digest, ImageRef};
use crate::printer::Printer;
use crate::remote::registry::Resolver;
use crate::report::escape::Term;
use crate::store::{Contained, StoreError};

/// A reference as given: a digest, or a reference that may need resolving.
enum Given {
    Digest(Digest),
    Reference(ImageRef),
}

pub async fn check(
    args: &CheckArgs,
    db: &Path,
    config: &Config,
    printer: Printer,
) -> Result<ExitStatus> {
    // Bad input first, before any IO.
    let mut given: Vec<(String, Given)> = Vec::new();
    for value in &args.refs {
        let parsed = match Digest::parse(value, "REF") {
            Ok(digest) => Given::Digest(digest),
            Err(_) => Given::Reference(ImageRef::parse(value, "REF")?),
        };
        given.push((value.clone(), parsed));
    }
    let env = |name: &str| std::env::var(name).ok();
    let pipeline = args
        .pipeline
        .clone()
        .or_else(|| ci::detect(&env).and_then(|c| c.pipeline));
    let policy = config.on_unavailable_for(pipeline.as_deref());
    let to_collector = args.collector.server.clone();
    // With a collector the runner's own store is not read: the collector's is the one.
    let local = if to_collector.is_some() {
        None
    } else {
        Some(open_read_store(db))
    };
    let store = match local {
        None => None,
        Some(Ok(store)) => Some(store),
        // Nothing recorded yet: an error (exit 3), never an empty answer that reads as `ok`.
        Some(Err(err @ (StoreError::Missing { .. } | StoreError::Empty { .. }))) => {
            return Err(err.into());
        }
        Some(Err(err)) => {
            unavailable(err, policy, printer)?;
            None
        }
    };

    // Pin every reference: a bad reference or an unreachable registry is an error, not a pass.
    let mut pinned: Vec<(String, Digest)> = Vec::new();
    for (value, parsed) in given {
        let digest = match parsed {
            Given::Digest(digest) => digest,
            Given::Reference(reference) => match &reference.digest {
                Some(d) => d.clone(),
                None => {
                    let resolver = Resolver::new(config, std::slice::from_ref(&reference.registry));
                    resolver.resolve(&reference).await?
                }
            },
        };
        pinned.push((value, digest));
    }
    let digests: Vec<String> = pinned.iter().map(|(_, d)| d.to_string()).collect();
    let hits: Option<Vec<Contained>> = match (&to_collector, store) {
        (Some(server), _) => {
            match crate::commands::send::remote_contained(server, &args.collector, &digests).await {
                Ok(pairs) => Some(
                    pairs
                        .into_iter()
                        .map(|(digest, incident)| Contained {
                            name: digest.clone(),
                            digest,
                            incident,
                        })
                        .collect(),
                ),
                Err(err) => {
                    unavailable(format!("the collector: {err}"), policy, printer)?;
                    None
                }
            }
        }
        (None, store) => match store.map(|store| store.contained(&digests)) {
            Some(Ok(hits)) => Some(hits),
            Some(Err(err)) => {
                unavailable(err, policy, printer)?;
                None
            }
            None => None,
        },
    };
    let incidents_of = |digest: &Digest| -> Option<Vec<i64>> {
        hits.as_ref().map(|hits| {
            hits.iter()
                .filter(|h| h.digest == digest.as_str())
                .map(|h| h.incident)
                .collect()
        })
    };
    match args.format {
        OutputFormat::Json => {
            let doc: Vec<serde_json::Value> = pinned
                .iter()
                .map(|(name, digest)| {
                    serde_json::json!({
                        "ref": name,
                        "digest": digest.to_string(),
                        "checked": hits.is_some(),
                        "tainted_in": incidents_of(digest),
                    })
                })
                .collect();
            write_stdout(&format!("{}\n", serde_json::to_string_pretty(&doc)?))?;
        }
        OutputFormat::Text => {
            let mut out = String::new();
            for (name, digest) in &pinned {
                match incidents_of(digest) {
                    None => out.push_str(&format!(
                        "UNCHECKED {} ({digest}): the store could not be read\n",
                        Term(name)
                    )),
                    Some(incidents) if incidents.is_empty() => {
                        out.push_str(&format!("ok       {} ({digest})\n", Term(name)));
                    }
                    Some(incidents) => {
                        let incidents: Vec<String> = incidents.iter().map(i64::to_string).collect();
                        out.push_str(&format!(
                            "TAINTED  {} ({digest}) in open incident {}\n",
                            Term(name),
                            incidents.join(", ")
                        ));
                    }
                }
            }
            write_stdout(&out)?;
        }
    }
    let Some(hits) = hits.filter(|hits| !hits.is_empty()) else {
        return Ok(ExitStatus::Success);
    };
    printer.detail(crate::report::count(
        hits.len(),
        "tainted reference",
        "tainted references",
    ));
    Err(RefusedError(format!(
        "{} of {} references are tainted in an open incident",
        pinned
            .iter()
            .filter(|(_, d)| hits.iter().any(|h| h.digest == d.as_str()))
            .count(),
        pinned.len()
    ))
    .into())
}

/// A store that exists but cannot be read: a refusal (exit 5) when containment fails closed,
/// a warning when it fails open. (A missing store is an error before this: a reader creates
/// nothing, and an empty answer would read as `ok`.)
fn unavailable(err: impl std::fmt::Display, policy: OnUnavailable, printer: Printer) -> Result<()> {
    match policy {
        OnUnavailable::FailClosed => Err(RefusedError(format!(
            "containment cannot be checked, so nothing passes: {err} (`[containment] on_unavailable` is `fail-closed`)"
        ))
        .into()),
        OnUnavailable::FailOpen => {
            printer.warn(format!(
                "containment not checked, passing anyway (`[containment] on_unavailable = \"fail-open\"`): {err}"
            ));
            Ok(())
        }
    }
}
