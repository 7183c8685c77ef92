//! `cachewarden check`: are these references tainted in an open incident?

use std::path::Path;

use anyhow::Result;

use crate::ExitStatus;
use crate::cli::{CheckArgs, OutputFormat};
use crate::commands::{open_store, write_stdout};
use crate::config::Config;
use crate::error::RefusedError;
use crate::model::{Digest, ImageRef};
use crate::printer::Printer;
use crate::remote::registry::Resolver;
use crate::report::escape::Term;

pub async fn check(
    args: &CheckArgs,
    db: &Path,
    config: &Config,
    printer: Printer,
) -> Result<ExitStatus> {
    // Pin every reference first: a bad reference or an unreachable registry is an error, not
    // a pass.
    let mut pinned: Vec<(String, Digest)> = Vec::new();
    for value in &args.refs {
        if let Ok(digest) = Digest::parse(value, "REF") {
            pinned.push((value.clone(), digest));
            continue;
        }
        let reference = ImageRef::parse(value, "REF")?;
        let digest = match &reference.digest {
            Some(d) => d.clone(),
            None => {
                let resolver = Resolver::new(config, std::slice::from_ref(&reference.registry));
                resolver.resolve(&reference).await?
            }
        };
        pinned.push((value.clone(), digest));
    }
    let store = open_store(db)?;
    let digests: Vec<String> = pinned.iter().map(|(_, d)| d.to_string()).collect();
    let hits = store.contained(&digests)?;
    match args.format {
        OutputFormat::Json => {
            let doc: Vec<serde_json::Value> = pinned
                .iter()
                .map(|(name, digest)| {
                    let incidents: Vec<i64> =
                        hits.iter().filter(|h| h.digest == digest.as_str()).map(|h| h.incident).collect();
                    serde_json::json!({"ref": name, "digest": digest.to_string(), "tainted_in": incidents})
                })
                .collect();
            write_stdout(&format!("{}\n", serde_json::to_string_pretty(&doc)?))?;
        }
        OutputFormat::Text => {
            let mut out = String::new();
            for (name, digest) in &pinned {
                let incidents: Vec<String> = hits
                    .iter()
                    .filter(|h| h.digest == digest.as_str())
                    .map(|h| h.incident.to_string())
                    .collect();
                if incidents.is_empty() {
                    out.push_str(&format!("ok       {} ({digest})\n", Term(name)));
                } else {
                    out.push_str(&format!(
                        "TAINTED  {} ({digest}) in open incident {}\n",
                        Term(name),
                        incidents.join(", ")
                    ));
                }
            }
            write_stdout(&out)?;
        }
    }
    if hits.is_empty() {
        Ok(ExitStatus::Success)
    } else {
        printer.detail(format!("{} tainted references", hits.len()));
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
}
