//! `cachewarden audit builds`: per-step cache hits judged against who created the records that
//! served them, builds no hook recorded, and hit rates that moved; hit rates per pipeline and
//! builder to a Prometheus textfile.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;

use crate::ExitStatus;
use crate::audit::builds::{self, BuildsResult, Input};
use crate::audit::finding::Code;
use crate::cli::{AuditBuildsArgs, AuditFormat};
use crate::commands::{open_existing_store, write_stdout};
use crate::config::Config;
use crate::printer::Printer;
use crate::time::{self, Bound};

pub fn builds(
    args: &AuditBuildsArgs,
    db: &Path,
    config: &Config,
    printer: Printer,
) -> Result<ExitStatus> {
    let started_at = time::now();
    let clock = Instant::now();
    let since = args
        .since
        .as_deref()
        .map(|v| time::parse_flag(v, "--since", Bound::Lower, started_at))
        .transpose()?;
    let mut store = open_existing_store(db)?;
    let steps = store.step_rows()?;
    let history = store.history_step_counts()?;
    let unrecorded = store.unrecorded_builds(since)?;
    let rank = |level: &str| config.trust_rank(level);
    let findings = builds::findings(
        &Input {
            steps: &steps,
            history: &history,
            unrecorded: &unrecorded,
            since,
            hit_rate_change: config.audit.hit_rate_change(),
        },
        &rank,
    );
    let reported = store.save_build_audit(&findings, time::now())?;
    let new_ids: Vec<i64> = reported.iter().filter(|r| r.new).map(|r| r.id).collect();
    let mut result = BuildsResult {
        started_at,
        since,
        steps: steps
            .iter()
            .filter(|s| since.is_none_or(|t| s.at >= t))
            .count(),
        unrecorded: unrecorded.len(),
        rates: builds::hit_rates(&steps, &history, since),
        unattributed: builds::unattributed(&steps, since),
        seen_before: if args.all {
            0
        } else {
            reported.iter().filter(|r| !r.new).count()
        },
        findings: reported.into_iter().filter(|r| args.all || r.new).collect(),
    };
    result.findings.sort_by_cached_key(|r| {
        (
            r.finding.code,
            r.finding.reference(),
            r.finding.fingerprint(),
        )
    });
    let text = match args.format {
        AuditFormat::Text => builds::text(&result),
        AuditFormat::Json => format!(
            "{}\n",
            crate::report::json::to_string_pretty(&builds::json(&result))?
        ),
        AuditFormat::Sarif => format!(
            "{}\n",
            crate::report::json::to_string_pretty(&crate::audit::sarif::document_of(
                &Code::BUILDS,
                &result.findings,
                result.started_at,
                &[],
            ))?
        ),
    };
    let delivered = (|| -> Result<()> {
        if let Some(path) = &args.metrics_file {
            // node_exporter reads `*.prom` files at any moment: written whole (`output`).
            super::output::write_file(
                path,
                db,
                builds::metrics(&result, clock.elapsed().as_secs_f64()).as_bytes(),
            )?;
        }
        write_stdout(&text)?;
        Ok(())
    })();
    if let Err(err) = delivered {
        // Not reported, so not seen: the next audit reports them.
        let _ = store.forget_new_findings(&new_ids, None, &[]);
        return Err(err);
    }
    printer.status(builds::summary_line(&result));
    Ok(if result.findings.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::Findings
    })
}

/// What `incident open --from-audit` seeds from a stored build finding: for CW006 the
/// lower-trust run that created the record, for CW007 the run that was served from it.
pub(crate) fn incident_runs(finding: &crate::store::StoredFinding) -> Result<Vec<String>> {
    let key = match finding.code.as_str() {
        "CW006" => "creator",
        "CW007" => "run",
        code => {
            return Err(crate::error::InputError::invalid(format!(
                "audit finding {} ({code}) names no build to seed an incident from: only CW006 and CW007 do",
                finding.id
            ))
            .into());
        }
    };
    Ok(finding.detail.get(key).cloned().into_iter().collect())
}
