-- The columns of artifacts and builder records that never change once a row is inserted (an
-- artifact's identity: backend, locator, digest, key; a record's builder, id, type and
-- description), packed 64 rows to a page by id like `event_pages`, so that a fleet-wide trace
-- reads them a page at a time. Triggers keep the pages in step: both tables only gain rows,
-- and their upserts update other columns.
--
-- An artifact is its id (8 bytes, big-endian), then backend, locator, digest and key; a record
-- is its id and builder_id (8 bytes each), then record_id, record_type and description. Each
-- text is its length in bytes (4, big-endian) and its UTF-8 bytes.
CREATE TABLE artifact_pages (
    -- id >> 6 of the artifacts it holds.
    page      INTEGER PRIMARY KEY,
    artifacts BLOB NOT NULL
) STRICT;

CREATE TABLE record_pages (
    -- id >> 6 of the builder records it holds.
    page    INTEGER PRIMARY KEY,
    records BLOB NOT NULL
) STRICT;

CREATE TRIGGER artifact_pages_append AFTER INSERT ON artifacts
BEGIN
    INSERT INTO artifact_pages (page, artifacts)
    VALUES (
        new.id >> 6,
        unhex(printf('%016X', new.id)
            || printf('%08X', length(CAST(new.backend AS BLOB))) || hex(new.backend)
            || printf('%08X', length(CAST(new.locator AS BLOB))) || hex(new.locator)
            || printf('%08X', length(CAST(new.digest AS BLOB))) || hex(new.digest)
            || printf('%08X', length(CAST(new.key AS BLOB))) || hex(new.key))
    )
    -- `||` yields text; the bytes are kept as they are.
    ON CONFLICT (page) DO UPDATE SET artifacts = CAST(artifacts || excluded.artifacts AS BLOB);
END;

CREATE TRIGGER record_pages_append AFTER INSERT ON builder_records
BEGIN
    INSERT INTO record_pages (page, records)
    VALUES (
        new.id >> 6,
        unhex(printf('%016X%016X', new.id, new.builder_id)
            || printf('%08X', length(CAST(new.record_id AS BLOB))) || hex(new.record_id)
            || printf('%08X', length(CAST(new.record_type AS BLOB))) || hex(new.record_type)
            || printf('%08X', length(CAST(new.description AS BLOB))) || hex(new.description))
    )
    ON CONFLICT (page) DO UPDATE SET records = CAST(records || excluded.records AS BLOB);
END;

-- Existing rows, appended one by one in id order as the triggers append them: table scans with
-- no sort, in constant memory.
INSERT INTO artifact_pages (page, artifacts)
SELECT id >> 6,
       unhex(printf('%016X', id)
           || printf('%08X', length(CAST(backend AS BLOB))) || hex(backend)
           || printf('%08X', length(CAST(locator AS BLOB))) || hex(locator)
           || printf('%08X', length(CAST(digest AS BLOB))) || hex(digest)
           || printf('%08X', length(CAST(key AS BLOB))) || hex(key))
FROM artifacts NOT INDEXED
WHERE true
ORDER BY id
ON CONFLICT (page) DO UPDATE SET artifacts = CAST(artifacts || excluded.artifacts AS BLOB);

INSERT INTO record_pages (page, records)
SELECT id >> 6,
       unhex(printf('%016X%016X', id, builder_id)
           || printf('%08X', length(CAST(record_id AS BLOB))) || hex(record_id)
           || printf('%08X', length(CAST(record_type AS BLOB))) || hex(record_type)
           || printf('%08X', length(CAST(description AS BLOB))) || hex(description))
FROM builder_records NOT INDEXED
WHERE true
ORDER BY id
ON CONFLICT (page) DO UPDATE SET records = CAST(records || excluded.records AS BLOB);
