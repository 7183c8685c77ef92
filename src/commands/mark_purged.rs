//! `cachewarden mark-purged`: record a purge done by hand, so traces know what is clean.

use std::path::Path;

use anyhow::Result;

use crate::ExitStatus;
use crate::cli::MarkPurgedArgs;
use crate::commands::open_existing_store;
use crate::model::{PurgeTarget, normalize_mount_id};
use crate::printer::Printer;
use crate::time;

pub fn mark_purged(args: &MarkPurgedArgs, db: &Path, printer: Printer) -> Result<ExitStatus> {
    let at = match &args.at {
        Some(t) => time::parse_rfc3339(t, "--at")?,
        None => time::now(),
    };
    let target = match &args.mount {
        Some(mount) => PurgeTarget::Mount {
            builder: args.builder.clone(),
            mount: normalize_mount_id(mount, "", false),
            namespace: String::new(),
        },
        None => PurgeTarget::Builder {
            builder: args.builder.clone(),
        },
    };
    let mut store = open_existing_store(db)?;
    store.record_purge(&target, at, "mark-purged")?;
    printer.status(format!(
        "recorded purge of {} at {}",
        describe(&target),
        time::format(at)
    ));
    Ok(ExitStatus::Success)
}

fn describe(target: &PurgeTarget) -> String {
    match target {
        PurgeTarget::Mount { builder, mount, .. } => format!("mount `{mount}` on `{builder}`"),
        PurgeTarget::Builder { builder } => format!("builder `{builder}`"),
    }
}
