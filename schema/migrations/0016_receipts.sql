-- Collector receipts (0013) in the trace and in the chain.
--
-- Time-suspect runs are in every time window a trace compares them with: each trace query
-- that looks from a time on also looks them up, from their receipts. They are few, and this
-- index holds only them.
CREATE INDEX run_receipts_time_suspect ON run_receipts (run_id) WHERE time_suspect IS NOT NULL;

-- From here on a run's receipt is in the run chain (0014): the entry that brings it in (the
-- run's own for a run the collector received first) is hashed with encoding version 2, which
-- adds the receipt's received_at, identity, late and time_suspect. The receipts already held
-- are chained after this file runs, one entry each with no new events (a hook of the
-- migration), so `verify-log` finds every receipt covered.
