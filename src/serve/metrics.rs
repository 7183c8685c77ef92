//! The collector's counters, in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Debug, Default)]
pub struct Metrics {
    accepted: AtomicU64,
    duplicates: AtomicU64,
    late: AtomicU64,
    time_suspect: AtomicU64,
    not_kept: AtomicU64,
    refused: Mutex<BTreeMap<&'static str, u64>>,
    overrides_accepted: AtomicU64,
    overrides_refused: Mutex<BTreeMap<&'static str, u64>>,
    latency: Mutex<Histogram>,
}

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    pub fn accepted(&self, created: bool, late: bool, time_suspect: bool) {
        let counter = if created {
            &self.accepted
        } else {
            &self.duplicates
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if created && late {
            self.late.fetch_add(1, Ordering::Relaxed);
        }
        if created && time_suspect {
            self.time_suspect.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A refusal that was not kept as evidence (over the minute's allowance, or not kept by
    /// design: rate limits, store trouble).
    pub fn not_kept(&self) {
        self.not_kept.fetch_add(1, Ordering::Relaxed);
    }

    pub fn refused(&self, code: &'static str) {
        *self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(code)
            .or_default() += 1;
    }

    /// An overrides request whose overrides were kept.
    pub fn override_accepted(&self) {
        self.overrides_accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// An overrides request refused (also counted among all refused requests).
    pub fn override_refused(&self, code: &'static str) {
        *self
            .overrides_refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(code)
            .or_default() += 1;
    }

    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let mut h = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            &mut out,
            "cachewarden_runs_accepted_total",
            "Runs stored.",
            self.accepted.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "cachewarden_runs_duplicate_total",
            "Runs sent again with the same facts.",
            self.duplicates.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "cachewarden_runs_late_total",
            "Runs stored whose token had expired within the grace.",
            self.late.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "cachewarden_runs_time_suspect_total",
            "Runs stored whose times cannot be believed.",
            self.time_suspect.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "cachewarden_refusals_not_kept_total",
            "Refused requests not kept as evidence in the store.",
            self.not_kept.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP cachewarden_requests_refused_total Requests refused, by reason.\n\
             # TYPE cachewarden_requests_refused_total counter"
        );
        for (code, n) in self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "cachewarden_requests_refused_total{{reason=\"{code}\"}} {n}"
            );
        }
        counter(
            &mut out,
            "cachewarden_overrides_accepted_total",
            "Overrides requests kept: builds that went ahead from tainted inputs.",
            self.overrides_accepted.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP cachewarden_overrides_refused_total Overrides requests refused, by reason.\n\
             # TYPE cachewarden_overrides_refused_total counter"
        );
        for (code, n) in self
            .overrides_refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "cachewarden_overrides_refused_total{{reason=\"{code}\"}} {n}"
            );
        }
        let h = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let name = "cachewarden_run_request_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to answer POST /v1/runs.\n# TYPE {name} histogram"
        );
        for (bound, n) in BUCKETS.iter().zip(h.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", h.sum, h.count);
        out
    }
}
