-- Purges with provenance: who recorded each purge, when, and how it was done.
--
-- `method` is how the purge entered this store: `executor` (cachewarden pruned it, from the
-- incident or sweep action named by `incident_id`/`action_seq`), `manual` (`mark-purged`), or
-- `imported` (an import line, whatever it claims). `author` is the OS account and host that
-- recorded it here, `recorded_at` when. `forced` marks a late entry `mark-purged` accepted only
-- with `--force`, and `reason` is the text given with it.
--
-- An imported line's own claims (its method, author and recording time) are kept apart in the
-- `claimed_*` columns, so an export carries them on and no import can make them true here.
--
-- Rows written before this migration are backfilled as `imported` with an unknown author
-- (empty) and no recording time (NULL): their `source` text was writable by any import line,
-- so the store cannot vouch for who or what recorded them.

ALTER TABLE purges ADD COLUMN method TEXT NOT NULL DEFAULT 'imported'
    CHECK (method IN ('executor', 'manual', 'imported'));
ALTER TABLE purges ADD COLUMN author TEXT NOT NULL DEFAULT '';
ALTER TABLE purges ADD COLUMN recorded_at INTEGER;
ALTER TABLE purges ADD COLUMN forced INTEGER NOT NULL DEFAULT 0 CHECK (forced IN (0, 1));
ALTER TABLE purges ADD COLUMN reason TEXT;
ALTER TABLE purges ADD COLUMN incident_id INTEGER;
ALTER TABLE purges ADD COLUMN action_seq INTEGER;
ALTER TABLE purges ADD COLUMN claimed_method TEXT;
ALTER TABLE purges ADD COLUMN claimed_author TEXT;
ALTER TABLE purges ADD COLUMN claimed_recorded_at INTEGER;

-- The trace describes each purge it applied by its mount (or builder) and time.
CREATE INDEX purges_by_mount ON purges (mount, at) WHERE kind = 'mount';

-- A recorded purge is history: it is never rewritten or removed.
CREATE TRIGGER purges_append_only_update BEFORE UPDATE ON purges
BEGIN
    SELECT RAISE(ABORT, 'purges are append-only');
END;

CREATE TRIGGER purges_append_only_delete BEFORE DELETE ON purges
BEGIN
    SELECT RAISE(ABORT, 'purges are append-only');
END;
