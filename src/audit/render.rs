//! The audit result for people (text) and programs (JSON, `schema/audit.schema.json`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::report::escape::{Line, Term};
use crate::time::{self, Micros};

use super::finding::Finding;

pub const SCHEMA_VERSION: u32 = 1;

/// A finding as one audit reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    /// The stored finding's id: `incident open --from-audit ID`.
    pub id: i64,
    /// First reported by this audit.
    pub new: bool,
    pub finding: Finding,
}

/// One audited repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepositoryResult {
    pub name: String,
    pub tags: usize,
    pub caches: usize,
}

/// One audited registry; `error` says why it could not be audited (nothing of it is reported).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryResult {
    pub host: String,
    pub repositories: Vec<RepositoryResult>,
    pub error: Option<String>,
}

/// Everything one audit found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditResult {
    pub started_at: Micros,
    pub duration_seconds: f64,
    pub registries: Vec<RegistryResult>,
    /// The findings this audit reports, sorted by code, then reference.
    pub findings: Vec<Reported>,
    /// Findings earlier audits reported that are still present and not repeated.
    pub seen_before: usize,
}

impl AuditResult {
    pub fn tags(&self) -> usize {
        self.registries
            .iter()
            .flat_map(|r| &r.repositories)
            .map(|r| r.tags)
            .sum()
    }

    pub fn caches(&self) -> usize {
        self.registries
            .iter()
            .flat_map(|r| &r.repositories)
            .map(|r| r.caches)
            .sum()
    }

    pub fn errors(&self) -> usize {
        self.registries.iter().filter(|r| r.error.is_some()).count()
    }
}

#[derive(Debug, Serialize)]
pub struct AuditDoc<'a> {
    pub schema_version: u32,
    pub started_at: String,
    pub duration_seconds: f64,
    pub summary: SummaryDoc,
    pub registries: Vec<RegistryDoc<'a>>,
    pub findings: Vec<FindingDoc<'a>>,
}

#[derive(Debug, Serialize)]
pub struct SummaryDoc {
    pub repositories: usize,
    pub tags: usize,
    pub caches: usize,
    pub findings: usize,
    pub new: usize,
    pub seen_before: usize,
    pub unreachable_registries: usize,
}

#[derive(Debug, Serialize)]
pub struct RegistryDoc<'a> {
    pub host: &'a str,
    pub error: Option<&'a str>,
    pub repositories: Vec<RepositoryDoc<'a>>,
}

#[derive(Debug, Serialize)]
pub struct RepositoryDoc<'a> {
    pub name: &'a str,
    pub tags: usize,
    pub caches: usize,
}

#[derive(Debug, Serialize)]
pub struct FindingDoc<'a> {
    pub id: i64,
    pub code: &'static str,
    pub name: &'static str,
    pub severity: &'static str,
    pub new: bool,
    pub registry: &'a str,
    pub repository: &'a str,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
    pub reference: String,
    pub first_seen: String,
    pub message: &'a str,
    pub detail: &'a BTreeMap<String, String>,
}

pub fn document(result: &AuditResult) -> AuditDoc<'_> {
    let mut registries: Vec<RegistryDoc<'_>> = result
        .registries
        .iter()
        .map(|r| {
            let mut repositories: Vec<RepositoryDoc<'_>> = r
                .repositories
                .iter()
                .map(|repo| RepositoryDoc {
                    name: &repo.name,
                    tags: repo.tags,
                    caches: repo.caches,
                })
                .collect();
            repositories.sort_by(|a, b| a.name.cmp(b.name));
            RegistryDoc {
                host: &r.host,
                error: r.error.as_deref(),
                repositories,
            }
        })
        .collect();
    registries.sort_by(|a, b| a.host.cmp(b.host));
    AuditDoc {
        schema_version: SCHEMA_VERSION,
        started_at: time::format(result.started_at),
        duration_seconds: (result.duration_seconds * 1000.0).round() / 1000.0,
        summary: SummaryDoc {
            repositories: result.registries.iter().map(|r| r.repositories.len()).sum(),
            tags: result.tags(),
            caches: result.caches(),
            findings: result.findings.len(),
            new: result.findings.iter().filter(|f| f.new).count(),
            seen_before: result.seen_before,
            unreachable_registries: result.errors(),
        },
        registries,
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
                    registry: &f.registry,
                    repository: &f.repository,
                    tag: f.tag.as_deref(),
                    digest: f.digest.as_deref(),
                    reference: f.reference(),
                    first_seen: time::format(f.first_seen),
                    message: &f.message,
                    detail: &f.detail,
                }
            })
            .collect(),
    }
}

/// A finding's first two lines as every audit's text shows them: code, severity, id and
/// reference escaped ([`Term`]), then its message, whose names are quoted
/// ([`crate::report::escape::Quoted`]), on one line ([`Line`]).
pub fn write_finding(out: &mut String, r: &Reported) {
    let f = &r.finding;
    let _ = writeln!(
        out,
        "{} {} [{}] finding {}{}: {}",
        f.code.id(),
        f.code.name(),
        f.code.severity().as_str(),
        r.id,
        if r.new { "" } else { " (seen before)" },
        Term(&f.reference())
    );
    let _ = writeln!(out, "    {}", Line(&f.message));
}

/// The findings, one block each; an empty string when there are none. References and
/// messages carry names from registries and the store, shown escaped ([`Term`]).
pub fn text(result: &AuditResult) -> String {
    let mut out = String::new();
    for r in &result.findings {
        write_finding(&mut out, r);
        let f = &r.finding;
        let _ = writeln!(out, "    first seen {}", time::format(f.first_seen));
    }
    out
}

/// One status line for stderr.
pub fn summary_line(result: &AuditResult) -> String {
    let repositories: usize = result.registries.iter().map(|r| r.repositories.len()).sum();
    let new = result.findings.iter().filter(|f| f.new).count();
    let mut line = format!(
        "audited {}, {}, {} ({}) in {:.1}s: ",
        crate::report::count(result.registries.len(), "registry", "registries"),
        crate::report::count(repositories, "repository", "repositories"),
        crate::report::count(result.tags(), "tag", "tags"),
        crate::report::count(result.caches(), "cache", "caches"),
        result.duration_seconds
    );
    if result.findings.is_empty() {
        line.push_str("no new findings");
    } else {
        line.push_str(&format!(
            "{} ({new} new)",
            crate::report::count(result.findings.len(), "finding", "findings")
        ));
    }
    if result.seen_before > 0 {
        line.push_str(&format!(
            ", {} reported by earlier audits",
            result.seen_before
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
