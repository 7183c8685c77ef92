-- Trust belongs to the run, and history only grows.
--
-- Each run carries the trust level it was recorded at (at most its pipeline's ceiling). A
-- pipeline's project and trust ceiling are no longer columns that the last hook overwrites: they
-- are the latest of the changes appended to `pipeline_changes` (the first a hook recorded, then
-- whatever the config said when it differed, each with its time). A run found overlapping a later
-- one, and a mount use re-recorded with other options, are appended observations too: `runs` and
-- `events` rows never change once written, and triggers make that checkable.

ALTER TABLE runs ADD COLUMN trust_level TEXT;

-- A run recorded before this migration ran at its pipeline's level of the time.
UPDATE runs SET trust_level = (SELECT p.trust_level FROM pipelines p WHERE p.id = runs.pipeline_id);

-- `pipelines.project` and `pipelines.trust_level` are no longer written: read `pipeline_current`.
CREATE TABLE pipeline_changes (
    id          INTEGER PRIMARY KEY,
    pipeline_id INTEGER NOT NULL REFERENCES pipelines (id),
    field       TEXT NOT NULL CHECK (field IN ('project', 'trust_level')),
    value       TEXT NOT NULL,
    -- hook: the first value a record, wrap or import brought; config: a `[[pipeline]]` entry
    -- that said otherwise than the store; migration: the value stored before this migration.
    source      TEXT NOT NULL CHECK (source IN ('hook', 'config', 'migration')),
    -- When it was recorded (integer microseconds, UTC).
    at          INTEGER NOT NULL
) STRICT;

CREATE INDEX pipeline_changes_by_pipeline ON pipeline_changes (pipeline_id, field, id);

INSERT INTO pipeline_changes (pipeline_id, field, value, source, at)
SELECT p.id, 'project', p.project, 'migration',
       coalesce((SELECT min(r.recorded_at) FROM runs r WHERE r.pipeline_id = p.id), 0)
FROM pipelines p WHERE p.project IS NOT NULL ORDER BY p.id;

INSERT INTO pipeline_changes (pipeline_id, field, value, source, at)
SELECT p.id, 'trust_level', p.trust_level, 'migration',
       coalesce((SELECT min(r.recorded_at) FROM runs r WHERE r.pipeline_id = p.id), 0)
FROM pipelines p WHERE p.trust_level IS NOT NULL ORDER BY p.id;

-- Each pipeline with its current project and trust ceiling: the latest change of each.
CREATE VIEW pipeline_current AS
SELECT p.id, p.name,
       (SELECT c.value FROM pipeline_changes c
        WHERE c.pipeline_id = p.id AND c.field = 'project' ORDER BY c.id DESC LIMIT 1) AS project,
       (SELECT c.value FROM pipeline_changes c
        WHERE c.pipeline_id = p.id AND c.field = 'trust_level' ORDER BY c.id DESC LIMIT 1) AS trust_level
FROM pipelines p;

-- Observations about a run made after it was recorded: `overlapped` when a later build on its
-- builder overlapped it (`by_run`), so that its record snapshots may hold that build's records.
CREATE TABLE run_observations (
    id       INTEGER PRIMARY KEY,
    run_id   INTEGER NOT NULL REFERENCES runs (id),
    kind     TEXT NOT NULL CHECK (kind IN ('overlapped')),
    by_run   INTEGER REFERENCES runs (id),
    at       INTEGER NOT NULL,
    UNIQUE (run_id, kind, by_run)
) STRICT;

-- A re-recorded mount use whose options differ from its event's `detail`: the union of every
-- use seen so far. The latest row is the event's detail; `events.detail` is the first.
CREATE TABLE event_details (
    id       INTEGER PRIMARY KEY,
    event_id INTEGER NOT NULL REFERENCES events (id),
    detail   TEXT NOT NULL,
    at       INTEGER NOT NULL
) STRICT;

CREATE INDEX event_details_by_event ON event_details (event_id, id);

-- Runs and events never change and are never deleted. A later migration that must rewrite them
-- drops these triggers first and creates them again after.
CREATE TRIGGER runs_never_update BEFORE UPDATE ON runs
BEGIN
    SELECT RAISE(ABORT, 'runs are append-only');
END;

CREATE TRIGGER runs_never_delete BEFORE DELETE ON runs
BEGIN
    SELECT RAISE(ABORT, 'runs are append-only');
END;

CREATE TRIGGER events_never_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

CREATE TRIGGER events_never_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

CREATE TRIGGER pipelines_never_update BEFORE UPDATE ON pipelines
BEGIN
    SELECT RAISE(ABORT, 'pipelines change only by appending to pipeline_changes');
END;
