-- PostgreSQL schema version 2: the same rows, written faster in bulk. Additive: a release at
-- version 1 keeps reading and writing a store at version 2 (writable_by stays 1).
--
-- 1. The page triggers compute each row's bytes inline. Version 1 called `cw_event_kind` and
--    `cw_page_text` for every row: neither is inlined by the planner (the first is STRICT over
--    a CASE, the second is IMMUTABLE over the STABLE `convert_to`), so each call ran an
--    executor of its own. The bytes written are the same (tests/it/postgres.rs checks every
--    page against the version 1 expressions, which stay).
--
-- 2. That every event and every chain entry names a recorded run is checked once a
--    statement, by an anti-join of the statement's new rows against `runs`, instead of by the
--    foreign keys `events_run_id_fkey` and `run_chain_run_id_fkey`, which ran a query and took
--    a row lock for every row (half the time of an import's `COPY` into events, two thirds of
--    its `COPY` into the chain). Runs are never updated, deleted or truncated (the triggers of
--    version 1 refuse it), so a run seen at the end of the statement stays, and no lock is
--    needed. A violation fails the statement as the foreign key did, with the same SQLSTATE
--    (23503) and message. The other foreign keys stay: the rows they point at may be deleted
--    by a responder, and only a key's lock keeps that from racing an insert. SQLite keeps all
--    its foreign keys (checked a row at a time, cheaply).
DO $$ BEGIN
    PERFORM set_config('search_path', quote_ident(current_schema()) || ', pg_catalog, pg_temp', true);
END $$;

CREATE OR REPLACE FUNCTION cw_event_pages_append() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO event_pages AS p (page, events)
    SELECT n.id >> 6,
           string_agg(int8send(n.id) || int8send(n.run_id) || n.kind_byte
                      || int8send(n.target) || int8send(n.at), ''::bytea ORDER BY n.id)
    FROM (SELECT e.id, e.run_id, e.target, e.at,
                 CASE e.kind
                     WHEN 'imported' THEN '\x01'::bytea WHEN 'exported' THEN '\x02'::bytea
                     WHEN 'produced' THEN '\x03'::bytea WHEN 'used_base' THEN '\x04'::bytea
                     WHEN 'read_mount' THEN '\x05'::bytea WHEN 'wrote_mount' THEN '\x06'::bytea
                     WHEN 'created_record' THEN '\x07'::bytea
                     WHEN 'reused_record' THEN '\x08'::bytea
                 END AS kind_byte
          FROM cw_new_events e) n
    WHERE n.kind_byte IS NOT NULL
    GROUP BY n.id >> 6
    ON CONFLICT (page) DO UPDATE SET events = cw_page_merge(p.events, excluded.events, 0, 0, 33);
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION cw_artifact_pages_append() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO artifact_pages AS p (page, artifacts)
    SELECT n.id >> 6,
           string_agg(int8send(n.id)
                      || int4send(octet_length(n.backend)) || n.backend
                      || int4send(octet_length(n.locator)) || n.locator
                      || int4send(octet_length(n.digest)) || n.digest
                      || int4send(octet_length(n.key)) || n.key,
                      ''::bytea ORDER BY n.id)
    FROM (SELECT a.id, convert_to(a.backend, 'UTF8') AS backend,
                 convert_to(a.locator, 'UTF8') AS locator, convert_to(a.digest, 'UTF8') AS digest,
                 convert_to(a.key, 'UTF8') AS key
          FROM cw_new_artifacts a) n
    GROUP BY n.id >> 6
    ON CONFLICT (page) DO UPDATE SET artifacts = cw_page_merge(p.artifacts, excluded.artifacts, 8, 4, 0);
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION cw_record_pages_append() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO record_pages AS p (page, records)
    SELECT n.id >> 6,
           string_agg(int8send(n.id) || int8send(n.builder_id)
                      || int4send(octet_length(n.record_id)) || n.record_id
                      || int4send(octet_length(n.record_type)) || n.record_type
                      || int4send(octet_length(n.description)) || n.description,
                      ''::bytea ORDER BY n.id)
    FROM (SELECT r.id, r.builder_id, convert_to(r.record_id, 'UTF8') AS record_id,
                 convert_to(r.record_type, 'UTF8') AS record_type,
                 convert_to(r.description, 'UTF8') AS description
          FROM cw_new_records r) n
    GROUP BY n.id >> 6
    ON CONFLICT (page) DO UPDATE SET records = cw_page_merge(p.records, excluded.records, 16, 3, 0);
    RETURN NULL;
END;
$$;

-- The rows a statement added to `events` or `run_chain` (as `cw_new_rows`) each name a run.
CREATE FUNCTION cw_rows_name_runs() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    missing BIGINT;
BEGIN
    SELECT n.run_id INTO missing
    FROM cw_new_rows n
    WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = n.run_id)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'insert or update on table "%" violates foreign key constraint "%_run_id_fkey"',
                        TG_TABLE_NAME, TG_TABLE_NAME
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = format('Key (run_id)=(%s) is not present in table "runs".', missing);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_name_runs AFTER INSERT ON events
    REFERENCING NEW TABLE AS cw_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cw_rows_name_runs();

CREATE TRIGGER run_chain_names_runs AFTER INSERT ON run_chain
    REFERENCING NEW TABLE AS cw_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cw_rows_name_runs();

-- Nothing runs as its owner unless a grant says so (src/store/pg.rs, `db grant`).
REVOKE ALL ON FUNCTION cw_rows_name_runs() FROM PUBLIC;

ALTER TABLE events DROP CONSTRAINT events_run_id_fkey;
ALTER TABLE run_chain DROP CONSTRAINT run_chain_run_id_fkey;
