-- The events a trace follows, packed 64 to a row by event id, so that a fleet-wide trace reads
-- one row where it would read 64. A trigger keeps the pages in step with `events`, which is
-- append-only: every write path, and any SQL that inserts events, maintains them.
--
-- Each event is 33 bytes, big-endian: id (8), run_id (8), kind (1), target (8), at (8). Kinds:
-- 1 imported, 2 exported, 3 produced, 4 used_base, 5 read_mount, 6 wrote_mount,
-- 7 created_record, 8 reused_record. `ran_on` is left out: a run's builder is in `runs`.
CREATE TABLE event_pages (
    -- id >> 6 of the events it holds.
    page   INTEGER PRIMARY KEY,
    events BLOB NOT NULL
) STRICT;

CREATE TRIGGER event_pages_append AFTER INSERT ON events
WHEN new.kind IN ('imported', 'exported', 'produced', 'used_base', 'read_mount', 'wrote_mount',
                  'created_record', 'reused_record')
BEGIN
    INSERT INTO event_pages (page, events)
    VALUES (
        new.id >> 6,
        unhex(printf('%016X%016X%02X%016X%016X', new.id, new.run_id,
            CASE new.kind
                WHEN 'imported' THEN 1 WHEN 'exported' THEN 2 WHEN 'produced' THEN 3
                WHEN 'used_base' THEN 4 WHEN 'read_mount' THEN 5 WHEN 'wrote_mount' THEN 6
                WHEN 'created_record' THEN 7 ELSE 8
            END,
            new.target, new.at))
    )
    -- `||` yields text; the bytes are kept as they are.
    ON CONFLICT (page) DO UPDATE SET events = CAST(events || excluded.events AS BLOB);
END;

-- Existing events, appended one by one in id order as the trigger appends them: a table scan,
-- with no sort, so a store of any size is packed in constant memory.
INSERT INTO event_pages (page, events)
SELECT id >> 6,
       unhex(printf('%016X%016X%02X%016X%016X', id, run_id,
           CASE kind
               WHEN 'imported' THEN 1 WHEN 'exported' THEN 2 WHEN 'produced' THEN 3
               WHEN 'used_base' THEN 4 WHEN 'read_mount' THEN 5 WHEN 'wrote_mount' THEN 6
               WHEN 'created_record' THEN 7 ELSE 8
           END,
           target, at))
FROM events NOT INDEXED
WHERE kind IN ('imported', 'exported', 'produced', 'used_base', 'read_mount', 'wrote_mount',
               'created_record', 'reused_record')
ORDER BY id
ON CONFLICT (page) DO UPDATE SET events = CAST(events || excluded.events AS BLOB);
