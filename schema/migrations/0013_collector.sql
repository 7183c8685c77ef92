-- The collector (`cachewarden serve`): when it received each run and on whose word, and the
-- requests it refused, kept as evidence. Both append-only.

-- One receipt per run the collector accepted: the first time it was received.
CREATE TABLE run_receipts (
    run_id        INTEGER PRIMARY KEY REFERENCES runs (id),
    received_at   INTEGER NOT NULL,
    -- `issuer#pipeline` for an OIDC token, `token:name` for a static one.
    identity      TEXT NOT NULL,
    -- 1 when the token had expired (within the grace): a run sent from a spool.
    late          INTEGER NOT NULL DEFAULT 0 CHECK (late IN (0, 1)),
    -- Why the run's own times cannot be believed, when they cannot.
    time_suspect  TEXT
) STRICT;

CREATE TRIGGER run_receipts_never_update BEFORE UPDATE ON run_receipts
BEGIN
    SELECT RAISE(ABORT, 'run receipts are append-only');
END;

CREATE TRIGGER run_receipts_never_delete BEFORE DELETE ON run_receipts
BEGIN
    SELECT RAISE(ABORT, 'run receipts are append-only');
END;

-- Each refused request: when, what it claimed to be, why.
CREATE TABLE collector_refusals (
    id        INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    status    INTEGER NOT NULL,
    code      TEXT NOT NULL,
    reason    TEXT NOT NULL,
    -- Who the request claimed to be; unverified when the token was refused.
    claimed   TEXT NOT NULL,
    -- The run the body named (`pipeline/run`), when it named one.
    run_name  TEXT
) STRICT;

CREATE INDEX collector_refusals_by_time ON collector_refusals (at);

CREATE TRIGGER collector_refusals_never_update BEFORE UPDATE ON collector_refusals
BEGIN
    SELECT RAISE(ABORT, 'collector refusals are append-only');
END;

CREATE TRIGGER collector_refusals_never_delete BEFORE DELETE ON collector_refusals
BEGIN
    SELECT RAISE(ABORT, 'collector refusals are append-only');
END;
