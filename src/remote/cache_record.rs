//! A builder's build-cache record as the Control API and the Engine's `/system/df` both
//! report it: shared by the two clients, so neither depends on the other for it.

use crate::model::BuilderRecord;
use crate::time::Micros;

/// One build-cache record with everything BuildKit reports about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRecord {
    pub id: String,
    /// `regular`, `exec.cachemount`, `source.local`, `source.git.checkout`, `internal`,
    /// `frontend`.
    pub record_type: String,
    pub description: String,
    /// Whether the record can still change (mounts do; committed layers do not). The Engine's
    /// `/system/df` does not say, and reports `false`.
    pub mutable: bool,
    pub in_use: bool,
    pub shared: bool,
    pub size: i64,
    /// The records this one is built on: one for a layer over its parent, none for a root.
    pub parents: Vec<String>,
    pub created_at: Option<Micros>,
    pub last_used_at: Option<Micros>,
    pub usage_count: i64,
}

/// A record BuildKit reports it removed. Docker 20.10 leaves `record_type` empty here and
/// fills the other fields.
pub type PrunedRecord = CacheRecord;

impl CacheRecord {
    /// The part of the record the store keeps.
    pub fn to_builder_record(&self) -> BuilderRecord {
        self.clone().into()
    }
}

impl From<CacheRecord> for BuilderRecord {
    fn from(record: CacheRecord) -> Self {
        Self {
            id: record.id,
            record_type: record.record_type,
            description: record.description,
            created_at: record.created_at,
            last_used_at: record.last_used_at,
            size: Some(record.size),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_convert_to_what_the_store_keeps() {
        let record = CacheRecord {
            id: "r".into(),
            record_type: "exec.cachemount".into(),
            description: "cached mount /x from exec /bin/sh -c true".into(),
            mutable: true,
            in_use: false,
            shared: false,
            size: 3,
            parents: Vec::new(),
            created_at: Some(1),
            last_used_at: Some(2),
            usage_count: 2,
        };
        let kept = record.to_builder_record();
        assert_eq!(kept, BuilderRecord::from(record));
        assert_eq!(kept.size, Some(3));
        assert_eq!(kept.last_used_at, Some(2));
    }
}
