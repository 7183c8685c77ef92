-- Builder prunes that removed only some of the builder's records: an incident's prune without
-- `--full-prune` removes the records tainted runs made (and what was built on them) and, for
-- tainted runs without record evidence, every build record used since `records_since`. Such a
-- prune cleans the builder of a writer only when it removed all the writer may have left
-- there: every record the writer said it created (`purge_records`, the named records this
-- store holds), or everything since the writer began. A writer found later, whose records it
-- left, stays a writer of the builder past it.
-- `records_since` is the builder's clock, which may be `records_skew` (microseconds) behind
-- the runners': a writer is taken as begun after it from `records_since + records_skew` on.
ALTER TABLE purges ADD COLUMN selective INTEGER NOT NULL DEFAULT 0 CHECK (selective IN (0, 1));
ALTER TABLE purges ADD COLUMN records_since INTEGER;
ALTER TABLE purges ADD COLUMN records_skew INTEGER NOT NULL DEFAULT 300000000
    CHECK (records_skew >= 0);

CREATE TABLE purge_records (
    purge_id INTEGER NOT NULL REFERENCES purges (id),
    record   INTEGER NOT NULL REFERENCES builder_records (id),
    PRIMARY KEY (purge_id, record)
) STRICT, WITHOUT ROWID;

CREATE TRIGGER purge_records_append_only_update BEFORE UPDATE ON purge_records
BEGIN
    SELECT RAISE(ABORT, 'purges are append-only');
END;

CREATE TRIGGER purge_records_append_only_delete BEFORE DELETE ON purge_records
BEGIN
    SELECT RAISE(ABORT, 'purges are append-only');
END;

-- The records-only prunes an incident recorded before this column are what their actions,
-- kept in the plan, named (with the default skew: the plan did not keep its own). One an
-- import line claimed an incident made says nothing of what it removed: it named nothing.
-- (One imported before records-only prunes were told apart may have been one, whatever its
-- `records_only` says: it is taken as one, cleaning no mount.)
DROP TRIGGER purges_append_only_update;
UPDATE purges SET selective = 1, records_only = 1,
    records_since = (SELECT json_extract(a.target, '$.used_since') FROM actions a
                     WHERE a.incident_id = purges.incident_id AND a.seq = purges.action_seq
                       AND json_valid(a.target) AND json_type(a.target, '$.used_since') = 'integer')
WHERE kind = 'builder'
  AND ((method = 'executor' AND records_only = 1)
       OR (method = 'imported' AND claimed_method = 'executor'));
CREATE TRIGGER purges_append_only_update BEFORE UPDATE ON purges
BEGIN
    SELECT RAISE(ABORT, 'purges are append-only');
END;

INSERT OR IGNORE INTO purge_records (purge_id, record)
SELECT u.id, r.id
FROM purges u
JOIN actions a ON a.incident_id = u.incident_id AND a.seq = u.action_seq AND json_valid(a.target)
    AND json_type(a.target, '$.record_ids') = 'array'
JOIN json_each(a.target, '$.record_ids') j
JOIN builder_records r ON r.builder_id = u.builder_id AND r.record_id = j.value
WHERE u.selective = 1 AND u.method = 'executor';
