//! A builder's records: those tainted runs created, those used since the taint where evidence
//! is missing, or all of them; saved as a listing, pruned by id with whatever was built on
//! them, and verified gone from the builder's records.

use crate::report::escape::Term;
use std::collections::BTreeSet;

use crate::error::RemoteError;
use crate::model::{Driver, PurgeTarget, SelectivePrune};
use crate::plan::Target;
use crate::purge::evidence::{Evidence, save_records};
use crate::purge::remotes::{Remotes, connected};
use crate::purge::verify::{Verdict, VerifyInputs, cutoff, from_before, last_purge};
use crate::purge::{BoxFuture, Executed, Outcome, TargetKind};
use crate::remote::buildkit::CacheRecord;
use crate::remote::endpoint::require_endpoint;
use crate::report::count;
use crate::store::ActionRow;
use crate::time::Micros;

pub struct Builder;

/// The fields of a builder target.
struct Fields<'a> {
    builder: &'a str,
    endpoint: Option<&'a str>,
    driver: Option<Driver>,
    record_ids: &'a [String],
    used_since: Option<Micros>,
    made_since: Option<Micros>,
    made_by_others: &'a [String],
    full: bool,
    partial: bool,
    clock_skew: Option<Micros>,
}

fn fields(target: &Target) -> Fields<'_> {
    match target {
        Target::Builder {
            builder,
            endpoint,
            driver,
            record_ids,
            used_since,
            made_since,
            made_by_others,
            full,
            partial,
            clock_skew,
        } => Fields {
            builder,
            endpoint: endpoint.as_deref(),
            driver: *driver,
            record_ids,
            used_since: *used_since,
            made_since: *made_since,
            made_by_others,
            full: *full,
            partial: *partial,
            clock_skew: *clock_skew,
        },
        _ => unreachable!("dispatched by kind_of"),
    }
}

impl TargetKind for Builder {
    fn place(&self, target: &Target) -> String {
        fields(target).builder.to_owned()
    }

    fn identity(&self, target: &Target) -> String {
        format!("builder\0{}", fields(target).builder)
    }

    fn check<'a>(
        &'a self,
        target: &'a Target,
        cx: &'a Remotes,
    ) -> BoxFuture<'a, Result<String, RemoteError>> {
        Box::pin(async move {
            let b = fields(target);
            let records = cx.disk_usage(b.builder, b.endpoint, b.driver).await?;
            let ids = select_builder_records(
                &records,
                b.record_ids,
                (b.used_since, b.made_since, b.made_by_others),
                b.full,
            );
            Ok(format!(
                "{} of {} to prune",
                ids.len(),
                count(records.len(), "record", "records")
            ))
        })
    }

    fn evidence<'a>(
        &'a self,
        target: &'a Target,
        cx: &'a Remotes,
        opts: &'a Evidence,
    ) -> BoxFuture<'a, Result<(), RemoteError>> {
        Box::pin(async move {
            let b = fields(target);
            save_records(
                opts,
                cx,
                b.builder,
                b.endpoint,
                b.driver,
                |records| {
                    select_builder_records(
                        records,
                        b.record_ids,
                        (b.used_since, b.made_since, b.made_by_others),
                        b.full,
                    )
                },
                "records",
            )
            .await
        })
    }

    fn execute<'a>(
        &'a self,
        target: &'a Target,
        cx: &'a Remotes,
    ) -> BoxFuture<'a, Result<Executed, RemoteError>> {
        Box::pin(async move {
            let b = fields(target);
            let (endpoint, driver) = require_endpoint(&cx.config, b.builder, b.endpoint, b.driver)?;
            let outcome = prune_builder(
                cx,
                b.builder,
                &endpoint,
                driver,
                b.record_ids,
                (b.used_since, b.made_since, b.made_by_others),
                b.full,
            )
            .await?;
            // A sweep's prune of only some records is no purge of the builder's cache. One
            // that is not full leaves its cache mounts, which it does not clean, and removes
            // only the records named and those used since: it cleans only the writers whose
            // records it removed.
            let purged = (!b.partial).then(|| PurgeTarget::Builder {
                builder: b.builder.to_owned(),
                records_only: !b.full,
                selective: (!b.full).then(|| SelectivePrune {
                    records: b.record_ids.to_vec(),
                    since: selective_since(b.used_since, b.made_since),
                    // A plan made before the skew was kept with it used the config's.
                    skew: b.clock_skew.unwrap_or_else(|| {
                        crate::time::seconds(cx.config.purge.clock_skew_seconds)
                    }),
                }),
            });
            Ok(Executed::Done { outcome, purged })
        })
    }

    fn verify<'a>(
        &'a self,
        target: &'a Target,
        rows: &'a [ActionRow],
        cx: &'a Remotes,
        inputs: &'a VerifyInputs,
    ) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            let b = fields(target);
            let cutoff = cutoff(
                rows,
                last_purge(&inputs.purges, b.builder, None),
                inputs.tainted_runs.get(b.builder).copied(),
            );
            match cx.listing(b.builder, b.endpoint, b.driver).await {
                Err(detail) => Verdict::Unverified { detail },
                Ok(records) => builder_verdict(&records, rows, b.builder, cutoff),
            }
        })
    }
}

/// The time a prune of records used since `used` and made since `made` is recorded with: a
/// writer that began after either left nothing it kept.
pub fn selective_since(used: Option<Micros>, made: Option<Micros>) -> Option<Micros> {
    used.into_iter().chain(made).min()
}

/// The records to prune on a builder: those tainted runs created, those used since the taint
/// time where evidence is missing, those made since a tainted run began whose evidence is not
/// believed (mount records aside: the mount actions decide those), or all.
pub fn select_builder_records(
    records: &[CacheRecord],
    record_ids: &[String],
    (used_since, made_since, made_by_others): (Option<i64>, Option<i64>, &[String]),
    full: bool,
) -> Vec<String> {
    let wanted: BTreeSet<&str> = record_ids.iter().map(String::as_str).collect();
    let others: BTreeSet<&str> = made_by_others.iter().map(String::as_str).collect();
    let mut selected: BTreeSet<&str> = records
        .iter()
        .filter(|r| {
            full || wanted.contains(r.id.as_str())
                || used_since.is_some_and(|since| {
                    // Since any time (a run whose times prove nothing): every record. One of
                    // unknown age may have been used since.
                    r.record_type != "exec.cachemount"
                        && (since == i64::MIN
                            || r.last_used_at.or(r.created_at).is_none_or(|t| t >= since))
                })
                || made_since.is_some_and(|since| {
                    // One of unknown age may have been made since; one a believed run made is
                    // not the doubted run's; nor is one that carries no taint as the builder
                    // itself describes it (a pulled layer, the build context).
                    crate::graph::record_kind_carries_taint(&r.record_type, &r.description)
                        && !others.contains(r.id.as_str())
                        && r.created_at.or(r.last_used_at).is_none_or(|t| t >= since)
                })
        })
        .map(|r| r.id.as_str())
        .collect();
    // A record built on a selected one holds its content, and keeps it from being pruned: a
    // later step over a tainted layer, or the evidence listing's step over a tainted base.
    loop {
        let before = selected.len();
        for r in records {
            if r.parents.iter().any(|p| selected.contains(p.as_str())) {
                selected.insert(r.id.as_str());
            }
        }
        if selected.len() == before {
            break;
        }
    }
    records
        .iter()
        .filter(|r| selected.contains(r.id.as_str()))
        .map(|r| r.id.clone())
        .collect()
}

async fn prune_builder(
    cx: &Remotes,
    builder: &str,
    endpoint: &str,
    driver: Driver,
    record_ids: &[String],
    since: (Option<i64>, Option<i64>, &[String]),
    full: bool,
) -> Result<Outcome, RemoteError> {
    let slot = cx.builder(builder).await;
    let mut slot = slot.lock().await;
    let client = connected(&mut slot, endpoint, driver).await?;
    let records = client.disk_usage().await?;
    let ids = select_builder_records(&records, record_ids, since, full);
    let pruned = client.prune_ids(&ids).await?;
    let after = client.disk_usage().await?;
    let survivors: Vec<&str> = after
        .iter()
        .filter(|r| ids.contains(&r.id))
        .map(|r| r.id.as_str())
        .collect();
    let bytes: i64 = pruned.iter().map(|r| r.size).sum();
    if !survivors.is_empty() {
        return Err(RemoteError::protocol(format!(
            "builder `{builder}`: {} of {} survived the prune (kept by records outside the plan, or in use): {}",
            survivors.len(),
            count(ids.len(), "record", "records"),
            survivors.join(", "),
            builder = Term(builder)
        )));
    }
    let gone = record_ids
        .iter()
        .filter(|id| !records.iter().any(|r| &r.id == *id))
        .count();
    Ok(Outcome::Pruned {
        records: ids.len(),
        bytes,
        already_gone: gone,
    })
}

fn builder_verdict(
    records: &[CacheRecord],
    rows: &[ActionRow],
    builder: &str,
    cutoff: Option<Micros>,
) -> Verdict {
    let mut left: Vec<&str> = Vec::new();
    for row in rows {
        let Target::Builder {
            record_ids,
            used_since,
            made_since,
            made_by_others,
            full,
            ..
        } = &row.action.target
        else {
            continue;
        };
        let ids = select_builder_records(
            records,
            record_ids,
            (*used_since, *made_since, made_by_others),
            *full,
        );
        for record in records.iter().filter(|r| from_before(r, cutoff)) {
            if ids.contains(&record.id) && !left.contains(&record.id.as_str()) {
                left.push(&record.id);
            }
        }
    }
    if left.is_empty() {
        return Verdict::Gone;
    }
    let shown: Vec<&str> = left.iter().take(10).copied().collect();
    Verdict::Present {
        detail: format!(
            "{} tainted records still on `{builder}`: {}{}",
            left.len(),
            shown.join(", "),
            if left.len() > shown.len() {
                ", ..."
            } else {
                ""
            },
            builder = Term(builder)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, record_type: &str, used: Option<Micros>, parents: &[&str]) -> CacheRecord {
        CacheRecord {
            id: id.into(),
            record_type: record_type.into(),
            description: String::new(),
            mutable: false,
            in_use: false,
            shared: false,
            size: 1,
            parents: parents.iter().map(|&p| p.to_owned()).collect(),
            created_at: used,
            last_used_at: used,
            usage_count: 1,
        }
    }

    /// A prune since a time takes the named records, those built on them, every build record
    /// used since (or of unknown age: it may have been), and no cache mount.
    #[test]
    fn a_prune_since_a_time_takes_records_of_unknown_age() {
        let records = [
            record("named", "regular", Some(10), &[]),
            record("on-named", "regular", Some(11), &["named"]),
            record("old", "regular", Some(10), &[]),
            record("recent", "regular", Some(50), &[]),
            record("undated", "regular", None, &[]),
            record("mount", "exec.cachemount", Some(50), &[]),
        ];
        let named = ["named".to_owned()];
        let chosen = select_builder_records(&records, &named, (Some(40), None, &[]), false);
        assert_eq!(chosen, ["named", "on-named", "recent", "undated"]);
        let chosen = select_builder_records(&records, &named, (None, None, &[]), false);
        assert_eq!(chosen, ["named", "on-named"]);
        let every = select_builder_records(&records, &[], (Some(Micros::MIN), None, &[]), false);
        assert_eq!(every, ["named", "on-named", "old", "recent", "undated"]);
    }

    /// A prune of what was made since a time (a run whose record evidence is not believed
    /// began then) takes the records made since, or of unknown age, and not one made before
    /// and used since (a run cannot change a record another made before it), nor a pulled
    /// layer the builder made since (no taint there).
    #[test]
    fn a_prune_of_what_was_made_since_keeps_older_records_used_since() {
        let step = |id: &str, used: Option<Micros>, parents: &[&str]| CacheRecord {
            description: "[2/2] RUN make".into(),
            ..record(id, "regular", used, parents)
        };
        let mut reused = step("reused", Some(10), &[]);
        reused.last_used_at = Some(60);
        let records = [
            step("old", Some(10), &[]),
            reused,
            step("made", Some(50), &[]),
            step("on-old", Some(55), &["old"]),
            step("undated", None, &[]),
            record("mount", "exec.cachemount", Some(50), &[]),
            CacheRecord {
                description: "pulled from docker.io/library/alpine:3".into(),
                ..record("base", "regular", Some(50), &[])
            },
        ];
        let chosen = select_builder_records(&records, &[], (None, Some(40), &[]), false);
        assert_eq!(chosen, ["made", "on-old", "undated"]);
        // A believed run made `made`: it is not the doubted run's.
        let others = ["made".to_owned()];
        let chosen = select_builder_records(&records, &[], (None, Some(40), &others), false);
        assert_eq!(chosen, ["on-old", "undated"]);
        let used = select_builder_records(&records, &[], (Some(40), None, &[]), false);
        assert_eq!(used, ["reused", "made", "on-old", "undated", "base"]);
    }
}
