-- Runs recorded without part of what they used, because it was over a limit (`wrap` records
-- what fits rather than fail a build). A row is only ever added: the run keeps the flag.
CREATE TABLE run_truncations (
    run_id      INTEGER PRIMARY KEY REFERENCES runs (id),
    -- When it was first recorded as truncated (integer microseconds, UTC).
    recorded_at INTEGER NOT NULL
) STRICT;
