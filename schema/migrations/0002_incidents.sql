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
    lock_at    INTEGER
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
