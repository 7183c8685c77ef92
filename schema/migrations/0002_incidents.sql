-- Incidents, their purge plans, and the journal of every action taken.

CREATE TABLE incidents (
    id         INTEGER PRIMARY KEY,
    title      TEXT NOT NULL,
    opened_at  INTEGER NOT NULL,
    opened_by  TEXT NOT NULL,
    -- The trace arguments, as JSON, so the trace can be re-run.
    seeds      TEXT NOT NULL,
    -- The trace result at open, as JSON (schema/trace.schema.json).
    trace      TEXT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    closed_at  INTEGER,
    closed_by  TEXT,
    -- Set while an execution holds the incident; cleared when it ends.
    lock_owner TEXT,
    lock_at    INTEGER,
    -- Where `purge --execute` saved the evidence of what it deleted.
    evidence_dir TEXT
) STRICT;

-- One row per planned action; `state` is the journal: pending -> running -> done | failed | skipped.
CREATE TABLE actions (
    id          INTEGER PRIMARY KEY,
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    -- Where the action acts: a registry host or a builder name (concurrency is per target).
    place       TEXT NOT NULL,
    -- The action's target and parameters, as JSON.
    target      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    in_scope    INTEGER NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'running', 'done', 'failed', 'skipped')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    outcome     TEXT,
    error       TEXT,
    started_at  INTEGER,
    finished_at INTEGER,
    duration_us INTEGER,
    UNIQUE (incident_id, seq)
) STRICT;

CREATE INDEX actions_by_state ON actions (incident_id, state);

-- Digests (registry manifests and local image ids) tainted in each incident: while the
-- incident is open, `wrap` and `check` refuse builds that would read them.
CREATE TABLE incident_digests (
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    digest      TEXT NOT NULL,
    name        TEXT NOT NULL,
    PRIMARY KEY (incident_id, digest)
) STRICT, WITHOUT ROWID;

CREATE INDEX incident_digests_by_digest ON incident_digests (digest);

-- Builds that went ahead with `--allow-tainted`.
CREATE TABLE containment_overrides (
    id          INTEGER PRIMARY KEY,
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    digest      TEXT NOT NULL,
    pipeline    TEXT NOT NULL,
    run_key     TEXT NOT NULL,
    at          INTEGER NOT NULL,
    by          TEXT NOT NULL
) STRICT;

-- Each verification of an incident: when, by whom, and what it found (JSON).
CREATE TABLE verifications (
    id          INTEGER PRIMARY KEY,
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    at          INTEGER NOT NULL,
    by          TEXT NOT NULL,
    clean       INTEGER NOT NULL,
    result      TEXT NOT NULL
) STRICT;
