//! The cache-mount audit (`cachewarden audit mounts`): what a cache mount holds, file by file,
//! compared with the previous snapshot of it; every added or changed file attributed to the
//! recorded runs that wrote the mount in between. Findings: content that does not match its
//! own address (CW011), new startup hooks (CW012), changes by a lower-trust writer than the
//! mount's earlier writers (CW013).
//!
//! Pure: the helper build that copies a mount out and the walk that hashes it are the
//! command's ([`crate::remote::mount_copy`]).

pub mod checks;
pub mod render;
pub mod tar;
pub mod tgz;
pub mod zip;

use std::collections::{BTreeMap, BTreeSet};

use crate::audit::finding::{Code, Finding, trust_level};
use crate::report::escape::Quoted;
use crate::time::{self, Micros};
use checks::Mismatch;

/// One file of a mount as a snapshot saw it. Paths are the name bytes under the mount root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub path: Vec<u8>,
    pub size: u64,
    /// Unix mode bits with the file type (`S_IFLNK` for a symbolic link).
    pub mode: u32,
    /// Of the content; of the link target for a symbolic link.
    pub sha256: [u8; 32],
}

/// What the walk of one copied mount found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Sorted by path.
    pub files: Vec<FileEntry>,
    /// Content that does not match its address.
    pub mismatches: Vec<Mismatch>,
    /// `package.json` files and the install scripts they declare (only those that declare any).
    pub lifecycle: BTreeMap<Vec<u8>, Vec<String>>,
    /// npm cache blobs that are package tarballs declaring install scripts, or that could not
    /// be read to their end.
    pub tarballs: BTreeMap<Vec<u8>, NpmTarball>,
    /// Wheels, new or changed since the snapshot the walk was given, that install startup
    /// hooks into site-packages, or that could not be read.
    pub wheels: BTreeMap<Vec<u8>, Wheel>,
    /// Files a checksum rule applies to but that could not be read as it needs, with why.
    pub unchecked: Vec<(Vec<u8>, String)>,
}

impl Scan {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// What an npm cache blob that is a package tarball declares ([`tgz::hooks`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NpmTarball {
    /// Each `package.json` member npm's unpacking puts at the package root (a name from the
    /// tarball: hostile) that declares install scripts, with them, and each such `binding.gyp`
    /// that implies `install`.
    pub manifests: Vec<(String, Vec<String>)>,
    /// Why the tarball was not read to its end: a `package.json` further on was not seen.
    pub unread: Option<String>,
}

impl NpmTarball {
    /// Every install script any of its manifests declares, in npm's order.
    pub fn scripts(&self) -> Vec<&'static str> {
        checks::NPM_INSTALL_SCRIPTS
            .into_iter()
            .filter(|s| self.manifests.iter().any(|(_, l)| l.iter().any(|x| x == s)))
            .collect()
    }

    /// The hook as a CW012 finding names it.
    fn hook(&self) -> String {
        let declared: Vec<String> = self
            .manifests
            .iter()
            .map(|(member, scripts)| {
                if member.ends_with("/binding.gyp") {
                    format!("{} implies install (node-gyp rebuild)", Quoted(member))
                } else {
                    format!(
                        "{} declares {}",
                        Quoted(member),
                        scripts
                            .iter()
                            .map(|s| Quoted(s).to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            })
            .collect();
        match (&self.unread, declared.is_empty()) {
            (None, _) => format!(
                "npm package tarball with install scripts: {}",
                declared.join("; ")
            ),
            (Some(why), true) => {
                format!("npm package tarball whose install scripts are unknown: {why}")
            }
            (Some(why), false) => format!(
                "npm package tarball with install scripts: {}; and more may follow: {why}",
                declared.join("; ")
            ),
        }
    }
}

/// What a cached wheel installs into site-packages that Python runs at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wheel {
    /// Members (names from the wheel: hostile) that are startup hooks once installed
    /// ([`checks::wheel_site_hook`]), in archive order.
    pub hooks: Vec<String>,
    /// Why the wheel could not be read: what it installs is unknown.
    pub unread: Option<String>,
}

impl Wheel {
    /// The hook as a CW012 finding names it.
    fn hook(&self) -> String {
        match &self.unread {
            Some(why) => format!("wheel whose startup hooks are unknown: {why}"),
            None => format!(
                "wheel installing startup hooks into site-packages: {}",
                self.hooks
                    .iter()
                    .map(|m| Quoted(m).to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// A recorded run that wrote the mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    /// `pipeline/run/step`.
    pub run: String,
    pub trust_level: Option<String>,
    pub started_at: Micros,
    pub finished_at: Micros,
}

impl Writer {
    /// The run and its trust level, as a finding's detail holds them.
    fn label(&self) -> String {
        format!(
            "{} ({})",
            self.run,
            self.trust_level.as_deref().unwrap_or("no trust level")
        )
    }

    /// The run and its trust level, as a finding's message names them (quoted).
    fn quoted(&self) -> String {
        format!(
            "{} ({})",
            Quoted(&self.run),
            trust_level(self.trust_level.as_deref())
        )
    }
}

/// Files added, changed and removed (each sorted by path).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub added: Vec<Vec<u8>>,
    pub changed: Vec<Vec<u8>>,
    pub removed: Vec<Vec<u8>>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }

    /// Every added, changed and removed path, merged in path order, at most `limit` of them;
    /// and how many more there are.
    pub fn listed(&self, limit: usize) -> (Vec<(Vec<u8>, Change)>, usize) {
        let mut all: Vec<(&Vec<u8>, Change)> = self
            .added
            .iter()
            .map(|p| (p, Change::Added))
            .chain(self.changed.iter().map(|p| (p, Change::Changed)))
            .chain(self.removed.iter().map(|p| (p, Change::Removed)))
            .collect();
        all.sort();
        let more = all.len().saturating_sub(limit);
        let listed = all
            .into_iter()
            .take(limit)
            .map(|(p, c)| (p.clone(), c))
            .collect();
        (listed, more)
    }
}

/// How a file differs from the previous snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    Added,
    Changed,
    Removed,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Changed => "changed",
            Self::Removed => "removed",
        }
    }
}

/// Compares two path-sorted file lists: content, size or mode that differs is a change.
pub fn diff(previous: &[FileEntry], current: &[FileEntry]) -> Diff {
    let mut out = Diff::default();
    let (mut i, mut j) = (0, 0);
    while i < previous.len() || j < current.len() {
        match (previous.get(i), current.get(j)) {
            (Some(p), Some(c)) if p.path == c.path => {
                if p.sha256 != c.sha256 || p.size != c.size || p.mode != c.mode {
                    out.changed.push(c.path.clone());
                }
                i += 1;
                j += 1;
            }
            (Some(p), Some(c)) if p.path < c.path => {
                out.removed.push(p.path.clone());
                i += 1;
            }
            (Some(p), None) => {
                out.removed.push(p.path.clone());
                i += 1;
            }
            (_, Some(c)) => {
                out.added.push(c.path.clone());
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

/// The snapshot a mount is compared with.
#[derive(Debug, Clone, Copy)]
pub struct Previous<'a> {
    pub taken_at: Micros,
    pub files: &'a [FileEntry],
}

/// One mount's audit inputs.
pub struct MountAudit<'a> {
    pub builder: &'a str,
    pub mount_id: &'a str,
    pub now: Micros,
    pub scan: &'a Scan,
    pub previous: Option<Previous<'a>>,
    /// Runs that wrote the mount since the previous snapshot (every writer when none).
    pub writers_between: &'a [Writer],
    /// Runs that wrote the mount before the previous snapshot.
    pub writers_before: &'a [Writer],
    /// A baseline: the operator vouches for the content, so only content checks report.
    pub baseline: bool,
}

/// How many paths a CW013 finding lists.
const LISTED_PATHS: usize = 20;

/// The diff and the findings of one mount.
pub fn findings(a: &MountAudit<'_>, rank: &dyn Fn(&str) -> Option<usize>) -> (Diff, Vec<Finding>) {
    let diff = match a.previous {
        Some(p) => diff(p.files, &a.scan.files),
        None => Diff {
            added: a.scan.files.iter().map(|f| f.path.clone()).collect(),
            ..Diff::default()
        },
    };
    let added: BTreeSet<&[u8]> = diff.added.iter().map(Vec::as_slice).collect();
    let changed: BTreeSet<&[u8]> = diff.changed.iter().map(Vec::as_slice).collect();
    let by_path: BTreeMap<&[u8], &FileEntry> = a
        .scan
        .files
        .iter()
        .map(|f| (f.path.as_slice(), f))
        .collect();
    // The writers, as the detail lists them and as a message names them.
    let list = |label: fn(&Writer) -> String| {
        if a.writers_between.is_empty() {
            "no recorded run".to_owned()
        } else {
            let labels: Vec<String> = a.writers_between.iter().map(label).collect();
            labels.join(", ")
        }
    };
    let (writers, quoted_writers) = (list(Writer::label), list(Writer::quoted));
    let writer_runs: String = a
        .writers_between
        .iter()
        .map(|w| w.run.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let since = a
        .previous
        .map(|p| format!("since the snapshot of {}", time::format(p.taken_at)))
        .unwrap_or_else(|| "(first snapshot)".to_owned());
    let change = |path: &[u8]| -> &'static str {
        if added.contains(path) {
            "added"
        } else if changed.contains(path) {
            "changed"
        } else {
            "unchanged"
        }
    };
    let base = |code: Code, path: &[u8], message: String| -> Finding {
        let mut detail = BTreeMap::new();
        let how = change(path);
        detail.insert("change".to_owned(), how.to_owned());
        if how != "unchanged" {
            detail.insert("writers".to_owned(), writers.clone());
            detail.insert("writer_runs".to_owned(), writer_runs.clone());
        }
        if let Some(p) = a.previous {
            detail.insert("previous_snapshot".to_owned(), time::format(p.taken_at));
        }
        Finding {
            code,
            registry: a.builder.to_owned(),
            repository: a.mount_id.to_owned(),
            tag: Some(String::from_utf8_lossy(path).into_owned()),
            digest: by_path
                .get(path)
                .map(|f| format!("sha256:{}", hex::encode(f.sha256))),
            first_seen: a.now,
            message,
            detail,
        }
    };
    let mut out = Vec::new();
    // CW011: one finding per file, naming every mismatched member of an archive.
    let mut grouped: BTreeMap<&[u8], Vec<&Mismatch>> = BTreeMap::new();
    for m in &a.scan.mismatches {
        grouped.entry(m.path.as_slice()).or_default().push(m);
    }
    for (path, list) in grouped {
        let first = list[0];
        let what = match &first.member {
            Some(_) => format!(
                "{} of its files do not match its {}",
                list.len(),
                match first.rule {
                    checks::Rule::WheelRecord => "RECORD",
                    _ => "checksums",
                }
            ),
            // Both may be the mount's own words (a recorded hash, a link's target): quoted.
            None => format!(
                "expected {}, found {}",
                Quoted(&first.expected),
                Quoted(&first.actual)
            ),
        };
        let written = match change(path) {
            "unchanged" => "unchanged since the previous snapshot".to_owned(),
            how => format!("{how} {since} by {quoted_writers}"),
        };
        let mut f = base(
            Code::ContentAddressMismatch,
            path,
            format!(
                "{} does not match its own address ({}): {what}; {written}",
                Quoted(&String::from_utf8_lossy(path)),
                first.rule.as_str()
            ),
        );
        f.detail
            .insert("rule".to_owned(), first.rule.as_str().to_owned());
        f.detail
            .insert("expected".to_owned(), first.expected.clone());
        f.detail.insert("actual".to_owned(), first.actual.clone());
        let members: Vec<&str> = list.iter().filter_map(|m| m.member.as_deref()).collect();
        if !members.is_empty() {
            f.detail.insert("members".to_owned(), members.join("\n"));
        }
        out.push(f);
    }
    // CW012: startup hooks that are new or changed since the previous snapshot.
    if !a.baseline {
        for path in diff.added.iter().chain(&diff.changed) {
            let tarball = a.scan.tarballs.get(path);
            let wheel = a.scan.wheels.get(path);
            let hook = checks::python_startup_hook(path)
                .map(str::to_owned)
                .or_else(|| {
                    a.scan.lifecycle.get(path).map(|scripts| {
                        format!("package.json with install scripts {}", scripts.join(", "))
                    })
                })
                .or_else(|| tarball.map(NpmTarball::hook))
                .or_else(|| wheel.map(Wheel::hook));
            if let Some(hook) = hook {
                let mut f = base(
                    Code::NewStartupHook,
                    path,
                    format!(
                        "new startup hook {} ({}), {} {since} by {quoted_writers}",
                        Quoted(&String::from_utf8_lossy(path)),
                        hook,
                        change(path)
                    ),
                );
                f.detail.insert("hook".to_owned(), hook);
                if let Some(t) = tarball {
                    f.detail
                        .insert("scripts".to_owned(), t.scripts().join(", "));
                    let manifests: Vec<String> = t
                        .manifests
                        .iter()
                        .map(|(member, scripts)| format!("{member}: {}", scripts.join(", ")))
                        .collect();
                    f.detail
                        .insert("manifests".to_owned(), manifests.join("\n"));
                    if let Some(why) = &t.unread {
                        f.detail.insert("unread".to_owned(), why.clone());
                    }
                }
                if let Some(w) = wheel {
                    f.detail.insert("members".to_owned(), w.hooks.join("\n"));
                    if let Some(why) = &w.unread {
                        f.detail.insert("unread".to_owned(), why.clone());
                    }
                }
                out.push(f);
            }
        }
    }
    // CW013: changes while a lower-trust run than the mount's earlier writers wrote it.
    let changes: Vec<&Vec<u8>> = diff.added.iter().chain(&diff.changed).collect();
    if !a.baseline
        && !changes.is_empty()
        && let Some(previous) = a.previous
    {
        let level = |w: &Writer| w.trust_level.as_deref().and_then(rank);
        let earlier = a
            .writers_before
            .iter()
            .filter_map(|w| level(w).map(|r| (r, w)))
            .max_by_key(|(r, _)| *r);
        if let Some((earlier_rank, earlier_writer)) = earlier {
            let mut listed: Vec<String> = changes
                .iter()
                .take(LISTED_PATHS)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            if changes.len() > LISTED_PATHS {
                listed.push(format!("... and {} more", changes.len() - LISTED_PATHS));
            }
            let lower: Vec<Option<&Writer>> = if a.writers_between.is_empty() {
                vec![None]
            } else {
                a.writers_between
                    .iter()
                    .filter(|w| level(w).is_none_or(|r| r < earlier_rank))
                    .map(Some)
                    .collect()
            };
            for writer in lower {
                let who = writer.map_or_else(|| "no recorded run".to_owned(), Writer::label);
                let mut detail = BTreeMap::new();
                detail.insert("writer".to_owned(), who.clone());
                detail.insert("writers".to_owned(), writers.clone());
                detail.insert("earlier_writer".to_owned(), earlier_writer.label());
                detail.insert("files".to_owned(), changes.len().to_string());
                detail.insert("paths".to_owned(), listed.join("\n"));
                detail.insert(
                    "previous_snapshot".to_owned(),
                    time::format(previous.taken_at),
                );
                out.push(Finding {
                    code: Code::LowerTrustChange,
                    registry: a.builder.to_owned(),
                    repository: a.mount_id.to_owned(),
                    tag: None,
                    digest: None,
                    first_seen: writer.map_or(a.now, |w| w.started_at),
                    message: format!(
                        "{} changed {since} while {} wrote the mount, whose earlier writers include {}",
                        crate::report::count(changes.len(), "file", "files"),
                        writer.map_or_else(|| "no recorded run".to_owned(), Writer::quoted),
                        earlier_writer.quoted()
                    ),
                    detail: {
                        let mut d = detail;
                        d.insert(
                            "run".to_owned(),
                            writer.map_or_else(
                                || format!("unrecorded@{}", time::format(previous.taken_at)),
                                |w| w.run.clone(),
                            ),
                        );
                        d
                    },
                });
            }
        }
    }
    out.sort_by_cached_key(|f| (f.code, f.fingerprint()));
    (diff, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: u8) -> FileEntry {
        FileEntry {
            path: path.as_bytes().to_vec(),
            size: 1,
            mode: 0o100644,
            sha256: [content; 32],
        }
    }

    /// An audit at 100 of builder `ci`'s mount against a snapshot taken at 20 holding `files`,
    /// with the runs that wrote the mount since and before it.
    fn audit_after_20<'a>(
        mount_id: &'a str,
        scan: &'a Scan,
        files: &'a [FileEntry],
        (writers_between, writers_before): (&'a [Writer], &'a [Writer]),
    ) -> MountAudit<'a> {
        MountAudit {
            builder: "ci",
            mount_id,
            now: 100,
            scan,
            previous: Some(Previous {
                taken_at: 20,
                files,
            }),
            writers_between,
            writers_before,
            baseline: false,
        }
    }

    fn writer(run: &str, trust: &str, at: Micros) -> Writer {
        Writer {
            run: run.into(),
            trust_level: Some(trust.into()),
            started_at: at,
            finished_at: at + 1,
        }
    }

    fn rank(level: &str) -> Option<usize> {
        ["untrusted", "internal", "release"]
            .iter()
            .position(|l| *l == level)
    }

    /// The diff sees additions, content changes, mode changes and removals.
    #[test]
    fn diff_sees_every_kind_of_change() {
        let before = vec![file("a", 1), file("b", 1), file("c", 1)];
        let mut moded = file("c", 1);
        moded.mode = 0o100755;
        let after = vec![file("a", 1), file("b", 2), moded, file("d", 1)];
        let d = diff(&before, &after);
        assert_eq!(d.added, vec![b"d".to_vec()]);
        assert_eq!(d.changed, vec![b"b".to_vec(), b"c".to_vec()]);
        assert!(d.removed.is_empty());
        assert_eq!(diff(&after, &before).removed, vec![b"d".to_vec()]);
    }

    /// The listed changes are every kind merged in path order, cut at the limit with the
    /// rest counted.
    #[test]
    fn listed_changes_are_merged_and_bounded() {
        let before = vec![file("a", 1), file("c", 1), file("e", 1)];
        let after = vec![file("b", 1), file("c", 2), file("d", 1)];
        let d = diff(&before, &after);
        let (all, more) = d.listed(10);
        let shown: Vec<(&str, &str)> = all
            .iter()
            .map(|(p, c)| (std::str::from_utf8(p).unwrap(), c.as_str()))
            .collect();
        assert_eq!(
            shown,
            vec![
                ("a", "removed"),
                ("b", "added"),
                ("c", "changed"),
                ("d", "added"),
                ("e", "removed")
            ]
        );
        assert_eq!(more, 0);
        let (cut, more) = d.listed(2);
        assert_eq!(cut.len(), 2);
        assert_eq!(cut[1].0, b"b".to_vec());
        assert_eq!(more, 3);
    }

    /// An untrusted run that plants a startup hook in a mount a release pipeline wrote before
    /// is named by CW012 (with the run) and CW013; the same change by a release run raises only
    /// the hook.
    #[test]
    fn a_planted_hook_by_a_lower_trust_run_is_attributed() {
        let before = vec![file("wheel.whl", 1)];
        let scan = Scan {
            files: vec![file("sitecustomize.py", 9), file("wheel.whl", 1)],
            ..Scan::default()
        };
        let fork = [writer("fork-pr/1/build", "untrusted", 50)];
        let release = [writer("webapp/1/build", "release", 10)];
        let audit = audit_after_20("/root/.cache/pip", &scan, &before, (&fork, &release));
        let (d, found) = findings(&audit, &rank);
        assert_eq!(d.added, vec![b"sitecustomize.py".to_vec()]);
        let codes: Vec<&str> = found.iter().map(|f| f.code.id()).collect();
        assert_eq!(codes, vec!["CW012", "CW013"]);
        assert!(found[0].detail["writers"].contains("fork-pr/1/build (untrusted)"));
        assert_eq!(found[1].detail["run"], "fork-pr/1/build");
        assert_eq!(found[1].first_seen, 50);

        let trusted = [writer("webapp/2/build", "release", 50)];
        let audit = MountAudit {
            writers_between: &trusted,
            ..audit
        };
        let codes: Vec<&str> = findings(&audit, &rank)
            .1
            .iter()
            .map(|f| f.code.id())
            .collect();
        assert_eq!(codes, vec!["CW012"]);
        // A baseline vouches for what it holds.
        let audit = MountAudit {
            baseline: true,
            ..audit
        };
        assert!(findings(&audit, &rank).1.is_empty());
    }

    /// An npm blob that is a tarball with install scripts is a CW012 naming the scripts and
    /// the writing run when it is new; the same blob unchanged since the previous snapshot
    /// raises nothing; a new tarball that could not be read to its end is a CW012 too, saying
    /// its scripts are unknown.
    #[test]
    fn a_new_npm_tarball_with_install_scripts_is_a_hook() {
        let blob = b"_cacache/content-v2/sha512/ab/cd/ef".to_vec();
        let cut = b"_cacache/content-v2/sha512/12/34/56".to_vec();
        let mut scan = Scan {
            files: vec![file("_cacache/content-v2/sha512/ab/cd/ef", 7)],
            ..Scan::default()
        };
        scan.tarballs.insert(
            blob.clone(),
            NpmTarball {
                manifests: vec![(
                    "package/package.json\u{1b}[2J".to_owned(),
                    vec!["preinstall".to_owned(), "postinstall".to_owned()],
                )],
                unread: None,
            },
        );
        let fork = [writer("fork-pr/7/build", "untrusted", 50)];
        let audit = audit_after_20("npm", &scan, &[], (&fork, &[]));
        let found = findings(&audit, &rank).1;
        assert_eq!(found.len(), 1, "{found:#?}");
        let f = &found[0];
        assert_eq!(f.code, Code::NewStartupHook);
        assert_eq!(f.detail["scripts"], "preinstall, postinstall");
        assert_eq!(f.detail["writer_runs"], "fork-pr/7/build");
        assert_eq!(f.detail["change"], "added");
        assert!(f.message.contains("postinstall"), "{}", f.message);
        assert!(!f.detail.contains_key("unread"));
        // What a terminal shows of it is escaped.
        let shown = crate::report::escape::Line(&f.message).to_string();
        assert!(
            !shown.contains('\u{1b}') && shown.contains("\\x1b"),
            "{shown}"
        );

        // Unchanged since the previous snapshot: nothing new.
        let same = scan.files.clone();
        let audit_same = MountAudit {
            previous: Some(Previous {
                taken_at: 20,
                files: &same,
            }),
            ..audit
        };
        assert!(findings(&audit_same, &rank).1.is_empty());

        // A tarball cut off before its end is not passed over.
        let mut scan = scan.clone();
        scan.files
            .push(file("_cacache/content-v2/sha512/12/34/56", 8));
        scan.files.sort_by(|a, b| a.path.cmp(&b.path));
        scan.tarballs.insert(
            cut.clone(),
            NpmTarball {
                manifests: vec![],
                unread: Some("package tarball not read to its end: truncated".to_owned()),
            },
        );
        let audit_cut = MountAudit {
            scan: &scan,
            ..audit_same
        };
        let found = findings(&audit_cut, &rank).1;
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(
            found[0].tag.as_deref(),
            Some("_cacache/content-v2/sha512/12/34/56")
        );
        assert!(found[0].detail["unread"].contains("truncated"));
        assert!(found[0].detail["hook"].contains("install scripts are unknown"));
        assert_eq!(found[0].detail["scripts"], "");
    }

    /// A new wheel installing a `.pth` file is a CW012 naming the wheel, the member (escaped on
    /// a terminal) and the writing run; the same wheel unchanged raises nothing; a new wheel
    /// that could not be read is a CW012 saying its hooks are unknown.
    #[test]
    fn a_new_wheel_with_a_startup_hook_is_a_hook() {
        let path = "wheels/ab/evil-1.0-py3-none-any.whl";
        let mut scan = Scan {
            files: vec![file(path, 4)],
            ..Scan::default()
        };
        scan.wheels.insert(
            path.as_bytes().to_vec(),
            Wheel {
                hooks: vec![
                    "evil.pth".to_owned(),
                    "evil-1.0.data/purelib/x\u{1b}[2J.pth".to_owned(),
                ],
                unread: None,
            },
        );
        let fork = [writer("fork-pr/9/build", "untrusted", 50)];
        let audit = audit_after_20("/root/.cache/pip", &scan, &[], (&fork, &[]));
        let found = findings(&audit, &rank).1;
        assert_eq!(found.len(), 1, "{found:#?}");
        let f = &found[0];
        assert_eq!(f.code, Code::NewStartupHook);
        assert_eq!(f.tag.as_deref(), Some(path));
        assert_eq!(
            f.detail["members"],
            "evil.pth\nevil-1.0.data/purelib/x\u{1b}[2J.pth"
        );
        assert_eq!(f.detail["writer_runs"], "fork-pr/9/build");
        assert!(f.message.contains("`evil.pth`"), "{}", f.message);
        assert!(!f.detail.contains_key("unread"));
        let shown = crate::report::escape::Line(&f.message).to_string();
        assert!(
            !shown.contains('\u{1b}') && shown.contains("\\x1b"),
            "{shown}"
        );

        let same = scan.files.clone();
        let audit_same = MountAudit {
            previous: Some(Previous {
                taken_at: 20,
                files: &same,
            }),
            ..audit
        };
        assert!(findings(&audit_same, &rank).1.is_empty());

        let mut scan = Scan {
            files: vec![file(path, 5)],
            ..Scan::default()
        };
        scan.wheels.insert(
            path.as_bytes().to_vec(),
            Wheel {
                hooks: vec![],
                unread: Some("not a readable zip: local header".to_owned()),
            },
        );
        let audit_unread = MountAudit {
            scan: &scan,
            ..audit_same
        };
        let found = findings(&audit_unread, &rank).1;
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].detail["change"], "changed");
        assert!(found[0].detail["hook"].contains("startup hooks are unknown"));
        assert!(found[0].detail["unread"].contains("local header"));
    }

    /// A change nobody recorded writing, in a mount trusted runs wrote, is a CW013 of its own.
    #[test]
    fn an_unrecorded_change_is_a_lower_trust_change() {
        let before = vec![file("a", 1)];
        let scan = Scan {
            files: vec![file("a", 2)],
            ..Scan::default()
        };
        let release = [writer("webapp/1/build", "release", 10)];
        let audit = audit_after_20("m", &scan, &before, (&[], &release));
        let found = findings(&audit, &rank).1;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].code, Code::LowerTrustChange);
        assert!(found[0].detail["run"].starts_with("unrecorded@"));
    }

    /// A content mismatch is reported whether or not the file changed, with its rule.
    #[test]
    fn mismatches_are_reported_with_their_rule() {
        let scan = Scan {
            files: vec![file("_cacache/content-v2/sha1/aa/bb/cc", 3)],
            mismatches: vec![Mismatch {
                path: b"_cacache/content-v2/sha1/aa/bb/cc".to_vec(),
                rule: checks::Rule::NpmContent,
                member: None,
                expected: "sha1-aabbcc".into(),
                actual: "sha1-ffff".into(),
            }],
            ..Scan::default()
        };
        let files = scan.files.clone();
        let audit = audit_after_20("npm", &scan, &files, (&[], &[]));
        let found = findings(&audit, &rank).1;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].code, Code::ContentAddressMismatch);
        assert_eq!(found[0].detail["rule"], "npm-cacache");
        assert_eq!(found[0].detail["change"], "unchanged");
        assert!(
            found[0]
                .message
                .contains("expected `sha1-aabbcc`, found `sha1-ffff`"),
            "{}",
            found[0].message
        );
    }

    /// What the mount's files say (a `.ziphash`'s first line) is quoted in the message: its
    /// backticks cannot end the quotes and go on as the message's own words.
    #[test]
    fn a_recorded_hash_cannot_forge_the_message() {
        let path = "cache/download/m/@v/v1.0.0.ziphash";
        let scan = Scan {
            files: vec![file(path, 3)],
            mismatches: vec![Mismatch {
                path: path.as_bytes().to_vec(),
                rule: checks::Rule::GoZiphash,
                member: None,
                expected: "h1:x`, found `h1:x`; unchanged".into(),
                actual: "h1:y".into(),
            }],
            ..Scan::default()
        };
        let files = scan.files.clone();
        let audit = audit_after_20("go", &scan, &files, (&[], &[]));
        let found = findings(&audit, &rank).1;
        assert!(
            found[0]
                .message
                .contains(r"expected `h1:x\`, found \`h1:x\`; unchanged`, found `h1:y`"),
            "{}",
            found[0].message
        );
        assert_eq!(
            found[0].detail["expected"],
            "h1:x`, found `h1:x`; unchanged"
        );
    }
}
