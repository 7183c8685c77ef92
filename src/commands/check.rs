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
use crate::error::RemoteError;
use crate::ingest::ci;
use crate::model::{Digest, ImageRef};
use crate::printer::Printer;
use crate::remote::registry::{ClientOptions, RegistryClient, Resolver, facts};
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
        // `sha256:...` is a digest, refused when malformed: never a Docker Hub tag to resolve.
        let parsed = match Digest::parse_bare(value, "REF") {
            Some(digest) => Given::Digest(digest?),
            None => Given::Reference(ImageRef::parse(value, "REF")?),
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
    let mut listed: Vec<Vec<String>> = Vec::new();
    for (value, parsed) in given {
        // A tag resolved here: its registry answers, and says what an index lists.
        let (digest, resolved) = match parsed {
            Given::Digest(digest) => (digest, None),
            Given::Reference(reference) => match &reference.digest {
                Some(d) => (d.clone(), None),
                None => {
                    let resolver = Resolver::new(config, std::slice::from_ref(&reference.registry));
                    (resolver.resolve(&reference).await?, Some(reference))
                }
            },
        };
        // An index is as tainted as the manifests it lists: what the store learned of it,
        // else, for a tag resolved here, what the registry says.
        let known = match &store {
            Some(store) => store
                .manifest_facts(&[digest.as_str()])
                .ok()
                .and_then(|mut facts| facts.remove(digest.as_str())),
            None => None,
        };
        let children = match (known, resolved) {
            (Some(facts), _) => facts.children,
            (None, Some(reference)) => listed_by(config, &reference, &digest).await?,
            (None, None) => Vec::new(),
        };
        listed.push(children.iter().map(|c| c.as_str().to_owned()).collect());
        pinned.push((value, digest));
    }
    let digests: Vec<String> = pinned
        .iter()
        .map(|(_, d)| d.to_string())
        .chain(listed.iter().flatten().cloned())
        .collect();
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
        (None, store) => match store.map(|store| store.contained_listing(&digests)) {
            Some(Ok(hits)) => Some(hits),
            Some(Err(err)) => {
                unavailable(err, policy, printer)?;
                None
            }
            None => None,
        },
    };
    // The open incidents holding the `i`th reference, or a manifest it lists, tainted.
    let incidents_of = |i: usize| -> Option<Vec<i64>> {
        let digest = pinned[i].1.as_str();
        hits.as_ref().map(|hits| {
            let mut found: Vec<i64> = hits
                .iter()
                .filter(|h| h.digest == digest || listed[i].contains(&h.digest))
                .map(|h| h.incident)
                .collect();
            found.sort_unstable();
            found.dedup();
            found
        })
    };
    // The manifests the `i`th reference lists that an open incident holds tainted.
    let tainted_children = |i: usize| -> Vec<&str> {
        let mut found: Vec<&str> = hits
            .iter()
            .flatten()
            .filter(|h| listed[i].contains(&h.digest))
            .map(|h| h.digest.as_str())
            .collect();
        found.sort_unstable();
        found.dedup();
        found
    };
    match args.format {
        OutputFormat::Json => {
            let doc: Vec<serde_json::Value> = pinned
                .iter()
                .enumerate()
                .map(|(i, (name, digest))| {
                    serde_json::json!({
                        "ref": name,
                        "digest": digest.to_string(),
                        "checked": hits.is_some(),
                        "tainted_in": incidents_of(i),
                        "tainted_children": tainted_children(i),
                    })
                })
                .collect();
            write_stdout(&format!(
                "{}\n",
                crate::report::json::to_string_pretty(&doc)?
            ))?;
        }
        OutputFormat::Text => {
            let mut out = String::new();
            for (i, (name, digest)) in pinned.iter().enumerate() {
                match incidents_of(i) {
                    None => out.push_str(&format!(
                        "UNCHECKED {} ({digest}): the store could not be read\n",
                        Term(name)
                    )),
                    Some(incidents) if incidents.is_empty() => {
                        out.push_str(&format!("ok       {} ({digest})\n", Term(name)));
                    }
                    Some(incidents) => {
                        let incidents: Vec<String> = incidents.iter().map(i64::to_string).collect();
                        let children = tainted_children(i);
                        let lists = if children.is_empty() {
                            String::new()
                        } else {
                            format!(": it lists {}", children.join(", "))
                        };
                        out.push_str(&format!(
                            "TAINTED  {} ({digest}) in open incident {}{lists}\n",
                            Term(name),
                            incidents.join(", ")
                        ));
                    }
                }
            }
            write_stdout(&out)?;
        }
    }
    let tainted = (0..pinned.len())
        .filter(|&i| incidents_of(i).is_some_and(|found| !found.is_empty()))
        .count();
    if tainted == 0 {
        return Ok(ExitStatus::Success);
    }
    printer.detail(crate::report::count(
        tainted,
        "tainted reference",
        "tainted references",
    ));
    Err(RefusedError(format!(
        "{tainted} of {} references are tainted in an open incident",
        pinned.len()
    ))
    .into())
}

/// The manifests the index `digest` that `reference` names lists, as its registry says; none
/// when it is not an index. An unreachable registry is an error, as for resolving a tag.
async fn listed_by(
    config: &Config,
    reference: &ImageRef,
    digest: &Digest,
) -> Result<Vec<Digest>, RemoteError> {
    let client =
        RegistryClient::with_options(config, &reference.registry, ClientOptions::default())?;
    match client
        .get_manifest(&reference.repository, digest.as_str())
        .await?
    {
        Some(manifest) => Ok(facts(&manifest)?.children),
        None => Ok(Vec::new()),
    }
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
