//! `cachewarden ls`: what the store holds, newest first. A reader: never writes the store.

use std::path::Path;

use anyhow::Result;

use crate::ExitStatus;
use crate::cli::{LsArgs, LsFormat, LsKind};
use crate::commands::{open_read_store, write_stdout};
use crate::error::InputError;
use crate::graph::Unknown;
use crate::printer::Printer;
use crate::report::escape::Term;
use crate::report::ls::{self, Listing};
use crate::store::{ListFilter, Store};
use crate::time::{self, Bound};

pub fn ls(args: &LsArgs, db: &Path, printer: Printer) -> Result<ExitStatus> {
    let filter = filter(args)?;
    let mut store = open_read_store(db)?;
    let mut listing = store.read_snapshot(|store| {
        check_known(store, &filter)?;
        Ok::<_, anyhow::Error>(match args.what {
            LsKind::Pipelines => Listing::Pipelines(store.ls_pipelines(&filter)?),
            LsKind::Runs => Listing::Runs(store.ls_runs(&filter)?),
            LsKind::Builders => Listing::Builders(store.ls_builders(&filter)?),
            LsKind::Mounts => Listing::Mounts(store.ls_mounts(&filter)?),
            LsKind::Incidents => Listing::Incidents(store.ls_incidents(&filter)?),
        })
    })??;
    let limit = filter.limit;
    let truncated = limit.is_some_and(|n| listing.len() as u64 > n);
    if let Some(n) = limit.filter(|_| truncated) {
        listing.truncate(usize::try_from(n).unwrap_or(usize::MAX));
        let what = match n {
            1 => listing.name().trim_end_matches('s'),
            _ => listing.name(),
        };
        printer.warn(format!(
            "showing the newest {n} {what}; more match (`--limit 0` lists all, or narrow with --since, --until, --pipeline or --builder)"
        ));
    }
    let out = match args.format {
        LsFormat::Text => ls::text(&listing),
        LsFormat::Json => format!(
            "{}\n",
            crate::report::json::to_string_pretty(&ls::json(&listing, limit, truncated))?
        ),
    };
    write_stdout(&out)?;
    Ok(ExitStatus::Success)
}

/// The flags as a filter: times resolved once, and flags that do not narrow this list refused
/// rather than ignored.
fn filter(args: &LsArgs) -> Result<ListFilter> {
    if args.what == LsKind::Incidents {
        for (flag, given) in [
            ("--pipeline", args.pipeline.is_some()),
            ("--builder", args.builder.is_some()),
        ] {
            if given {
                return Err(InputError::invalid(format!(
                    "{flag} does not filter incidents: `ls incidents` takes --since, --until and --limit"
                ))
                .into());
            }
        }
    }
    for (flag, value) in [("--pipeline", &args.pipeline), ("--builder", &args.builder)] {
        if value.as_deref() == Some("") {
            return Err(InputError::invalid(format!("{flag} is empty: name one")).into());
        }
    }
    let now = time::now();
    let since = args
        .since
        .as_deref()
        .map(|s| time::parse_flag(s, "--since", Bound::Lower, now))
        .transpose()?;
    let until = args
        .until
        .as_deref()
        .map(|s| time::parse_flag(s, "--until", Bound::Upper, now))
        .transpose()?;
    if let (Some(since), Some(until)) = (since, until)
        && until < since
    {
        return Err(InputError::invalid(format!(
            "--until `{}` is before --since `{}`",
            time::format(until),
            time::format(since)
        ))
        .into());
    }
    Ok(ListFilter {
        pipeline: args.pipeline.clone(),
        builder: args.builder.clone(),
        since,
        until,
        limit: (args.limit > 0).then_some(args.limit),
    })
}

/// A `--pipeline` or `--builder` the store does not hold is a typo more often than an empty
/// answer: it is refused with the closest recorded names.
fn check_known(store: &Store, filter: &ListFilter) -> Result<()> {
    if let Some(name) = &filter.pipeline
        && !store.pipeline_names()?.iter().any(|n| n == name)
    {
        return Err(unknown(store, Unknown::Pipeline(name.clone())));
    }
    if let Some(name) = &filter.builder
        && !store.builder_names()?.iter().any(|n| n == name)
    {
        return Err(unknown(store, Unknown::Builder(name.clone())));
    }
    Ok(())
}

fn unknown(store: &Store, unknown: Unknown) -> anyhow::Error {
    let hint = super::trace::suggestions(store, &unknown).unwrap_or_default();
    let message = match &unknown {
        Unknown::Pipeline(name) => format!("no pipeline `{}` in the store", Term(name)),
        Unknown::Builder(name) => format!("no builder `{}` in the store", Term(name)),
        other => other.to_string(),
    };
    InputError::invalid(format!("{message}{hint}")).into()
}
