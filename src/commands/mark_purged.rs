//! `cachewarden mark-purged`: record a purge done by hand, so traces know what is clean.
//!
//! A recorded purge makes every later run clean of what was written before it, so a purge
//! time is a claim a trace acts on. A time in the future is refused outright; a time before
//! the last recorded use of what it cleans would clean that use after the fact, so it is
//! refused unless `--force --reason`, which records an honest late entry marked as forced. A
//! builder or mount the store has never recorded is refused, with the closest recorded names.

use crate::report::escape::Term;
use std::path::Path;

use anyhow::Result;

use crate::ExitStatus;
use crate::cli::MarkPurgedArgs;
use crate::commands::open_existing_store;
use crate::commands::trace::suggestions;
use crate::config::Config;
use crate::error::InputError;
use crate::graph::{Source, Unknown};
use crate::model::{PurgeMethod, PurgeProvenance, PurgeTarget, normalize_mount_id};
use crate::printer::Printer;
use crate::store::Store;
use crate::time;

pub fn mark_purged(
    args: &MarkPurgedArgs,
    db: &Path,
    config: &Config,
    printer: Printer,
) -> Result<ExitStatus> {
    let now = time::now();
    let at = match &args.at {
        Some(t) => time::parse_flag(t, "--at", time::Bound::Point, now)?,
        None => now,
    };
    if config.purge.in_future(at, now) {
        return Err(InputError::invalid(format!(
            "--at `{}` is in the future (now {}, clock skew allowed {}s): a purge is recorded once it is done",
            time::format(at),
            time::format(now),
            config.purge.clock_skew_seconds
        ))
        .into());
    }
    if let Some(reason) = &args.reason
        && reason.trim().is_empty()
    {
        return Err(InputError::invalid("--reason is empty: say why the purge is recorded").into());
    }
    let mut store = open_existing_store(db)?;
    let target = match &args.mount {
        Some(mount) => mount_target(&store, &args.builder, mount)?,
        None => PurgeTarget::Builder {
            builder: args.builder.clone(),
            records_only: args.records_only,
            selective: None,
        },
    };
    refuse_unknown(&store, &target)?;
    let last_use = match store.last_use(&target)? {
        Some((run, used)) if at < used => Some((store.run(run)?, used)),
        _ => None,
    };
    let forced = match &last_use {
        Some((run, used)) if !args.force => {
            return Err(InputError::invalid(format!(
                "--at `{}` is before the last recorded use of {}: {} at {}; a purge then would clean that use after the fact (record a late entry with --force --reason TEXT)",
                time::format(at),
                describe(&target),
                crate::graph::run_display_name(run),
                time::format(*used)
            ))
            .into());
        }
        Some(_) => true,
        None => false,
    };
    let provenance = PurgeProvenance {
        method: PurgeMethod::Manual,
        author: crate::actor::actor(),
        forced,
        reason: args.reason.clone(),
        source: "mark-purged".into(),
        action: None,
        claimed: None,
    };
    let id = store.record_purge(&target, at, &provenance)?;
    let late = if forced {
        " (forced: before its last recorded use)"
    } else {
        ""
    };
    printer.status(format!(
        "recorded purge {id} of {} at {} by {}{late}",
        describe(&target),
        time::format(at),
        provenance.author
    ));
    Ok(ExitStatus::Success)
}

/// The mount `--mount` names on `builder`, as `ls mounts` and `trace` name it: `ID` in the
/// default namespace, else `NAMESPACE/ID` in a namespace (`BUILDKIT_CACHE_MOUNT_NS`). A name
/// the builder has neither of is left in the default namespace, for [`refuse_unknown`].
fn mount_target(store: &Store, builder: &str, mount: &str) -> Result<PurgeTarget> {
    let plain = normalize_mount_id(mount, "", false);
    let known = store.mount_identities(builder)?;
    let default = known.iter().any(|(ns, id)| ns.is_empty() && *id == plain);
    let namespaced = mount
        .split_once('/')
        .filter(|(ns, id)| {
            !ns.is_empty()
                && known
                    .iter()
                    .any(|k| k.0 == *ns && k.1 == normalize_mount_id(id, ns, false))
        })
        .map(|(ns, id)| (ns.to_owned(), normalize_mount_id(id, ns, false)));
    let (namespace, id) = match (default, namespaced) {
        (true, Some((ns, id))) => {
            return Err(InputError::invalid(format!(
                "`{}` on `{}` names two mounts, id `{}` in the default namespace and id `{}` in namespace `{}`: which one was purged cannot be told",
                Term(mount),
                Term(builder),
                Term(&plain),
                Term(&id),
                Term(&ns)
            ))
            .into());
        }
        (false, Some(namespaced)) => namespaced,
        (_, None) => (String::new(), plain),
    };
    Ok(PurgeTarget::Mount {
        builder: builder.to_owned(),
        mount: id,
        namespace,
    })
}

/// Refuses a builder, or a mount on it, that the store has never recorded, with the closest
/// recorded names, as a trace seed is: a purge of a name no run used cleans nothing, and is
/// likely a typo for the one that was meant.
fn refuse_unknown(store: &Store, target: &PurgeTarget) -> Result<()> {
    let unknown = match target {
        PurgeTarget::Builder { builder, .. } | PurgeTarget::Mount { builder, .. }
            if !store.builder_names()?.contains(builder) =>
        {
            Unknown::Builder(builder.clone())
        }
        PurgeTarget::Mount {
            builder,
            mount,
            namespace,
        } if !store
            .mount_identities(builder)?
            .iter()
            .any(|(ns, id)| ns == namespace && id == mount) =>
        {
            Unknown::Mount {
                builder: builder.clone(),
                id: mount.clone(),
            }
        }
        _ => return Ok(()),
    };
    let hint = suggestions(store, &unknown).unwrap_or_default();
    Err(InputError::invalid(format!("{unknown}{hint}")).into())
}

fn describe(target: &PurgeTarget) -> String {
    match target {
        PurgeTarget::Mount { builder, mount, .. } => {
            format!("mount `{}` on `{}`", Term(mount), Term(builder))
        }
        PurgeTarget::Builder {
            builder,
            records_only: false,
            ..
        } => format!("builder `{}`", Term(builder)),
        PurgeTarget::Builder { builder, .. } => {
            format!(
                "build records (not cache mounts) of builder `{}`",
                Term(builder)
            )
        }
    }
}
