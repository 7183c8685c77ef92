-- Time-suspect runs are in every time window a trace compares them with: each trace query
-- that looks from a time on also looks them up, from their receipts. They are few, and this
-- index holds only them.
CREATE INDEX run_receipts_time_suspect ON run_receipts (run_id) WHERE time_suspect IS NOT NULL;
