//! The canonical encoding of an entry, and the hash that chains it to the one before.

use super::{ChainHash, EntryKind};
use sha2::{Digest as _, Sha256};

use crate::time::Micros;

/// The first version of the entry encoding: the run and its events. The first byte of every
/// encoded entry is its version.
pub const ENCODING_V1: u8 = 1;
/// Version 2: version 1, then the run's collector receipt (received_at, identity, late,
/// time_suspect). An entry is hashed with it when it is the one that brings the receipt into
/// the chain: the run's entry for a run the collector received first, else an events entry.
pub const ENCODING_V2: u8 = 2;
/// Version 3: version 2, then the earliest the run may have begun as the collector bounded it
/// (`began_after`). The entry that brings a receipt into the chain is hashed with it from then
/// on.
pub const ENCODING_V3: u8 = 3;
/// The versions this cachewarden writes and checks.
pub const ENCODING_VERSIONS: [u8; 3] = [ENCODING_V1, ENCODING_V2, ENCODING_V3];

/// How the collector received a run, as stored (`run_receipts`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ReceiptFacts {
    pub received_at: Micros,
    pub identity: String,
    pub late: i64,
    pub time_suspect: Option<String>,
    /// Hashed from version 3 on: a version 2 entry never covers it.
    pub began_after: Option<Micros>,
}

/// A run's facts as stored, names resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RunFacts {
    /// `None` when the run's pipeline row is gone.
    pub pipeline: Option<String>,
    pub run_key: String,
    pub step: String,
    pub commit: Option<String>,
    pub git_ref: Option<String>,
    pub builder: Ref,
    pub started_at: Micros,
    pub finished_at: Micros,
    pub status: String,
    pub has_records: i64,
    pub overlapped: i64,
    pub recorded_at: Micros,
    pub trust_level: Option<String>,
}

impl RunFacts {
    /// `pipeline/run/step`, as commands name runs.
    pub fn name(&self) -> String {
        crate::model::run_name(
            self.pipeline.as_deref().unwrap_or(""),
            &self.run_key,
            &self.step,
        )
    }
}

/// A builder named by a row: none, its name, or an id whose row is gone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Ref {
    #[default]
    None,
    Named(String),
    Gone(i64),
}

/// What an event points at, by what it is rather than by row id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Artifact {
        backend: String,
        locator: String,
        digest: String,
        key: String,
    },
    Mount {
        builder: Ref,
        namespace: String,
        mount_id: String,
    },
    Builder {
        name: String,
    },
    Record {
        builder: Ref,
        record_id: String,
        record_type: String,
        description: String,
    },
    /// A row id whose row is gone, or of a kind no table belongs to.
    Unresolved {
        id: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventFacts {
    pub kind: String,
    pub target: Target,
    pub at: Micros,
    pub detail: Option<String>,
}

/// A mount use re-recorded with other options (`event_details`), with its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DetailFacts {
    pub event_kind: String,
    pub target: Target,
    pub detail: String,
    pub at: Micros,
}

/// One entry, as hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// [`ENCODING_V1`], [`ENCODING_V2`] or [`ENCODING_V3`].
    pub version: u8,
    pub seq: i64,
    pub kind: EntryKind,
    pub run: RunFacts,
    pub events: Vec<EventFacts>,
    pub details: Vec<DetailFacts>,
    /// The run's receipt as stored (read from version 2 on; `None` when it has none).
    pub receipt: Option<ReceiptFacts>,
}

/// Length-prefixed fields: every text is its byte length (4 bytes, big-endian) and its bytes,
/// every option a 0 or 1 byte before its value, every integer 8 bytes big-endian, every list
/// its count first. With the version and the kind first, no two different entries encode the
/// same.
struct Encoder(Vec<u8>);

impl Encoder {
    fn byte(&mut self, b: u8) {
        self.0.push(b);
    }

    fn int(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn len(&mut self, n: usize) {
        // A text or list over 4 GiB cannot be stored by SQLite in the first place.
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&n.to_be_bytes());
    }

    fn text(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn opt(&mut self, s: Option<&str>) {
        match s {
            None => self.byte(0),
            Some(s) => {
                self.byte(1);
                self.text(s);
            }
        }
    }

    fn builder(&mut self, r: &Ref) {
        match r {
            Ref::None => self.byte(0),
            Ref::Named(name) => {
                self.byte(1);
                self.text(name);
            }
            Ref::Gone(id) => {
                self.byte(2);
                self.int(*id);
            }
        }
    }

    fn target(&mut self, t: &Target) {
        match t {
            Target::Artifact {
                backend,
                locator,
                digest,
                key,
            } => {
                self.byte(1);
                for s in [backend, locator, digest, key] {
                    self.text(s);
                }
            }
            Target::Mount {
                builder,
                namespace,
                mount_id,
            } => {
                self.byte(2);
                self.builder(builder);
                self.text(namespace);
                self.text(mount_id);
            }
            Target::Builder { name } => {
                self.byte(3);
                self.text(name);
            }
            Target::Record {
                builder,
                record_id,
                record_type,
                description,
            } => {
                self.byte(4);
                self.builder(builder);
                for s in [record_id, record_type, description] {
                    self.text(s);
                }
            }
            Target::Unresolved { id } => {
                self.byte(5);
                self.int(*id);
            }
        }
    }
}

/// The canonical encoding of an entry, in its version.
pub(crate) fn encode(entry: &Entry) -> Vec<u8> {
    let mut e = Encoder(Vec::with_capacity(256));
    e.byte(entry.version);
    e.int(entry.seq);
    e.byte(match entry.kind {
        EntryKind::Run => 1,
        EntryKind::Events => 2,
    });
    let run = &entry.run;
    e.opt(run.pipeline.as_deref());
    e.text(&run.run_key);
    e.text(&run.step);
    if entry.kind == EntryKind::Run {
        e.opt(run.commit.as_deref());
        e.opt(run.git_ref.as_deref());
        e.builder(&run.builder);
        e.int(run.started_at);
        e.int(run.finished_at);
        e.text(&run.status);
        e.int(run.has_records);
        e.int(run.overlapped);
        e.int(run.recorded_at);
        e.opt(run.trust_level.as_deref());
    }
    e.len(entry.events.len());
    for ev in &entry.events {
        e.text(&ev.kind);
        e.target(&ev.target);
        e.int(ev.at);
        e.opt(ev.detail.as_deref());
    }
    e.len(entry.details.len());
    for d in &entry.details {
        e.text(&d.event_kind);
        e.target(&d.target);
        e.text(&d.detail);
        e.int(d.at);
    }
    if entry.version >= ENCODING_V2 {
        match &entry.receipt {
            None => e.byte(0),
            Some(r) => {
                e.byte(1);
                e.int(r.received_at);
                e.text(&r.identity);
                e.int(r.late);
                e.opt(r.time_suspect.as_deref());
                if entry.version >= ENCODING_V3 {
                    match r.began_after {
                        None => e.byte(0),
                        Some(at) => {
                            e.byte(1);
                            e.int(at);
                        }
                    }
                }
            }
        }
    }
    e.0
}

/// Entry n's hash from entry n-1's and entry n's encoding.
pub(crate) fn next_hash(prev: &ChainHash, encoding: &[u8]) -> ChainHash {
    let mut h = Sha256::new();
    h.update(prev.0);
    h.update(encoding);
    ChainHash(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_entry() -> Entry {
        Entry {
            version: ENCODING_V1,
            seq: 1,
            kind: EntryKind::Run,
            run: RunFacts {
                pipeline: Some("p".into()),
                run_key: "1".into(),
                step: "s".into(),
                commit: Some("c0ffee".into()),
                git_ref: None,
                builder: Ref::Named("b".into()),
                started_at: 10,
                finished_at: 20,
                status: "succeeded".into(),
                has_records: 0,
                overlapped: 0,
                recorded_at: 30,
                trust_level: Some("internal".into()),
            },
            events: vec![EventFacts {
                kind: "imported".into(),
                target: Target::Artifact {
                    backend: "registry".into(),
                    locator: "r.io/x".into(),
                    digest: "sha256:00".into(),
                    key: String::new(),
                },
                at: 20,
                detail: None,
            }],
            details: Vec::new(),
            receipt: None,
        }
    }

    fn receipt() -> ReceiptFacts {
        ReceiptFacts {
            received_at: 40,
            identity: "https://issuer#p".into(),
            late: 0,
            time_suspect: None,
            began_after: None,
        }
    }

    /// Entries that differ in any one field, or only in where a text is split between two
    /// fields, encode differently: no forged run can take a real one's hash.
    #[test]
    fn no_two_different_entries_encode_the_same() {
        let base = run_entry();
        let mut variants: Vec<Entry> = vec![base.clone()];
        let mut push = |f: &dyn Fn(&mut Entry)| {
            let mut e = base.clone();
            f(&mut e);
            variants.push(e);
        };
        push(&|e| e.seq = 2);
        push(&|e| e.version = ENCODING_V2);
        push(&|e| {
            e.version = ENCODING_V2;
            e.receipt = Some(receipt());
        });
        push(&|e| {
            e.version = ENCODING_V2;
            e.receipt = Some(ReceiptFacts {
                received_at: 41,
                ..receipt()
            });
        });
        push(&|e| {
            e.version = ENCODING_V2;
            e.receipt = Some(ReceiptFacts {
                identity: "https://issuer#q".into(),
                ..receipt()
            });
        });
        push(&|e| {
            e.version = ENCODING_V2;
            e.receipt = Some(ReceiptFacts {
                late: 1,
                ..receipt()
            });
        });
        push(&|e| {
            e.version = ENCODING_V2;
            e.receipt = Some(ReceiptFacts {
                time_suspect: Some("claims to finish after it was received".into()),
                ..receipt()
            });
        });
        push(&|e| {
            e.version = ENCODING_V3;
            e.receipt = Some(receipt());
        });
        push(&|e| {
            e.version = ENCODING_V3;
            e.receipt = Some(ReceiptFacts {
                began_after: Some(0),
                ..receipt()
            });
        });
        push(&|e| {
            e.version = ENCODING_V3;
            e.receipt = Some(ReceiptFacts {
                began_after: Some(1),
                ..receipt()
            });
        });
        push(&|e| e.kind = EntryKind::Events);
        push(&|e| e.run.pipeline = None);
        push(&|e| e.run.pipeline = Some(String::new()));
        // The same characters split differently between pipeline, run key and step.
        push(&|e| {
            e.run.pipeline = Some("p1".into());
            e.run.run_key = String::new();
        });
        push(&|e| {
            e.run.run_key = "1s".into();
            e.run.step = String::new();
        });
        push(&|e| e.run.commit = None);
        push(&|e| e.run.git_ref = Some(String::new()));
        push(&|e| e.run.builder = Ref::None);
        push(&|e| e.run.builder = Ref::Gone(1));
        push(&|e| e.run.builder = Ref::Named("c".into()));
        push(&|e| e.run.started_at = 11);
        push(&|e| e.run.finished_at = 21);
        push(&|e| e.run.status = "failed".into());
        push(&|e| e.run.has_records = 1);
        push(&|e| e.run.overlapped = 1);
        push(&|e| e.run.recorded_at = 31);
        push(&|e| e.run.trust_level = Some("release".into()));
        push(&|e| e.run.trust_level = None);
        push(&|e| e.events.clear());
        push(&|e| e.events[0].kind = "exported".into());
        push(&|e| e.events[0].at = 19);
        push(&|e| e.events[0].detail = Some(String::new()));
        push(&|e| {
            e.events[0].target = Target::Artifact {
                backend: "registry".into(),
                locator: "r.io/xsha256:00".into(),
                digest: String::new(),
                key: String::new(),
            }
        });
        push(&|e| e.events[0].target = Target::Unresolved { id: 1 });
        push(&|e| e.events[0].target = Target::Builder { name: "b".into() });
        push(&|e| {
            e.events[0].target = Target::Mount {
                builder: Ref::Named("b".into()),
                namespace: String::new(),
                mount_id: "m".into(),
            }
        });
        push(&|e| {
            e.events[0].target = Target::Record {
                builder: Ref::Named("b".into()),
                record_id: "m".into(),
                record_type: String::new(),
                description: String::new(),
            }
        });
        push(&|e| {
            let again = e.events[0].clone();
            e.events.push(again);
        });
        push(&|e| {
            e.details.push(DetailFacts {
                event_kind: "read_mount".into(),
                target: Target::Unresolved { id: 1 },
                detail: "[]".into(),
                at: 1,
            })
        });
        let encodings: Vec<Vec<u8>> = variants.iter().map(encode).collect();
        for (i, a) in encodings.iter().enumerate() {
            for (j, b) in encodings.iter().enumerate().skip(i + 1) {
                assert_ne!(a, b, "variants {i} and {j} encode the same");
            }
        }
    }

    /// An events entry leaves the run's other facts out (they are in its run entry), and
    /// every encoding starts with the version.
    #[test]
    fn the_encoding_is_versioned_and_events_entries_name_only_the_run() {
        let mut e = run_entry();
        assert_eq!(encode(&e)[0], ENCODING_V1);
        // A version 1 entry never covers a receipt, whatever the run has.
        let v1 = encode(&e);
        e.receipt = Some(receipt());
        assert_eq!(encode(&e), v1);
        e.version = ENCODING_V2;
        assert_eq!(encode(&e)[0], ENCODING_V2);
        assert_ne!(encode(&e), v1);
        // A version 2 entry never covers the bound on when the run began.
        let v2 = encode(&e);
        e.receipt.as_mut().expect("receipt").began_after = Some(7);
        assert_eq!(encode(&e), v2);
        e.version = ENCODING_V3;
        assert_eq!(encode(&e)[0], ENCODING_V3);
        assert_ne!(encode(&e)[1..], v2[1..]);
        e.version = ENCODING_V1;
        e.receipt = None;
        e.kind = EntryKind::Events;
        let before = encode(&e);
        e.run.started_at = 99;
        e.run.trust_level = None;
        assert_eq!(encode(&e), before);
        e.run.run_key = "2".into();
        assert_ne!(encode(&e), before);
    }

    /// Hex heads read back to the same hash; anything else is refused.
    #[test]
    fn heads_parse_from_hex() {
        let h = next_hash(&ChainHash::GENESIS, b"x");
        assert_eq!(ChainHash::parse(&h.to_string()), Some(h));
        assert_eq!(ChainHash::parse(&h.to_string().to_uppercase()), Some(h));
        for bad in [
            "",
            "00",
            &"g".repeat(64),
            &"0".repeat(63),
            &"0".repeat(65),
            &"é".repeat(32),
        ] {
            assert_eq!(ChainHash::parse(bad), None, "{bad}");
        }
    }

    /// Each hash covers the one before: the same entry after another head hashes otherwise.
    #[test]
    fn each_hash_covers_the_previous() {
        let enc = encode(&run_entry());
        let a = next_hash(&ChainHash::GENESIS, &enc);
        let b = next_hash(&a, &enc);
        assert_ne!(a, b);
        assert_eq!(a, next_hash(&ChainHash::GENESIS, &enc));
    }
}
