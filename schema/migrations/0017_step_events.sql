-- Per-step cache hits: for each Dockerfile step of a wrapped build, whether it was served from
-- cache, read from the build's progress output, and which builder record served it (NULL when
-- it ran, or when which record served it is ambiguous: unattributed). Append-only.
CREATE TABLE step_events (
    id        INTEGER PRIMARY KEY,
    run_id    INTEGER NOT NULL REFERENCES runs (id),
    -- The step's place in the build's output, from 0.
    ordinal   INTEGER NOT NULL,
    -- The vertex name (`[stage-0 2/4] RUN ...`), as the build printed it: hostile, bounded.
    name      TEXT NOT NULL,
    -- The vertex digest where the output printed one, else ''.
    digest    TEXT NOT NULL DEFAULT '',
    cached    INTEGER NOT NULL CHECK (cached IN (0, 1)),
    record_id INTEGER REFERENCES builder_records (id),
    -- When the run finished: a hit is a read.
    at        INTEGER NOT NULL,
    -- The progress mode the steps were read from.
    source    TEXT NOT NULL CHECK (source IN ('plain', 'rawjson')),
    UNIQUE (run_id, ordinal)
) STRICT;

CREATE INDEX step_events_by_record ON step_events (record_id) WHERE record_id IS NOT NULL;
CREATE INDEX step_events_by_time ON step_events (at);

CREATE TRIGGER step_events_never_update BEFORE UPDATE ON step_events
BEGIN
    SELECT RAISE(ABORT, 'step events are append-only');
END;

CREATE TRIGGER step_events_never_delete BEFORE DELETE ON step_events
BEGIN
    SELECT RAISE(ABORT, 'step events are append-only');
END;

-- `audit builds` findings share the id space of the other audits: `target` gains `build`
-- (`registry` holds the builder, `repository` the pipeline, `tag` the step). SQLite cannot
-- change a CHECK in place: the table is rebuilt, rows and ids unchanged.
CREATE TABLE audit_findings_next (
    id          INTEGER PRIMARY KEY,
    code        TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    registry    TEXT NOT NULL,
    repository  TEXT NOT NULL,
    tag         TEXT,
    digest      TEXT,
    message     TEXT NOT NULL,
    detail      TEXT NOT NULL,
    first_seen  INTEGER NOT NULL,
    reported_at INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    target      TEXT NOT NULL DEFAULT 'registry' CHECK (target IN ('registry', 'mount', 'build'))
) STRICT;

INSERT INTO audit_findings_next
SELECT id, code, fingerprint, registry, repository, tag, digest, message, detail, first_seen,
       reported_at, last_seen, target
FROM audit_findings;

DROP TABLE audit_findings;
ALTER TABLE audit_findings_next RENAME TO audit_findings;
