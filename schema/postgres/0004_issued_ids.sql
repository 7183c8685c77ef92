-- PostgreSQL schema version 4: a row's id is one its table's identity handed out. Additive: a
-- release at version 1 to 3 keeps reading and writing a store at version 4 (writable_by stays
-- 1), since every id it writes comes from the identity (`nextval`, or the column's default).
--
-- A hook role may INSERT into the tables it appends to, and so name a row's id itself. An id
-- ahead of the identity would be taken later by a row written in good faith, whose insert
-- would then fail (or, with an `ON CONFLICT DO NOTHING` that names no key, be dropped). An id
-- below 1 would keep the trace from holding the table as arrays. So a statement that adds a
-- row whose id is below 1 or above the identity's last value fails, unless its role may move
-- the identity itself (UPDATE on the sequence: a responder, or the owner copying a store
-- before `cw_sync_identities`), which could place that id anyway. An id handed out to
-- another writer that has not written it yet can still be taken: that writer's statement
-- then fails on the primary key, and nothing of its transaction is kept.

-- Runs as the role that inserted (`cw_new_rows` holds the statement's new rows): USAGE on the
-- sequence, which every role that appends has, is enough to read its last value. It reads no
-- table of the store, so its path holds only `pg_catalog`: no function, operator or type a
-- role defined in a schema can stand in for one it uses.
CREATE FUNCTION cw_rows_have_issued_ids() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    sequence REGCLASS := pg_get_serial_sequence(
        quote_ident(TG_TABLE_SCHEMA) || '.' || quote_ident(TG_TABLE_NAME),
        'id')::regclass;
    lowest BIGINT;
    highest BIGINT;
    issued BIGINT;
BEGIN
    SELECT min(n.id), max(n.id) INTO lowest, highest FROM cw_new_rows n;
    IF highest IS NULL OR has_sequence_privilege(sequence::oid, 'UPDATE') THEN
        RETURN NULL;
    END IF;
    issued := pg_sequence_last_value(sequence);
    IF lowest < 1 OR issued IS NULL OR highest > issued THEN
        RAISE EXCEPTION 'id % of table "%" was not handed out by its identity (last issued: %)',
                        CASE WHEN lowest < 1 THEN lowest ELSE highest END, TG_TABLE_NAME,
                        coalesce(issued::text, 'none')
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Only the store gives ids; leave the id column out.';
    END IF;
    RETURN NULL;
END;
$$;

-- Every table a hook role appends to that has an identity.
CREATE TRIGGER pipelines_have_issued_ids AFTER INSERT ON pipelines
    REFERENCING NEW TABLE AS cw_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cw_rows_have_issued_ids();
CREATE TRIGGER pipeline_changes_have_issued_ids AFTER INSERT ON pipeline_changes
    REFERENCING NEW TABLE AS cw_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cw_rows_have_issued_ids();
CREATE TRIGGER runs_have_issued_ids AFTER INSERT ON runs
    REFERENCING NEW TABLE AS cw_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cw_rows_have_issued_ids();
CREATE TRIGGER events_have_issued_ids AFTER INSERT ON events
    REFERENCING NEW TABLE AS cw_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cw_rows_have_issued_ids();
CREATE TRIGGER event_details_have_issued_ids AFTER INSERT ON event_details
    REFERENCING NEW TABLE AS cw_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cw_rows_have_issued_ids();
CREATE TRIGGER run_observations_have_issued_ids AFTER INSERT ON run_observations
    REFERENCING NEW TABLE AS cw_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cw_rows_have_issued_ids();
CREATE TRIGGER step_events_have_issued_ids AFTER INSERT ON step_events
    REFERENCING NEW TABLE AS cw_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cw_rows_have_issued_ids();
CREATE TRIGGER collector_refusals_have_issued_ids AFTER INSERT ON collector_refusals
    REFERENCING NEW TABLE AS cw_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cw_rows_have_issued_ids();
CREATE TRIGGER containment_overrides_have_issued_ids AFTER INSERT ON containment_overrides
    REFERENCING NEW TABLE AS cw_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cw_rows_have_issued_ids();
