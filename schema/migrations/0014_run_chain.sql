-- Tamper evidence: every accepted run, and every later addition to a run's events, is an entry
-- of a hash chain. Entry n's hash is SHA-256 over entry n-1's hash (32 zero bytes before the
-- first) and a canonical encoding of what was accepted (`src/store/chain.rs`, version 1): the
-- run's key, pipeline, builder, times, status and trust, and its events with their targets
-- named by what they are (an artifact's backend, locator, digest and key; a mount's builder
-- and id; ...), not by row ids. `cachewarden verify-log` recomputes it from the stored rows.
--
-- An entry covers the events and event details of its run with ids up to its `*_through`
-- values and above those of the run's previous entry. Appends happen in the transaction that
-- writes the run, which holds SQLite's write lock, so two writers cannot fork the chain.
-- The rows of existing stores are chained after this file runs, in run id order, one entry a
-- run with everything it holds (a hook of the migration: SQL has no SHA-256).
CREATE TABLE run_chain (
    -- The entry number, from 1.
    seq              INTEGER PRIMARY KEY,
    run_id           INTEGER NOT NULL REFERENCES runs (id),
    -- run: the run as accepted, with its events; events: events added to it later.
    kind             TEXT NOT NULL CHECK (kind IN ('run', 'events')),
    events_through   INTEGER NOT NULL,
    details_through  INTEGER NOT NULL,
    -- The version of the encoding this entry was hashed with: verification re-encodes it the
    -- same way, so a later version leaves earlier entries checkable.
    encoding         INTEGER NOT NULL,
    -- SHA-256 of the previous entry's hash and this entry's encoding: 32 bytes.
    hash             BLOB NOT NULL CHECK (length(hash) = 32),
    -- When it was appended (integer microseconds, UTC); not part of the hash.
    appended_at      INTEGER NOT NULL
) STRICT;

CREATE INDEX run_chain_by_run ON run_chain (run_id, seq);

CREATE TRIGGER run_chain_never_update BEFORE UPDATE ON run_chain
BEGIN
    SELECT RAISE(ABORT, 'the run chain is append-only');
END;

CREATE TRIGGER run_chain_never_delete BEFORE DELETE ON run_chain
BEGIN
    SELECT RAISE(ABORT, 'the run chain is append-only');
END;

-- The chain head an incident (or sweep) was opened at: its trace read no more than that.
ALTER TABLE incidents ADD COLUMN chain_length INTEGER;
ALTER TABLE incidents ADD COLUMN chain_head BLOB;
