//! Sweep metrics in the Prometheus text format that node_exporter's textfile collector reads.
//! Rendering only; the command writes the file atomically.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::plan::ActionKind;
use crate::time::Micros;

/// The kinds of action a sweep plans.
const SWEEP_KINDS: [ActionKind; 3] = [
    ActionKind::DeleteManifest,
    ActionKind::PruneMount,
    ActionKind::PruneBuilder,
];

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepMetrics {
    /// Actions by kind and journal state (`done`, `failed`, `skipped`; `planned` in a dry run).
    pub actions: BTreeMap<(ActionKind, String), u64>,
    pub failures: u64,
    /// Bytes the builders reported freed. Registry deletes free space only at the registry's
    /// garbage collection and count 0.
    pub bytes_reclaimed: i64,
    pub duration_seconds: f64,
    pub finished_at: Micros,
    pub dry_run: bool,
}

impl SweepMetrics {
    pub fn count(&mut self, kind: ActionKind, state: &str) {
        *self.actions.entry((kind, state.to_owned())).or_default() += 1;
    }
}

/// The textfile: every sweep kind and state appears, zero or not, so alerts see a series.
pub fn render(metrics: &SweepMetrics) -> String {
    let mut counts = metrics.actions.clone();
    let states: &[&str] = if metrics.dry_run {
        &["planned", "skipped"]
    } else {
        &["done", "failed", "skipped"]
    };
    for kind in SWEEP_KINDS {
        for state in states {
            counts.entry((kind, (*state).to_owned())).or_default();
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP cachewarden_sweep_actions_total Actions of the last sweep by kind and final state."
    );
    let _ = writeln!(out, "# TYPE cachewarden_sweep_actions_total counter");
    for ((kind, state), n) in &counts {
        let _ = writeln!(
            out,
            "cachewarden_sweep_actions_total{{kind=\"{}\",state=\"{}\"}} {n}",
            kind.as_str(),
            escape(state)
        );
    }
    let _ = writeln!(
        out,
        "# HELP cachewarden_sweep_failures_total Failed actions of the last sweep."
    );
    let _ = writeln!(out, "# TYPE cachewarden_sweep_failures_total counter");
    let _ = writeln!(out, "cachewarden_sweep_failures_total {}", metrics.failures);
    let _ = writeln!(
        out,
        "# HELP cachewarden_sweep_bytes_reclaimed Bytes the builders freed in the last sweep (registry space returns at its garbage collection)."
    );
    let _ = writeln!(out, "# TYPE cachewarden_sweep_bytes_reclaimed gauge");
    let _ = writeln!(
        out,
        "cachewarden_sweep_bytes_reclaimed {}",
        metrics.bytes_reclaimed
    );
    let _ = writeln!(
        out,
        "# HELP cachewarden_sweep_duration_seconds Wall time of the last sweep."
    );
    let _ = writeln!(out, "# TYPE cachewarden_sweep_duration_seconds gauge");
    let _ = writeln!(
        out,
        "cachewarden_sweep_duration_seconds {:.3}",
        metrics.duration_seconds
    );
    let _ = writeln!(
        out,
        "# HELP cachewarden_sweep_last_run_timestamp_seconds When the last sweep finished."
    );
    let _ = writeln!(
        out,
        "# TYPE cachewarden_sweep_last_run_timestamp_seconds gauge"
    );
    let _ = writeln!(
        out,
        "cachewarden_sweep_last_run_timestamp_seconds {}",
        metrics.finished_at.div_euclid(1_000_000)
    );
    let _ = writeln!(
        out,
        "# HELP cachewarden_sweep_dry_run 1 when the last sweep only planned."
    );
    let _ = writeln!(out, "# TYPE cachewarden_sweep_dry_run gauge");
    let _ = writeln!(
        out,
        "cachewarden_sweep_dry_run {}",
        u8::from(metrics.dry_run)
    );
    out
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind and state has a series, zero or not.
    #[test]
    fn renders_every_kind_and_state() {
        let mut m = SweepMetrics {
            failures: 1,
            bytes_reclaimed: 2048,
            duration_seconds: 1.5,
            finished_at: 1_700_000_000_500_000,
            ..SweepMetrics::default()
        };
        m.count(ActionKind::DeleteManifest, "done");
        m.count(ActionKind::DeleteManifest, "done");
        m.count(ActionKind::PruneBuilder, "failed");
        let text = render(&m);
        assert!(
            text.contains(
                "cachewarden_sweep_actions_total{kind=\"delete-manifest\",state=\"done\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "cachewarden_sweep_actions_total{kind=\"prune-mount\",state=\"skipped\"} 0\n"
            ),
            "{text}"
        );
        assert!(text.contains("cachewarden_sweep_failures_total 1\n"));
        assert!(text.contains("cachewarden_sweep_bytes_reclaimed 2048\n"));
        assert!(text.contains("cachewarden_sweep_duration_seconds 1.500\n"));
        assert!(text.contains("cachewarden_sweep_last_run_timestamp_seconds 1700000000\n"));
        assert!(!text.contains("state=\"planned\""), "{text}");
    }
}
