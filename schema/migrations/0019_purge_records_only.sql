-- Builder purges that pruned only the builder's build records, not its cache mounts: an
-- incident's prune without `--full-prune` removes the records tainted runs made and those
-- used since the taint (cache mounts aside: the mount actions decide those). Such a purge
-- cleans no mount, so a trace counts it for the builder only, where a whole prune (0 here:
-- `--full-prune`, `mark-purged --builder` without `--records-only`) cleans each of its mounts
-- too. An import line says which; one written before this column is taken as records-only
-- when it claims an incident's executor made it.
ALTER TABLE purges ADD COLUMN records_only INTEGER NOT NULL DEFAULT 0
    CHECK (records_only IN (0, 1));

-- Builder purges an incident recorded before this column, from a prune that was not full
-- (its action, kept in the plan, says so), are marked as what they were.
DROP TRIGGER purges_append_only_update;
UPDATE purges SET records_only = 1
WHERE kind = 'builder' AND method = 'executor'
  AND EXISTS (SELECT 1 FROM actions a
              WHERE a.incident_id = purges.incident_id AND a.seq = purges.action_seq
                AND json_valid(a.target)
                AND json_extract(a.target, '$.target') = 'builder'
                AND coalesce(json_extract(a.target, '$.full'), 0) = 0);
CREATE TRIGGER purges_append_only_update BEFORE UPDATE ON purges
BEGIN
    SELECT RAISE(ABORT, 'purges are append-only');
END;
