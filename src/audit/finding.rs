//! Audit findings: data with stable codes, never Rust errors.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::report::escape::Quoted;
use crate::time::Micros;

/// How much a finding matters. SARIF levels use the same words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

/// A finding's kind. The id and name of each are stable: tools and suppressions key on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Code {
    UnrecordedCachePush,
    TrustBreach,
    TagMovedUnrecorded,
    UnverifiableCachePush,
    HeldTainted,
    UnrecordedBuild,
    CrossTrustHit,
    UnknownRecordHit,
    HitRateChange,
    ContentAddressMismatch,
    NewStartupHook,
    LowerTrustChange,
}

impl Code {
    pub const ALL: [Code; 12] = [
        Self::UnrecordedCachePush,
        Self::TrustBreach,
        Self::TagMovedUnrecorded,
        Self::UnverifiableCachePush,
        Self::HeldTainted,
        Self::UnrecordedBuild,
        Self::CrossTrustHit,
        Self::UnknownRecordHit,
        Self::HitRateChange,
        Self::ContentAddressMismatch,
        Self::NewStartupHook,
        Self::LowerTrustChange,
    ];

    /// The rules of `audit registry`.
    pub const REGISTRY: [Code; 5] = [
        Self::UnrecordedCachePush,
        Self::TrustBreach,
        Self::TagMovedUnrecorded,
        Self::UnverifiableCachePush,
        Self::HeldTainted,
    ];

    /// The rules of `audit mounts`.
    pub const MOUNTS: [Code; 3] = [
        Self::ContentAddressMismatch,
        Self::NewStartupHook,
        Self::LowerTrustChange,
    ];

    /// The rules of `audit builds`.
    pub const BUILDS: [Code; 4] = [
        Self::UnrecordedBuild,
        Self::CrossTrustHit,
        Self::UnknownRecordHit,
        Self::HitRateChange,
    ];

    /// A finding about builds: its `registry` is the builder, its `repository` the pipeline,
    /// its `tag` the step, its `digest` the builder record (or build ref).
    pub fn is_build(self) -> bool {
        Self::BUILDS.contains(&self)
    }

    /// A finding about a cache mount: its `registry` is the builder, its `repository` the
    /// mount id, its `tag` a file's path.
    pub fn is_mount(self) -> bool {
        Self::MOUNTS.contains(&self)
    }

    pub fn id(self) -> &'static str {
        match self {
            Self::UnrecordedCachePush => "CW001",
            Self::TrustBreach => "CW002",
            Self::TagMovedUnrecorded => "CW003",
            Self::UnverifiableCachePush => "CW004",
            Self::HeldTainted => "CW009",
            Self::UnrecordedBuild => "CW005",
            Self::CrossTrustHit => "CW006",
            Self::UnknownRecordHit => "CW007",
            Self::HitRateChange => "CW008",
            Self::ContentAddressMismatch => "CW011",
            Self::NewStartupHook => "CW012",
            Self::LowerTrustChange => "CW013",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::UnrecordedCachePush => "unrecorded-cache-push",
            Self::TrustBreach => "trust-breach",
            Self::TagMovedUnrecorded => "tag-moved-unrecorded",
            Self::UnverifiableCachePush => "unverifiable-cache-push",
            Self::HeldTainted => "held-tainted",
            Self::UnrecordedBuild => "unrecorded-build",
            Self::CrossTrustHit => "cross-trust-cache-hit",
            Self::UnknownRecordHit => "hit-on-unrecorded-record",
            Self::HitRateChange => "hit-rate-change",
            Self::ContentAddressMismatch => "content-address-mismatch",
            Self::NewStartupHook => "new-startup-hook",
            Self::LowerTrustChange => "lower-trust-change",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            Self::UnrecordedCachePush
            | Self::TrustBreach
            | Self::TagMovedUnrecorded
            | Self::HeldTainted
            | Self::CrossTrustHit
            | Self::ContentAddressMismatch
            | Self::NewStartupHook
            | Self::LowerTrustChange => Severity::Error,
            Self::UnverifiableCachePush
            | Self::UnrecordedBuild
            | Self::UnknownRecordHit
            | Self::HitRateChange => Severity::Warning,
        }
    }

    /// One sentence: what the rule reports.
    pub fn summary(self) -> &'static str {
        match self {
            Self::UnrecordedCachePush => "A cache in the registry that no recorded run exported.",
            Self::TrustBreach => {
                "A cache exported by a lower-trust run was imported by a higher-trust run."
            }
            Self::TagMovedUnrecorded => {
                "A cache tag moved to a digest that no recorded run exported to that tag."
            }
            Self::UnverifiableCachePush => {
                "A cache tag points at a digest that cannot be matched to a run: the exports to it were recorded without a digest."
            }
            Self::HeldTainted => {
                "A tag points at a manifest that an open incident holds tainted, wherever it was recorded."
            }
            Self::UnrecordedBuild => "A build in a builder's history that no hook recorded.",
            Self::CrossTrustHit => {
                "A step of a higher-trust run was served from a builder record a lower-trust run created."
            }
            Self::UnknownRecordHit => {
                "A step was served from a builder record that no recorded run created."
            }
            Self::HitRateChange => {
                "A pipeline step's cache hit rate moved beyond `[audit] hit_rate_change` against its own history."
            }
            Self::ContentAddressMismatch => {
                "A file in a content-addressed package cache does not match its own address or checksum."
            }
            Self::NewStartupHook => {
                "A new startup hook in a cache mount: sitecustomize.py, usercustomize.py, a .pth file or npm install scripts."
            }
            Self::LowerTrustChange => {
                "Files in a cache mount changed while a lower-trust run than its earlier writers wrote it."
            }
        }
    }

    /// What to do about it.
    pub fn help(self) -> &'static str {
        match self {
            Self::UnrecordedCachePush => {
                "Someone pushed a cache outside the recorded pipelines (stolen credentials, a pipeline that skipped its hook, \
                 or a hook that failed). Find who holds push access; `cachewarden incident open --from-audit ID` traces \
                 every build that read it and plans its removal."
            }
            Self::TrustBreach => {
                "Untrusted work reached a trusted build through the cache. Give each trust level its own cache \
                 repositories (or tags the lower level cannot import), then open an incident from the finding."
            }
            Self::TagMovedUnrecorded => {
                "The tag was repointed since the last audit without a recorded export to it: a retag or an unrecorded \
                 push. Check the registry's audit log for who moved it."
            }
            Self::UnverifiableCachePush => {
                "Record cache exports with their digest (`record --resolve` or `--metadata-file`) so the audit can \
                 match what the registry holds to the run that pushed it."
            }
            Self::HeldTainted => {
                "A copy of tainted content where the incident did not record it (pushed or copied to another \
                 repository, or pushed back after the purge): `incident verify` checks only where the store \
                 recorded it. Delete it by digest, and find who pushed it."
            }
            Self::UnrecordedBuild => {
                "Something built on the builder without the hook: a job that skipped `wrap`, or someone with \
                 access to the builder. Whatever it left in the cache is unattributed; find who built it."
            }
            Self::CrossTrustHit => {
                "Untrusted work reached a trusted build through the builder's layer cache. Give each trust level its \
                 own builder, then `cachewarden incident open --from-audit ID`: it seeds the lower-trust run."
            }
            Self::UnknownRecordHit => {
                "The record was made by a build no hook recorded, or before recording began. \
                 `cachewarden incident open --from-audit ID` seeds the run that used it."
            }
            Self::HitRateChange => {
                "Unexpected cache behaviour can be the first sign of a poisoned cache: a step that always ran now \
                 comes from cache, or the reverse. Check which runs wrote the builder's cache since."
            }
            Self::ContentAddressMismatch => {
                "Package managers trust these caches by address: a mismatch is tampering or corruption. \
                 `cachewarden incident open --from-audit ID` traces every build that read the mount and plans its purge."
            }
            Self::NewStartupHook => {
                "Python runs these at start-up in every image that installs them. Check who wrote it (the finding \
                 names the runs), then open an incident from the finding."
            }
            Self::LowerTrustChange => {
                "Give each trust level its own cache mount ids (or builders), then open an incident from the \
                 finding: it seeds the mount and the lower-trust run."
            }
        }
    }

    pub fn parse(id: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.id() == id || c.name() == id)
    }
}

/// One finding about one registry repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub code: Code,
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
    /// When what it reports was first seen: by an audit in the registry, or the first
    /// recorded import that breached trust.
    pub first_seen: Micros,
    pub message: String,
    /// Facts behind the finding, by stable key.
    pub detail: BTreeMap<String, String>,
}

impl Finding {
    /// What makes this finding the same one in a later audit: a finding already stored under
    /// its fingerprint is not new.
    pub fn fingerprint(&self) -> String {
        // Every field but the code is a recorded value: each is written so that it cannot hold
        // the separators around it (see [`fingerprint_field`]), and two findings about other
        // facts never share a fingerprint.
        fn field<'v>(value: Option<&'v str>, separators: &str) -> std::borrow::Cow<'v, str> {
            fingerprint_field(value.unwrap_or(""), separators)
        }
        let registry = Some(self.registry.as_str());
        let repository = Some(self.repository.as_str());
        let digest = self.digest.as_deref();
        let tag = self.tag.as_deref();
        let detail = |key: &str| field(self.detail.get(key).map(String::as_str), "<>");
        let code = self.code.id();
        if self.code.is_build() {
            return match self.code {
                Code::UnrecordedBuild => {
                    format!("{code} {} {}", field(registry, ""), field(digest, ""))
                }
                Code::CrossTrustHit => format!(
                    "{code} {} {} {} < {}",
                    field(registry, ""),
                    field(digest, ""),
                    detail("run"),
                    detail("creator")
                ),
                _ => format!(
                    "{code} {} {} {}",
                    field(registry, ""),
                    field(digest.or(tag), ""),
                    detail("run")
                ),
            };
        }
        if self.code.is_mount() {
            let place = format!("{}:{}", field(registry, ":"), field(repository, ""));
            return match self.code {
                Code::LowerTrustChange => format!("{code} {place} {}", detail("run")),
                _ => format!("{code} {place} {}@{}", field(tag, "@"), field(digest, "")),
            };
        }
        let place = format!("{}/{}", field(registry, "/"), field(repository, ":@"));
        let (digest, tag) = (field(digest, ""), field(tag, "@"));
        match self.code {
            Code::UnrecordedCachePush => format!("{code} {place}@{digest}"),
            Code::TrustBreach => format!(
                "{code} {place} {}{} {} > {}",
                if digest.is_empty() { ":" } else { "" },
                if digest.is_empty() { &tag } else { &digest },
                detail("exporter"),
                detail("importer"),
            ),
            _ => format!("{code} {place}:{tag}@{digest}"),
        }
    }

    /// `registry/repository[:tag][@digest]`.
    pub fn reference(&self) -> String {
        if self.code.is_build() {
            let mut s = format!("{} {}", self.registry, self.repository);
            if let Some(step) = &self.tag {
                s.push(' ');
                s.push_str(step);
            }
            return s;
        }
        if self.code.is_mount() {
            let mut s = format!("{}:{}", self.registry, self.repository);
            if let Some(path) = &self.tag {
                s.push(' ');
                s.push_str(path);
            }
            return s;
        }
        let mut s = format!("{}/{}", self.registry, self.repository);
        if let Some(tag) = &self.tag {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            s.push('@');
            s.push_str(digest);
        }
        s
    }
}

/// A recorded value as a fingerprint holds it: `%`, whitespace, controls and the `separators`
/// around it percent-encoded, so that where one field ends is never in doubt. A value without
/// them (almost every one) is written as it is, and keeps the fingerprint it always had.
fn fingerprint_field<'a>(value: &'a str, separators: &str) -> std::borrow::Cow<'a, str> {
    let encoded =
        |c: char| c == '%' || c.is_whitespace() || c.is_control() || separators.contains(c);
    if !value.chars().any(encoded) {
        return value.into();
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if encoded(c) {
            let mut bytes = [0; 4];
            for byte in c.encode_utf8(&mut bytes).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// A run's trust level in a finding's message: quoted, or `no trust level`.
pub(crate) fn trust_level(level: Option<&str>) -> String {
    level.map_or_else(|| "no trust level".to_owned(), |l| Quoted(l).to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Code ids and names are unique and well formed.
    #[test]
    fn codes_unique() {
        let ids: BTreeSet<&str> = Code::ALL.iter().map(|c| c.id()).collect();
        let names: BTreeSet<&str> = Code::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(ids.len(), Code::ALL.len(), "duplicate code ids");
        assert_eq!(names.len(), Code::ALL.len(), "duplicate code names");
        for code in Code::ALL {
            let id = code.id();
            assert!(
                id.len() == 5
                    && id.starts_with("CW")
                    && id[2..].bytes().all(|b| b.is_ascii_digit()),
                "{id}"
            );
            assert_eq!(Code::parse(id), Some(code));
            assert_eq!(Code::parse(code.name()), Some(code));
        }
    }

    /// A fingerprint names the code and the reference it is about.
    #[test]
    fn fingerprints_name_the_fact() {
        let finding = Finding {
            code: Code::TagMovedUnrecorded,
            registry: "r.io".into(),
            repository: "team/app".into(),
            tag: Some("main".into()),
            digest: Some("sha256:ab".into()),
            first_seen: 0,
            message: String::new(),
            detail: BTreeMap::new(),
        };
        assert_eq!(finding.fingerprint(), "CW003 r.io/team/app:main@sha256:ab");
        assert_eq!(finding.reference(), "r.io/team/app:main@sha256:ab");
        // Recorded values cannot move where one field ends and the next begins.
        let mount = |builder: &str, id: &str, run: &str| Finding {
            code: Code::LowerTrustChange,
            registry: builder.into(),
            repository: id.into(),
            detail: BTreeMap::from([("run".to_owned(), run.to_owned())]),
            ..finding.clone()
        };
        let one = mount("b:x", "y", "r");
        let two = mount("b", "x:y", "r");
        let three = mount("b", "x:y r", "");
        assert_ne!(one.fingerprint(), two.fingerprint());
        assert_ne!(two.fingerprint(), three.fingerprint());
        assert_eq!(two.fingerprint(), "CW013 b:x:y r");
        assert_eq!(three.fingerprint(), "CW013 b:x:y%20r ");
        let hit = |run: &str, creator: &str| Finding {
            code: Code::CrossTrustHit,
            detail: BTreeMap::from([
                ("run".to_owned(), run.to_owned()),
                ("creator".to_owned(), creator.to_owned()),
            ]),
            ..finding.clone()
        };
        assert_ne!(
            hit("a < b", "c").fingerprint(),
            hit("a", "b < c").fingerprint()
        );
    }
}
