-- Build history collected from builders (BuildKit's Control API, BuildKit 0.11 and later).
--
-- Every event says where it came from: `hook` (record, wrap, import) or `build-history` (what
-- `collect` appended to a run from the builder's own history). Events stay append-only.
ALTER TABLE events ADD COLUMN source TEXT NOT NULL DEFAULT 'hook'
    CHECK (source IN ('hook', 'build-history'));

-- The BuildKit build ref a hook saw for a run (buildx's `buildx.build.ref`, last part): what a
-- history record is matched by first. Only ever added.
CREATE TABLE run_build_refs (
    run_id      INTEGER NOT NULL REFERENCES runs (id),
    build_ref   TEXT NOT NULL,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, build_ref)
) STRICT, WITHOUT ROWID;

CREATE INDEX run_build_refs_by_ref ON run_build_refs (build_ref);

-- One row per history record collected, with the run it was matched to (or stored as, for a
-- build no hook recorded): a record already here is not collected again.
CREATE TABLE build_history (
    id           INTEGER PRIMARY KEY,
    builder_id   INTEGER NOT NULL REFERENCES builders (id),
    build_ref    TEXT NOT NULL,
    run_id       INTEGER NOT NULL REFERENCES runs (id),
    -- build-ref: the hook saw the same ref; window: same builder, Dockerfile and overlapping
    -- time; unrecorded: no hook recorded it, stored as a run of `unrecorded@BUILDER`.
    matched_by   TEXT NOT NULL CHECK (matched_by IN ('build-ref', 'window', 'unrecorded')),
    created_at   INTEGER NOT NULL,
    completed_at INTEGER NOT NULL,
    -- The record's facts as collected (JSON, bounded).
    facts        TEXT NOT NULL,
    collected_at INTEGER NOT NULL,
    UNIQUE (builder_id, build_ref)
) STRICT;

CREATE INDEX build_history_by_run ON build_history (run_id);

CREATE TRIGGER build_history_never_update BEFORE UPDATE ON build_history
BEGIN
    SELECT RAISE(ABORT, 'build history is append-only');
END;
