//! What is known about manifest digests: media type and child manifests, learned once from the
//! registry and kept, since content under a digest never changes.

use std::collections::HashMap;

use crate::store::db::{Engine, params};

use super::{Store, StoreError, sql_error};
use crate::model::{Digest, ManifestFacts};
use crate::time;

impl Store {
    /// Records what was learned about manifests, in one transaction. A digest already known
    /// keeps its first record: what it says cannot have changed. A PostgreSQL role that may
    /// not add facts (a hook's: they are the responders' to learn) saves none; the facts are
    /// a cache, and what it was doing goes on.
    pub fn save_manifest_facts(&mut self, facts: &[ManifestFacts]) -> Result<(), StoreError> {
        if facts.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let err = |e| sql_error(&path, e);
        if self.conn.engine() == Engine::Postgres {
            let may: bool = self
                .conn
                .query_row(
                    "SELECT has_table_privilege('manifest_facts', 'INSERT')",
                    [],
                    |row| row.get(0),
                )
                .map_err(err)?;
            if !may {
                return Ok(());
            }
        }
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO manifest_facts (digest, media_type, children, learned_at)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                )
                .map_err(err)?;
            let now = time::now();
            for fact in facts {
                let children: Vec<&str> = fact.children.iter().map(Digest::as_str).collect();
                let children = serde_json::to_string(&children).expect("strings serialize");
                stmt.execute(params![
                    fact.digest.as_str(),
                    fact.media_type,
                    children,
                    now
                ])
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// What is known about each of `digests`, by digest; unknown digests are left out. A
    /// record that no longer reads as digests is treated as unknown: it is only a cache.
    pub fn manifest_facts(
        &self,
        digests: &[&str],
    ) -> Result<HashMap<String, ManifestFacts>, StoreError> {
        let err = |e| sql_error(&self.path, e);
        let sql = match self.conn.engine() {
            Engine::Sqlite => {
                "SELECT f.digest, f.media_type, f.children FROM manifest_facts f
                 WHERE f.digest IN (SELECT value FROM json_each(?1))"
            }
            Engine::Postgres => {
                "SELECT f.digest, f.media_type, f.children FROM manifest_facts f
                 WHERE f.digest IN (SELECT jsonb_array_elements_text(CAST(?1 AS TEXT)::jsonb))"
            }
        };
        let mut stmt = self.conn.prepare_cached(sql).map_err(err)?;
        let wanted = serde_json::to_string(digests).expect("strings serialize");
        let rows = stmt
            .query_map([wanted], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(err)?;
        Ok(rows
            .into_iter()
            .filter_map(|(digest, media_type, children)| {
                let children: Vec<String> = serde_json::from_str(&children).ok()?;
                let facts = ManifestFacts {
                    digest: Digest::parse(&digest, "digest").ok()?,
                    media_type,
                    children: children
                        .iter()
                        .map(|c| Digest::parse(c, "child digest"))
                        .collect::<Result<_, _>>()
                        .ok()?,
                };
                Some((digest, facts))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

    fn digest(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64)), "test").unwrap()
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        (dir, store)
    }

    /// Saved facts read back as saved, children in order; unknown digests are absent.
    #[test]
    fn facts_round_trip_and_unknown_digests_are_absent() {
        let (_dir, mut store) = store();
        let index = ManifestFacts {
            digest: digest('a'),
            media_type: INDEX.to_owned(),
            children: vec![digest('c'), digest('b')],
        };
        let plain = ManifestFacts {
            digest: digest('b'),
            media_type: MANIFEST.to_owned(),
            children: Vec::new(),
        };
        store
            .save_manifest_facts(&[index.clone(), plain.clone()])
            .unwrap();
        let unknown = digest('f');
        let found = store
            .manifest_facts(&[
                index.digest.as_str(),
                plain.digest.as_str(),
                unknown.as_str(),
            ])
            .unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[index.digest.as_str()], index);
        assert_eq!(found[plain.digest.as_str()], plain);
        assert!(store.manifest_facts(&[]).unwrap().is_empty());
    }

    /// A digest learned twice keeps its first record, and saving nothing is no error.
    #[test]
    fn facts_of_a_digest_are_kept_once() {
        let (dir, mut store) = store();
        let first = ManifestFacts {
            digest: digest('a'),
            media_type: INDEX.to_owned(),
            children: vec![digest('b')],
        };
        store
            .save_manifest_facts(std::slice::from_ref(&first))
            .unwrap();
        store
            .save_manifest_facts(&[ManifestFacts {
                children: Vec::new(),
                ..first.clone()
            }])
            .unwrap();
        store.save_manifest_facts(&[]).unwrap();
        drop(store);
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        let found = store.manifest_facts(&[first.digest.as_str()]).unwrap();
        assert_eq!(found[first.digest.as_str()], first);
    }
}
