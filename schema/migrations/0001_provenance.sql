-- Provenance: who built what, on which builder, reading and writing which caches.
-- Times are integer microseconds since the Unix epoch, UTC.

CREATE TABLE pipelines (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    project     TEXT,
    trust_level TEXT
) STRICT;

CREATE TABLE builders (
    id       INTEGER PRIMARY KEY,
    name     TEXT NOT NULL UNIQUE,
    driver   TEXT,
    endpoint TEXT
) STRICT;

CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,
    pipeline_id   INTEGER NOT NULL REFERENCES pipelines (id),
    run_key       TEXT NOT NULL,
    step          TEXT NOT NULL,
    commit_sha    TEXT,
    git_ref       TEXT,
    builder_id    INTEGER REFERENCES builders (id),
    started_at    INTEGER NOT NULL,
    finished_at   INTEGER NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('succeeded', 'failed')),
    -- 1 when the hook captured which builder records the run created and reused.
    has_records   INTEGER NOT NULL DEFAULT 0,
    -- 1 when another build overlapped this one on its builder.
    overlapped    INTEGER NOT NULL DEFAULT 0,
    recorded_at   INTEGER NOT NULL,
    UNIQUE (pipeline_id, run_key, step)
) STRICT;

CREATE INDEX runs_by_pipeline_start ON runs (pipeline_id, started_at);
CREATE INDEX runs_by_builder_start ON runs (builder_id, started_at);

-- Registry manifests (caches and images), local images, and non-registry cache entries.
CREATE TABLE artifacts (
    id         INTEGER PRIMARY KEY,
    backend    TEXT NOT NULL,
    locator    TEXT NOT NULL,
    digest     TEXT NOT NULL DEFAULT '',
    key        TEXT NOT NULL DEFAULT '',
    first_seen INTEGER NOT NULL,
    UNIQUE (backend, locator, digest, key)
) STRICT;

CREATE INDEX artifacts_by_digest ON artifacts (digest) WHERE digest <> '';

-- Tags seen pointing at an artifact, with when they were first and last seen there.
CREATE TABLE artifact_tags (
    artifact_id INTEGER NOT NULL REFERENCES artifacts (id),
    tag         TEXT NOT NULL,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    PRIMARY KEY (artifact_id, tag)
) STRICT, WITHOUT ROWID;

CREATE INDEX artifact_tags_by_tag ON artifact_tags (tag);

CREATE TABLE mounts (
    id         INTEGER PRIMARY KEY,
    builder_id INTEGER NOT NULL REFERENCES builders (id),
    namespace  TEXT NOT NULL DEFAULT '',
    mount_id   TEXT NOT NULL,
    UNIQUE (builder_id, mount_id, namespace)
) STRICT;

CREATE TABLE builder_records (
    id           INTEGER PRIMARY KEY,
    builder_id   INTEGER NOT NULL REFERENCES builders (id),
    record_id    TEXT NOT NULL,
    record_type  TEXT NOT NULL DEFAULT '',
    description  TEXT NOT NULL DEFAULT '',
    created_at   INTEGER,
    last_used_at INTEGER,
    size         INTEGER,
    UNIQUE (builder_id, record_id)
) STRICT;

-- Append-only. `kind` says which table `target` points into:
--   imported, exported, produced, used_base -> artifacts
--   read_mount, wrote_mount                 -> mounts
--   ran_on                                  -> builders
--   created_record, reused_record           -> builder_records
-- Reads carry the run's finish time, writes its start time.
CREATE TABLE events (
    id     INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id),
    kind   TEXT NOT NULL,
    target INTEGER NOT NULL,
    at     INTEGER NOT NULL,
    detail TEXT,
    UNIQUE (run_id, kind, target)
) STRICT;

CREATE INDEX events_by_target ON events (kind, target, at);

-- Purges and invalidations: a mount or builder is clean after one, until the next tainted write.
CREATE TABLE purges (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('mount', 'builder')),
    builder_id  INTEGER NOT NULL REFERENCES builders (id),
    mount       INTEGER REFERENCES mounts (id),
    at          INTEGER NOT NULL,
    source      TEXT NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX purges_by_builder ON purges (builder_id, kind, at);
