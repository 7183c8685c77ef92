-- PostgreSQL schema version 10: runs by builder and finish time (see
-- schema/migrations/0021_runs_by_builder_finish.sql). Additive: a release at version 1 to 9
-- keeps reading and writing a store at version 10 (writable_by stays 1).

DO $$ BEGIN
    PERFORM set_config('search_path', quote_ident(current_schema()) || ', pg_catalog, pg_temp', true);
END $$;

-- Building the index reads every run: on a fleet's store that can take longer than the
-- limit `[store] statement_timeout` puts on a statement, and the migration holds the writers'
-- lock whatever it takes.
SET LOCAL statement_timeout = 0;
CREATE INDEX runs_by_builder_finish ON runs (builder_id, finished_at);
