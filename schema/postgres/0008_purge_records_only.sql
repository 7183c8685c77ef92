-- PostgreSQL schema version 8: builder purges that pruned only the builder's build records,
-- not its cache mounts (see schema/migrations/0019_purge_records_only.sql). Additive: a
-- release at version 1 to 7 keeps reading and writing a store at version 8 (writable_by
-- stays 1); the purges it records are taken as whole prunes, as it takes every purge.

ALTER TABLE purges ADD COLUMN records_only BIGINT NOT NULL DEFAULT 0
    CHECK (records_only IN (0, 1));

ALTER TABLE purges DISABLE TRIGGER purges_append_only_update;
UPDATE purges SET records_only = 1
WHERE kind = 'builder' AND method = 'executor'
  AND EXISTS (SELECT 1 FROM actions a
              WHERE a.incident_id = purges.incident_id AND a.seq = purges.action_seq
                AND a.target::jsonb ->> 'target' = 'builder'
                AND coalesce((a.target::jsonb ->> 'full')::boolean, false) = false);
ALTER TABLE purges ENABLE TRIGGER purges_append_only_update;
