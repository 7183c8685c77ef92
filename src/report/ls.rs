//! `ls` output: a text table for people, JSON (`schema/ls.schema.json`) for tools. Pure.
//!
//! Every recorded name is escaped ([`Term`]); titles are shortened ([`Short`]). Names are shown
//! whole, as `trace` and `incident open` take them.

use serde_json::{Value, json};

use crate::report::escape::{Short, Term};
use crate::store::{BuilderItem, IncidentItem, MountItem, PipelineItem, RunItem};
use crate::time::{Micros, Rfc3339};

/// The JSON shape's version.
pub const SCHEMA_VERSION: u32 = 1;

/// One list, newest first as the store gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    Pipelines(Vec<PipelineItem>),
    Runs(Vec<RunItem>),
    Builders(Vec<BuilderItem>),
    Mounts(Vec<MountItem>),
    Incidents(Vec<IncidentItem>),
}

impl Listing {
    /// What is listed, as `ls` names it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pipelines(_) => "pipelines",
            Self::Runs(_) => "runs",
            Self::Builders(_) => "builders",
            Self::Mounts(_) => "mounts",
            Self::Incidents(_) => "incidents",
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Self::Pipelines(v) => v.len(),
            Self::Runs(v) => v.len(),
            Self::Builders(v) => v.len(),
            Self::Mounts(v) => v.len(),
            Self::Incidents(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the first `n` rows.
    pub fn truncate(&mut self, n: usize) {
        match self {
            Self::Pipelines(v) => v.truncate(n),
            Self::Runs(v) => v.truncate(n),
            Self::Builders(v) => v.truncate(n),
            Self::Mounts(v) => v.truncate(n),
            Self::Incidents(v) => v.truncate(n),
        }
    }
}

fn when(t: Option<Micros>) -> String {
    t.map_or_else(|| "-".to_owned(), |t| Rfc3339(t).to_string())
}

fn opt(value: Option<&str>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| Term(v).to_string())
}

/// The text table: a header, then one row per item, columns padded to their widest cell.
pub fn text(listing: &Listing) -> String {
    let (header, rows): (&[&str], Vec<Vec<String>>) = match listing {
        Listing::Pipelines(items) => (
            &[
                "PIPELINE",
                "PROJECT",
                "TRUST",
                "RUNS",
                "FIRST RUN",
                "LAST RUN",
            ],
            items
                .iter()
                .map(|p| {
                    vec![
                        Term(&p.name).to_string(),
                        opt(p.project.as_deref()),
                        opt(p.trust_ceiling.as_deref()),
                        p.runs.to_string(),
                        when(p.first_run),
                        when(p.last_run),
                    ]
                })
                .collect(),
        ),
        Listing::Runs(items) => (
            &[
                "RUN",
                "BUILDER",
                "STARTED",
                "FINISHED",
                "STATUS",
                "TRUST",
                "TRUNCATED",
            ],
            items
                .iter()
                .map(|r| {
                    vec![
                        Term(&r.name()).to_string(),
                        opt(r.builder.as_deref()),
                        Rfc3339(r.started_at).to_string(),
                        Rfc3339(r.finished_at).to_string(),
                        Term(&r.status).to_string(),
                        opt(r.trust_level.as_deref()),
                        if r.truncated { "yes" } else { "no" }.to_owned(),
                    ]
                })
                .collect(),
        ),
        Listing::Builders(items) => (
            &["BUILDER", "RUNS", "RECORDS", "LAST SEEN"],
            items
                .iter()
                .map(|b| {
                    vec![
                        Term(&b.name).to_string(),
                        b.runs.to_string(),
                        b.records.to_string(),
                        when(b.last_seen),
                    ]
                })
                .collect(),
        ),
        Listing::Mounts(items) => (
            &["MOUNT", "WRITERS", "READERS", "LAST WRITE", "LAST PURGE"],
            items
                .iter()
                .map(|m| {
                    vec![
                        Term(&m.name()).to_string(),
                        m.writers.to_string(),
                        m.readers.to_string(),
                        when(m.last_write),
                        when(m.last_purge),
                    ]
                })
                .collect(),
        ),
        Listing::Incidents(items) => (
            &[
                "ID", "STATUS", "OPENED", "DONE", "PENDING", "FAILED", "TITLE",
            ],
            items
                .iter()
                .map(|i| {
                    vec![
                        i.id.to_string(),
                        Term(&i.status).to_string(),
                        Rfc3339(i.opened_at).to_string(),
                        i.done.to_string(),
                        i.pending.to_string(),
                        i.failed.to_string(),
                        Short(&i.title).to_string(),
                    ]
                })
                .collect(),
        ),
    };
    if rows.is_empty() {
        return format!("no {}\n", listing.name());
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let last = row.len() - 1;
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

/// The JSON document: `limit` is `null` when none applied; `truncated` says more rows matched.
pub fn json(listing: &Listing, limit: Option<u64>, truncated: bool) -> Value {
    let t = |t: Option<Micros>| t.map(Rfc3339);
    let items: Vec<Value> = match listing {
        Listing::Pipelines(items) => items
            .iter()
            .map(|p| {
                json!({"name": p.name, "project": p.project, "trust_ceiling": p.trust_ceiling,
                       "runs": p.runs, "first_run": t(p.first_run), "last_run": t(p.last_run)})
            })
            .collect(),
        Listing::Runs(items) => items
            .iter()
            .map(|r| {
                json!({"name": r.name(), "pipeline": r.pipeline, "run": r.run, "step": r.step,
                       "builder": r.builder, "started_at": Rfc3339(r.started_at),
                       "finished_at": Rfc3339(r.finished_at), "status": r.status,
                       "trust_level": r.trust_level, "truncated": r.truncated})
            })
            .collect(),
        Listing::Builders(items) => items
            .iter()
            .map(|b| {
                json!({"name": b.name, "runs": b.runs, "records": b.records,
                       "last_seen": t(b.last_seen)})
            })
            .collect(),
        Listing::Mounts(items) => items
            .iter()
            .map(|m| {
                json!({"name": m.name(), "builder": m.builder, "namespace": m.namespace,
                       "id": m.id, "writers": m.writers, "readers": m.readers,
                       "last_write": t(m.last_write), "last_purge": t(m.last_purge)})
            })
            .collect(),
        Listing::Incidents(items) => items
            .iter()
            .map(|i| {
                json!({"id": i.id, "status": i.status, "opened_at": Rfc3339(i.opened_at),
                       "title": i.title, "actions": {"done": i.done, "pending": i.pending,
                       "failed": i.failed}})
            })
            .collect(),
    };
    json!({
        "schema_version": SCHEMA_VERSION,
        "list": listing.name(),
        "limit": limit,
        "truncated": truncated,
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recorded name cannot forge rows or terminal escapes in the table.
    #[test]
    fn names_are_escaped_in_the_table() {
        let listing = Listing::Builders(vec![BuilderItem {
            name: "evil\nci-1  9  9  2026-01-01T00:00:00Z\u{1b}[2J".into(),
            runs: 1,
            records: 0,
            last_seen: None,
        }]);
        let out = text(&listing);
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(
            out.contains("evil\\nci-1") && out.contains("\\x1b[2J"),
            "{out}"
        );
    }

    /// Columns line up, and an empty list says so.
    #[test]
    fn columns_are_padded_and_empty_lists_say_so() {
        let listing = Listing::Builders(vec![
            BuilderItem {
                name: "a".into(),
                runs: 10,
                records: 2,
                last_seen: Some(0),
            },
            BuilderItem {
                name: "long-builder".into(),
                runs: 1,
                records: 0,
                last_seen: None,
            },
        ]);
        assert_eq!(
            text(&listing),
            "BUILDER       RUNS  RECORDS  LAST SEEN\n\
             a             10    2        1970-01-01T00:00:00Z\n\
             long-builder  1     0        -\n"
        );
        assert_eq!(text(&Listing::Runs(vec![])), "no runs\n");
    }
}
