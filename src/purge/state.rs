//! What became of an action and of an incident, typed. The store keeps these as text; every
//! other module matches on the variants, never on the words.

use std::fmt;

use serde::Serialize;

use crate::error::RemoteError;
use crate::report::count;

/// Where an action of the journal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionState {
    /// Planned, not run yet (or out of the scope in force: it waits).
    Pending,
    /// Started by an execution that has not recorded its end: interrupted, run again.
    Running,
    Done,
    /// Tried and failed: the next execution tries it again.
    Failed,
    /// Never run: a follow-up, or a sweep's action outside the scope.
    Skipped,
}

impl ActionState {
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Running,
        Self::Done,
        Self::Failed,
        Self::Skipped,
    ];

    /// The word the store and the outputs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether an execution has nothing more to do with the action.
    pub fn is_settled(self) -> bool {
        matches!(self, Self::Done | Self::Skipped)
    }
}

impl fmt::Display for ActionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Whether an incident still holds containment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IncidentStatus {
    Open,
    Closed,
}

impl IncidentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Open, Self::Closed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

impl fmt::Display for IncidentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What a done action achieved, as data: the journal shows it as text, the sweep's metrics
/// add up its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A registry manifest deleted, or found gone already, with the child manifests of an
    /// index deleted before it.
    Manifest {
        deleted: bool,
        children: usize,
        /// Children the index listed that recorded runs outside the incident pushed: left.
        spared: usize,
    },
    /// Builder records pruned, the bytes the builder said it freed, and how many of the
    /// planned records were gone before the prune.
    Pruned {
        records: usize,
        bytes: i64,
        already_gone: usize,
    },
    /// A local image removed, or not present.
    Image { removed: bool },
}

impl Outcome {
    /// The bytes a builder freed; registry space returns only at its garbage collection.
    pub fn bytes(&self) -> i64 {
        match self {
            Self::Pruned { bytes, .. } => *bytes,
            _ => 0,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Manifest {
                deleted,
                children,
                spared,
            } => {
                f.write_str(if deleted { "deleted" } else { "already gone" })?;
                if children > 0 {
                    write!(
                        f,
                        ", with {}",
                        count(children, "child manifest", "child manifests")
                    )?;
                }
                if spared > 0 {
                    write!(
                        f,
                        "; {} left: recorded runs outside the incident pushed {}",
                        count(spared, "listed child manifest", "listed child manifests"),
                        if spared == 1 { "it" } else { "them" }
                    )?;
                }
                Ok(())
            }
            Self::Pruned {
                records,
                bytes,
                already_gone,
            } => {
                write!(
                    f,
                    "pruned {}, {}",
                    count(records, "record", "records"),
                    count(usize::try_from(bytes).unwrap_or_default(), "byte", "bytes")
                )?;
                if already_gone > 0 {
                    let verb = if already_gone == 1 { "was" } else { "were" };
                    write!(f, " ({already_gone} {verb} already gone)")?;
                }
                Ok(())
            }
            Self::Image { removed } => f.write_str(if removed { "removed" } else { "not present" }),
        }
    }
}

/// How an action ended, for the journal.
#[derive(Debug, Clone)]
pub enum Finished {
    Done(Outcome),
    Failed(RemoteError),
    /// Not run, and why.
    Skipped(String),
}

impl Finished {
    pub fn state(&self) -> ActionState {
        match self {
            Self::Done(_) => ActionState::Done,
            Self::Failed(_) => ActionState::Failed,
            Self::Skipped(_) => ActionState::Skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The journal's words do not change with the types: resumed and old journals read back.
    #[test]
    fn states_read_back_from_their_words() {
        for state in ActionState::ALL {
            assert_eq!(ActionState::parse(state.as_str()), Some(state));
        }
        assert_eq!(ActionState::parse("Done"), None);
        assert_eq!(
            IncidentStatus::parse("closed"),
            Some(IncidentStatus::Closed)
        );
        assert_eq!(IncidentStatus::parse("reopened"), None);
    }

    /// Outcomes read as the journal always showed them.
    #[test]
    fn outcomes_show_as_before() {
        let shown = |o: Outcome| o.to_string();
        assert_eq!(
            shown(Outcome::Manifest {
                deleted: true,
                children: 0,
                spared: 0
            }),
            "deleted"
        );
        assert_eq!(
            shown(Outcome::Manifest {
                deleted: false,
                children: 2,
                spared: 0
            }),
            "already gone, with 2 child manifests"
        );
        assert_eq!(
            shown(Outcome::Manifest {
                deleted: true,
                children: 1,
                spared: 1
            }),
            "deleted, with 1 child manifest; 1 listed child manifest left: recorded runs outside the incident pushed it"
        );
        assert_eq!(
            shown(Outcome::Pruned {
                records: 3,
                bytes: 12345,
                already_gone: 0
            }),
            "pruned 3 records, 12345 bytes"
        );
        assert_eq!(
            shown(Outcome::Pruned {
                records: 3,
                bytes: 1,
                already_gone: 2
            }),
            "pruned 3 records, 1 byte (2 were already gone)"
        );
        assert_eq!(shown(Outcome::Image { removed: false }), "not present");
    }

    /// The sweep's reclaimed bytes come from the prune's own figure, not from reading its
    /// text back; a manifest delete frees nothing until the registry collects garbage.
    #[test]
    fn only_prunes_count_reclaimed_bytes() {
        let pruned = Outcome::Pruned {
            records: 3,
            bytes: 12345,
            already_gone: 1,
        };
        assert_eq!(pruned.bytes(), 12345);
        let deleted = Outcome::Manifest {
            deleted: true,
            children: 4,
            spared: 0,
        };
        assert_eq!(deleted.bytes(), 0);
    }
}
