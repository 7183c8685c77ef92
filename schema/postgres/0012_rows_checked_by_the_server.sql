-- PostgreSQL schema version 12: an event, a chain entry or a receipt is checked by the server
-- as it is added, whoever adds it and however (`record`, `import`, `COPY`, an INSERT of the
-- role's own). Additive: nothing any release writes is refused, so a release at version 1 to
-- 11 keeps reading and writing a store at version 12 (writable_by stays 1).
--
-- A role that may only add provenance may INSERT into `events` and `run_chain` with values of
-- its own choosing, not only the ones `record` computes. Rows that `record` never writes, and
-- that could never be taken back (neither table lets a row be deleted), would have:
-- - an event whose target is no row of the table its kind names, or whose kind is none of the
--   nine: every trace reaching its run stops on it, for good, and the event pages (which number
--   an unknown kind as a reused record) disagree with the table;
-- - a chain entry that does not follow on from the head: a sequence number far ahead leaves no
--   room for the next entry. (An entry at the head's next number whose hash or content is not
--   the store's is still taken, and `verify-log` names it as the chain's first break.)
--
-- Receipts are the collector's (`db grant --role collector`). A hook adds one only as `record`
-- does: the store's own doubt of the times of a run it adds in the same transaction. Else a
-- hook could give earlier runs of any pipeline a receipt, bounding when a run began (a trace
-- from it would miss what it did before) or doubting its times (a trace would take in what it
-- never touched). A collector is a role that may execute `cw_collects_receipts()`. Every role
-- that could add receipts and refusals without being a responder (every hook and collector
-- granted before this version) is given it here, so that no collector stops; `db migrate`
-- names them, and `db grant --role hook` takes it back.

DO $$ BEGIN
    PERFORM set_config('search_path', quote_ident(current_schema()) || ', pg_catalog, pg_temp', true);
END $$;

-- The checks below look each new row up by a scalar subquery, which the planner never turns
-- into a join: PL/pgSQL keeps a function's plans for the life of the server process, planned
-- for the size of the first statement's new rows, so a join chosen for a large first batch
-- would read a whole table at every later `record` on that process (a pooled one lives long).
-- A lookup a row costs an import batch a probe of an index a row, and a `record` a few.
--
-- Schema 2's check that the rows a statement added to `events` or `run_chain` (as
-- `cw_new_rows`) each name a run, with what else they must name: an event one of the nine
-- kinds and a row of the table that kind points into (the comment on `events`, version 1); a
-- chain entry the chain's head, carrying it on: sequence numbers from one past the highest
-- before them (1 for the first entry), with no gap. Entries are appended under the writer
-- lock, so no other writer's come in between. (PL/pgSQL compiles a trigger function for each
-- table apart, so each table's statements are planned for its own rows.)
CREATE OR REPLACE FUNCTION cw_rows_name_runs() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    missing BIGINT;
    refused RECORD;
    lowest BIGINT;
    highest BIGINT;
    added BIGINT;
    head BIGINT;
    top BIGINT;
BEGIN
    SELECT n.run_id INTO missing
    FROM cw_new_rows n
    WHERE (SELECT 1 FROM runs r WHERE r.id = n.run_id) IS NULL
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'insert or update on table "%" violates foreign key constraint "%_run_id_fkey"',
                        TG_TABLE_NAME, TG_TABLE_NAME
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = format('Key (run_id)=(%s) is not present in table "runs".', missing);
    END IF;
    IF TG_TABLE_NAME = 'events' THEN
        SELECT n.run_id, n.kind, n.target INTO refused
        FROM cw_new_rows n
        WHERE CASE
            WHEN n.kind IN ('imported', 'exported', 'produced', 'used_base')
                THEN (SELECT 1 FROM artifacts a WHERE a.id = n.target) IS NULL
            WHEN n.kind IN ('read_mount', 'wrote_mount')
                THEN (SELECT 1 FROM mounts m WHERE m.id = n.target) IS NULL
            WHEN n.kind = 'ran_on'
                THEN (SELECT 1 FROM builders b WHERE b.id = n.target) IS NULL
            WHEN n.kind IN ('created_record', 'reused_record')
                THEN (SELECT 1 FROM builder_records br WHERE br.id = n.target) IS NULL
            ELSE TRUE
        END
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'an event of run % names % %, which the store does not hold',
                            refused.run_id, quote_literal(refused.kind), refused.target
                USING ERRCODE = 'foreign_key_violation',
                      HINT = 'An event''s kind is one of imported, exported, produced, used_base (an artifact), read_mount, wrote_mount (a mount), ran_on (a builder), created_record, reused_record (a builder record), and its target that row''s id.';
        END IF;
        RETURN NULL;
    END IF;
    SELECT min(n.seq), max(n.seq), count(*) INTO lowest, highest, added FROM cw_new_rows n;
    IF added = 0 THEN
        RETURN NULL;
    END IF;
    -- Each a read of the key's index from its end, whatever plan the function keeps: a
    -- plan kept for any `lowest` would scan the table for rows above it.
    SELECT coalesce(max(c.seq), 0) INTO head FROM run_chain c WHERE c.seq < lowest;
    SELECT max(c.seq) INTO top FROM run_chain c;
    IF lowest <> head + 1
       OR highest::numeric - lowest::numeric + 1 <> added
       OR top <> highest THEN
        RAISE EXCEPTION 'chain entries % to % do not follow on from the chain''s head at %',
                        lowest, highest, head
            USING ERRCODE = 'check_violation',
                  HINT = 'Entries are appended one past the head, with no gap, by the writer that holds the store''s writer lock.';
    END IF;
    RETURN NULL;
END;
$$;

-- Whoever may execute it may add receipts as a collector does. It answers nothing else.
CREATE FUNCTION cw_collects_receipts() RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE AS 'SELECT TRUE';

REVOKE ALL ON FUNCTION cw_collects_receipts() FROM PUBLIC;

DO $$
DECLARE
    granted RECORD;
BEGIN
    -- Roles granted INSERT on `collector_refusals` themselves (a role that inherits it from a
    -- group is given the mark through the group).
    FOR granted IN
        SELECT DISTINCT r.rolname
        FROM pg_class c, aclexplode(c.relacl) a, pg_roles r
        WHERE c.oid = 'collector_refusals'::regclass AND a.privilege_type = 'INSERT'
          AND r.oid = a.grantee AND NOT r.rolsuper
          AND NOT has_table_privilege(r.oid, 'run_receipts'::regclass, 'UPDATE')
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION cw_collects_receipts() TO %I', granted.rolname);
    END LOOP;
END $$;

-- The receipts a statement added (as `cw_new_rows`) are ones the role may add. Run as the
-- caller, whose rights tell a hook from a collector, a responder or the owner.
CREATE FUNCTION cw_receipts_a_hook_may_add() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    refused RECORD;
BEGIN
    IF has_table_privilege('run_receipts'::regclass, 'UPDATE')
       OR has_function_privilege('cw_collects_receipts()'::regprocedure, 'EXECUTE') THEN
        RETURN NULL;
    END IF;
    SELECT n.run_id, n.identity INTO refused
    FROM cw_new_rows n
    WHERE n.identity <> 'store' OR n.time_suspect IS NULL OR n.began_after IS NOT NULL
       OR n.late <> 0
       OR (SELECT r.xmin FROM runs r WHERE r.id = n.run_id)
          IS DISTINCT FROM pg_current_xact_id()::xid
       -- The run is not in the chain yet (its entry follows its receipt): no run of an earlier
       -- transaction whose id the 32-bit xmin repeats, once the server's ids wrap around.
       OR (SELECT 1 FROM run_chain c WHERE c.run_id = n.run_id LIMIT 1) IS NOT NULL
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'a receipt for run % (identity %): a role that may only add provenance adds no receipt but the store''s doubt of a run it adds in the same transaction',
                        refused.run_id, quote_literal(refused.identity)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'The collector adds receipts: give its role `cachewarden db grant NAME --role collector`.';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER run_receipts_a_hook_may_add AFTER INSERT ON run_receipts
    REFERENCING NEW TABLE AS cw_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cw_receipts_a_hook_may_add();
