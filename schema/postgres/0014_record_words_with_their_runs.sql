-- PostgreSQL schema version 14: a record's words (`record_descriptions`) come with the run that
-- said them. Additive: nothing any release writes is refused, so a release at version 1 to 13
-- keeps reading and writing a store at version 14 (writable_by stays 1).
--
-- A role that may only add provenance may INSERT into `record_descriptions` with values of its
-- own choosing. A believed row replaces the words of a record a doubted run named first, and
-- so decides whether the record carries taint: without a check, a hook could give any record
-- both rows, the believed one naming a pulled layer, and every trace through that record would
-- stop there, with nothing in the run chain to show for it. Every writer adds these rows only
-- with the events of the run whose words they are, in one transaction:
-- - `believed = 0`: a doubted run's words for a record it names first, so every event naming
--   the record is that transaction's (there is at least one);
-- - `believed = 1`: a believed run's words, so an event of that transaction names the record.
-- A role that may move builder records itself (UPDATE: a responder, the owner copying a store)
-- is not held to this. The check runs at commit, after the transaction's events are in.

DO $$ BEGIN
    PERFORM set_config('search_path', quote_ident(current_schema()) || ', pg_catalog, pg_temp', true);
END $$;

-- Run as the caller, whose rights tell a hook from a responder or the owner. A row a statement
-- adds is looked up by the index on `events (kind, target, at)`: a record's events, which stop
-- at the first one of another transaction.
CREATE FUNCTION cw_record_words_with_their_runs() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    this_transaction XID := pg_current_xact_id()::xid;
BEGIN
    IF has_table_privilege('builder_records'::regclass, 'UPDATE') THEN
        RETURN NULL;
    END IF;
    IF (SELECT 1 FROM events e
        WHERE e.kind IN ('created_record', 'reused_record') AND e.target = NEW.record
          AND e.xmin = this_transaction
        LIMIT 1) IS NULL
       OR (NEW.believed = 0
           AND (SELECT 1 FROM events e
                WHERE e.kind IN ('created_record', 'reused_record') AND e.target = NEW.record
                  AND e.xmin <> this_transaction
                LIMIT 1) IS NOT NULL) THEN
        RAISE EXCEPTION 'words for builder record %: a role that may only add provenance adds a record''s words only with the run that says them, and a doubted run''s only for a record it names first',
                        NEW.record
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Record the run (`cachewarden record` or `import`): its words go in with its events.';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER record_descriptions_with_their_runs AFTER INSERT ON record_descriptions
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION cw_record_words_with_their_runs();
