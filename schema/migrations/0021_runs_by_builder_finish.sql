-- Runs by builder and finish time: the runs on a builder that were still running at or after
-- a time (a builder's readers without record evidence, the users of its build records) are
-- one range of this index, where the index by start needed every run on the builder read to
-- bound the range by its longest run. A trace from a small seed on a store of a million runs
-- no longer reads the history of every shared builder it reaches.
CREATE INDEX runs_by_builder_finish ON runs (builder_id, finished_at);
