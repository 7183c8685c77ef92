//! The mount audit's result for people (text) and programs (JSON, `schema/audit-mounts.schema.json`;
//! SARIF through [`crate::audit::sarif::document_of`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use crate::audit::mounts::{Change, Diff, Writer};
use crate::audit::render::Reported;
use crate::report::count;
use crate::report::escape::Term;
use crate::time::{self, Micros};

pub const SCHEMA_VERSION: u32 = 1;

/// One mount as the audit saw it; `error` says why it could not be snapshotted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountResult {
    pub builder: String,
    pub mount_id: String,
    /// No recorded run used this id: found only in the builder's records.
    pub unknown: bool,
    pub files: usize,
    pub bytes: u64,
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    /// When the snapshot it was compared with was taken.
    pub previous: Option<Micros>,
    /// Files a checksum rule applies to that could not be read as it needs.
    pub unchecked: usize,
    /// What changed since the previous snapshot and who wrote it; `None` for a first snapshot.
    pub changes: Option<Changes>,
    pub error: Option<String>,
}

/// A mount's changes since its previous snapshot, attributed to the runs that wrote it then.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The first [`LISTED_CHANGES`] added, changed and removed paths, in path order.
    pub paths: Vec<(Vec<u8>, Change)>,
    /// How many more changed paths there are than listed.
    pub truncated: usize,
    /// The recorded runs that wrote the mount between the two snapshots.
    pub writers: Vec<Writer>,
}

/// How many changed paths a mount's JSON lists.
pub const LISTED_CHANGES: usize = 1000;

impl Changes {
    pub fn of(diff: &Diff, writers: &[Writer]) -> Self {
        let (paths, truncated) = diff.listed(LISTED_CHANGES);
        Self {
            paths,
            truncated,
            writers: writers.to_vec(),
        }
    }
}

/// A cache-mount record on a builder that matches no recorded mount id and names no id it
/// could be copied out by (Docker 20.10 writes only the target path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownRecord {
    pub builder: String,
    pub record: String,
    pub description: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MountsResult {
    pub started_at: Micros,
    pub duration_seconds: f64,
    pub baseline: bool,
    pub mounts: Vec<MountResult>,
    pub unknown_records: Vec<UnknownRecord>,
    /// Mounts under a namespace of their own (`BUILDKIT_CACHE_MOUNT_NS`), by builder and
    /// `namespace/id`, recorded or named by a builder's records: a helper build cannot read
    /// them, so the audit did not look inside. Sorted.
    pub not_audited: BTreeSet<(String, String)>,
    /// Sorted by code, then reference.
    pub findings: Vec<Reported>,
    pub seen_before: usize,
}

impl MountsResult {
    pub fn errors(&self) -> Vec<&str> {
        self.mounts
            .iter()
            .filter_map(|m| m.error.as_deref())
            .collect()
    }
}

#[derive(Debug, Serialize)]
struct Doc<'a> {
    schema_version: u32,
    started_at: String,
    duration_seconds: f64,
    baseline: bool,
    summary: Summary,
    mounts: Vec<MountDoc<'a>>,
    unknown_records: Vec<UnknownDoc<'a>>,
    not_audited: Vec<NotAuditedDoc<'a>>,
    findings: Vec<FindingDoc<'a>>,
}

#[derive(Debug, Serialize)]
struct NotAuditedDoc<'a> {
    builder: &'a str,
    mount: &'a str,
}

#[derive(Debug, Serialize)]
struct Summary {
    mounts: usize,
    files: usize,
    findings: usize,
    new: usize,
    seen_before: usize,
    failed_mounts: usize,
}

#[derive(Debug, Serialize)]
struct MountDoc<'a> {
    builder: &'a str,
    mount_id: &'a str,
    unknown: bool,
    files: usize,
    bytes: u64,
    added: usize,
    changed: usize,
    removed: usize,
    previous_snapshot: Option<String>,
    unchecked: usize,
    changes: Option<ChangesDoc<'a>>,
    error: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct ChangesDoc<'a> {
    paths: Vec<PathDoc>,
    truncated: usize,
    writers: Vec<WriterDoc<'a>>,
}

#[derive(Debug, Serialize)]
struct PathDoc {
    path: String,
    change: &'static str,
}

#[derive(Debug, Serialize)]
struct WriterDoc<'a> {
    run: &'a str,
    trust_level: Option<&'a str>,
    started_at: String,
    finished_at: String,
}

#[derive(Debug, Serialize)]
struct UnknownDoc<'a> {
    builder: &'a str,
    record: &'a str,
    description: &'a str,
}

#[derive(Debug, Serialize)]
struct FindingDoc<'a> {
    id: i64,
    code: &'static str,
    name: &'static str,
    severity: &'static str,
    new: bool,
    builder: &'a str,
    mount_id: &'a str,
    path: Option<&'a str>,
    digest: Option<&'a str>,
    first_seen: String,
    message: &'a str,
    detail: &'a BTreeMap<String, String>,
}

pub fn json(result: &MountsResult) -> serde_json::Value {
    let doc = Doc {
        schema_version: SCHEMA_VERSION,
        started_at: time::format(result.started_at),
        duration_seconds: (result.duration_seconds * 1000.0).round() / 1000.0,
        baseline: result.baseline,
        summary: Summary {
            mounts: result.mounts.len(),
            files: result.mounts.iter().map(|m| m.files).sum(),
            findings: result.findings.len(),
            new: result.findings.iter().filter(|f| f.new).count(),
            seen_before: result.seen_before,
            failed_mounts: result.errors().len(),
        },
        mounts: result
            .mounts
            .iter()
            .map(|m| MountDoc {
                builder: &m.builder,
                mount_id: &m.mount_id,
                unknown: m.unknown,
                files: m.files,
                bytes: m.bytes,
                added: m.added,
                changed: m.changed,
                removed: m.removed,
                previous_snapshot: m.previous.map(time::format),
                unchecked: m.unchecked,
                changes: m.changes.as_ref().map(|c| ChangesDoc {
                    paths: c
                        .paths
                        .iter()
                        .map(|(p, change)| PathDoc {
                            path: String::from_utf8_lossy(p).into_owned(),
                            change: change.as_str(),
                        })
                        .collect(),
                    truncated: c.truncated,
                    writers: c
                        .writers
                        .iter()
                        .map(|w| WriterDoc {
                            run: &w.run,
                            trust_level: w.trust_level.as_deref(),
                            started_at: time::format(w.started_at),
                            finished_at: time::format(w.finished_at),
                        })
                        .collect(),
                }),
                error: m.error.as_deref(),
            })
            .collect(),
        unknown_records: result
            .unknown_records
            .iter()
            .map(|u| UnknownDoc {
                builder: &u.builder,
                record: &u.record,
                description: &u.description,
            })
            .collect(),
        not_audited: result
            .not_audited
            .iter()
            .map(|(builder, mount)| NotAuditedDoc { builder, mount })
            .collect(),
        findings: result
            .findings
            .iter()
            .map(|r| {
                let f = &r.finding;
                FindingDoc {
                    id: r.id,
                    code: f.code.id(),
                    name: f.code.name(),
                    severity: f.code.severity().as_str(),
                    new: r.new,
                    builder: &f.registry,
                    mount_id: &f.repository,
                    path: f.tag.as_deref(),
                    digest: f.digest.as_deref(),
                    first_seen: time::format(f.first_seen),
                    message: &f.message,
                    detail: &f.detail,
                }
            })
            .collect(),
    };
    serde_json::to_value(doc).unwrap_or_default()
}

/// The findings, one block each, then a line per mount that changed since its previous
/// snapshot, then the unknown records. Paths, ids and run names come from builders and the
/// store: shown escaped ([`Term`]).
pub fn text(result: &MountsResult) -> String {
    let mut out = String::new();
    for r in &result.findings {
        crate::audit::render::write_finding(&mut out, r);
    }
    for m in &result.mounts {
        let Some(c) = m
            .changes
            .as_ref()
            .filter(|_| m.added + m.changed + m.removed > 0)
        else {
            continue;
        };
        let writers = if c.writers.is_empty() {
            "no recorded run".to_owned()
        } else {
            c.writers
                .iter()
                .map(|w| {
                    format!(
                        "{} ({})",
                        w.run,
                        w.trust_level.as_deref().unwrap_or("no trust level")
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "changed mount {}:{}: {} added, {} changed, {} removed since {}, written by {}",
            Term(&m.builder),
            Term(&m.mount_id),
            m.added,
            m.changed,
            m.removed,
            m.previous.map(time::format).unwrap_or_default(),
            Term(&writers)
        );
    }
    for u in &result.unknown_records {
        let _ = writeln!(
            out,
            "unknown mount on {}: record {} ({}): no recorded run used it",
            Term(&u.builder),
            Term(&u.record),
            Term(&u.description)
        );
    }
    for (builder, mount) in &result.not_audited {
        let _ = writeln!(
            out,
            "not audited on {}: mount {} is under a namespace of its own (BUILDKIT_CACHE_MOUNT_NS), which a helper build cannot read",
            Term(builder),
            Term(mount)
        );
    }
    out
}

/// One status line for stderr.
pub fn summary_line(result: &MountsResult) -> String {
    let files: usize = result.mounts.iter().map(|m| m.files).sum();
    let new = result.findings.iter().filter(|f| f.new).count();
    let mut line = format!(
        "{} {}, {} in {:.1}s: ",
        if result.baseline {
            "baseline of"
        } else {
            "audited"
        },
        count(result.mounts.len(), "mount", "mounts"),
        count(files, "file", "files"),
        result.duration_seconds
    );
    if result.findings.is_empty() {
        line.push_str("no new findings");
    } else {
        line.push_str(&format!(
            "{} ({new} new)",
            count(result.findings.len(), "finding", "findings")
        ));
    }
    if result.seen_before > 0 {
        line.push_str(&format!(
            ", {} reported by earlier audits",
            result.seen_before
        ));
    }
    let failed = result.errors().len();
    if failed > 0 {
        line.push_str(&format!(
            ", {} not snapshotted",
            count(failed, "mount", "mounts")
        ));
    }
    if let Some(first) = result.findings.first() {
        line.push_str(&format!(
            "; open an incident from one: cachewarden incident open --from-audit {}",
            first.id
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::finding::{Code, Finding};

    /// A changed mount's JSON lists its paths (bounded, the rest counted) and the writers with
    /// their trust levels; its text line names the counts and writers, escaped.
    #[test]
    fn changed_mounts_list_paths_and_writers() {
        let mut diff = Diff::default();
        for i in 0..(LISTED_CHANGES + 5) {
            diff.added.push(format!("f{i:05}").into_bytes());
        }
        diff.removed.push(b"gone\x1b[2J".to_vec());
        let writers = vec![Writer {
            run: "fork-pr/1/build\x1b[2J".into(),
            trust_level: Some("untrusted".into()),
            started_at: 0,
            finished_at: 1,
        }];
        let result = MountsResult {
            mounts: vec![MountResult {
                builder: "ci".into(),
                mount_id: "pip".into(),
                added: diff.added.len(),
                removed: 1,
                previous: Some(0),
                changes: Some(Changes::of(&diff, &writers)),
                ..MountResult::default()
            }],
            ..MountsResult::default()
        };
        let doc = json(&result);
        let changes = &doc["mounts"][0]["changes"];
        assert_eq!(changes["paths"].as_array().unwrap().len(), LISTED_CHANGES);
        assert_eq!(changes["truncated"], 6);
        assert_eq!(changes["paths"][0]["path"], "f00000");
        assert_eq!(changes["paths"][0]["change"], "added");
        assert_eq!(changes["writers"][0]["trust_level"], "untrusted");
        let shown = text(&result);
        assert!(
            shown.starts_with("changed mount ci:pip: 1005 added, 0 changed, 1 removed since "),
            "{shown}"
        );
        assert!(
            shown.contains("(untrusted)") && !shown.contains('\x1b'),
            "{shown}"
        );
        // A first snapshot has nothing to attribute.
        let first = MountsResult {
            mounts: vec![MountResult::default()],
            ..MountsResult::default()
        };
        assert!(json(&first)["mounts"][0]["changes"].is_null());
        assert!(text(&first).is_empty());
    }

    /// A hostile path in a finding is shown escaped, never as terminal control bytes.
    #[test]
    fn hostile_paths_are_escaped() {
        let result = MountsResult {
            findings: vec![Reported {
                id: 3,
                new: true,
                finding: Finding {
                    code: Code::NewStartupHook,
                    registry: "ci".into(),
                    repository: "pip".into(),
                    tag: Some("a\x1b[2Jb/sitecustomize.py".into()),
                    digest: None,
                    first_seen: 0,
                    message: "new startup hook `a\x1b[2Jb/sitecustomize.py`".into(),
                    detail: BTreeMap::new(),
                },
            }],
            ..MountsResult::default()
        };
        let text = text(&result);
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(text.contains("CW012 new-startup-hook [error] finding 3: ci:pip a"));
    }
}
