-- What a builder record is, when the first run to name it is not believed. A record's type and
-- description are kept as first recorded (`builder_records`, `record_pages`); the trace takes a
-- pulled base layer, the build context and a cache mount's record as carrying no taint. A run
-- whose record evidence is not believed (one at the config's lowest trust level when it was
-- recorded) could name the poisoned layer it left as a pulled one, and the release build that
-- reused it would never be traced. So:
-- - `believed = 0`: the record was first named by such a run, in words that would carry no
--   taint (kept as given): the record is of unknown kind, and carries taint;
-- - `believed = 1`: the first type and description a believed run gave it afterwards, which
--   the trace takes instead.
-- Append-only: a row is added once and never changed.
CREATE TABLE record_descriptions (
    record      INTEGER NOT NULL REFERENCES builder_records (id),
    believed    INTEGER NOT NULL CHECK (believed IN (0, 1)),
    record_type TEXT NOT NULL,
    description TEXT NOT NULL,
    PRIMARY KEY (record, believed)
) STRICT, WITHOUT ROWID;

CREATE TRIGGER record_descriptions_append_only_update BEFORE UPDATE ON record_descriptions
BEGIN
    SELECT RAISE(ABORT, 'record descriptions are append-only');
END;

CREATE TRIGGER record_descriptions_append_only_delete BEFORE DELETE ON record_descriptions
BEGIN
    SELECT RAISE(ABORT, 'record descriptions are append-only');
END;
