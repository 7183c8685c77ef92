-- PostgreSQL schema version 14: a record's words (`record_descriptions`) come with the run that
-- said them, and a mount use's details only grow. Additive: a release at version 1 to 13 keeps
-- reading and writing a store at version 14 (writable_by stays 1). One write of such a release
-- is refused for a role that may only add provenance: a believed run recorded again with words
-- for a record its earlier write named without any (no event of its own comes with them; this
-- release leaves such words out). The run's earlier write stands.
--
-- A role that may only add provenance may INSERT into `record_descriptions` with values of its
-- own choosing. A believed row replaces the words of a record a doubted run named first, and
-- so decides whether the record carries taint: without a check, a hook could give any record
-- both rows, the believed one naming a pulled layer, and every trace through that record would
-- stop there, with nothing in the run chain to show for it. This release's writers add these
-- rows only with the events of the run whose words they are, in one transaction:
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

-- A mount use seen again with options its event's detail lacks appends the union of every use
-- seen to `event_details`, and readers take the newest row: the mount's target paths, by which
-- a purge finds the mount's records on a Docker 20.10 builder. A detail a role added by hand
-- that left out a use seen before, or that a reader cannot parse (which reads as no use at
-- all), would hide those paths from every later purge. So a role that may not update builder
-- records adds a detail only as the writers write it: a JSON array of uses as this release
-- reads them (objects of known keys, each key once, each value of its type), holding each use
-- (id, namespace, target path) of the detail before it. (A detail before it that is no JSON
-- array, which no release writes, is replaced whole, as the writers replace it.) A release
-- whose uses gain an option says so in a migration of its own.
CREATE FUNCTION cw_event_details_only_grow() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    previous TEXT;
    before JSONB;
    after JSONB;
BEGIN
    IF has_table_privilege('builder_records'::regclass, 'UPDATE') THEN
        RETURN NULL;
    END IF;
    previous := coalesce(
        (SELECT d.detail FROM event_details d
         WHERE d.event_id = NEW.event_id AND d.id < NEW.id
         ORDER BY d.id DESC LIMIT 1),
        (SELECT e.detail FROM events e WHERE e.id = NEW.event_id));
    BEGIN
        before := previous::jsonb;
    EXCEPTION WHEN invalid_text_representation OR untranslatable_character THEN
        before := NULL;
    END;
    BEGIN
        after := NEW.detail::jsonb;
    EXCEPTION WHEN invalid_text_representation OR untranslatable_character THEN
        after := NULL;
    END;
    IF after IS NULL OR jsonb_typeof(after) <> 'array'
       -- Each use an object this release parses: `id` a string, every key known and given
       -- once (the text is read as `json`, which keeps what `jsonb` folds), each value of its
       -- type as the writers write it.
       OR (SELECT 1 FROM json_array_elements(NEW.detail::json) u
           WHERE json_typeof(u) <> 'object'
              OR json_typeof(u -> 'id') IS DISTINCT FROM 'string'
              OR (SELECT count(*) FROM json_object_keys(u))
                 <> (SELECT count(DISTINCT k) FROM json_object_keys(u) AS k)
              OR (SELECT 1 FROM json_each(u) f
                  WHERE NOT CASE
                      WHEN f.key IN ('id', 'namespace') THEN json_typeof(f.value) = 'string'
                      WHEN f.key IN ('target', 'from') THEN json_typeof(f.value) IN ('string', 'null')
                      WHEN f.key = 'sharing' THEN f.value::text IN ('"shared"', '"private"', '"locked"')
                      WHEN f.key = 'readonly' THEN json_typeof(f.value) = 'boolean'
                      WHEN f.key IN ('uid', 'gid', 'mode') THEN
                          json_typeof(f.value) = 'null'
                          OR (f.value::text ~ '^(0|[1-9][0-9]{0,9})$'
                              AND f.value::text::numeric <= 4294967295)
                      ELSE FALSE
                  END
                  LIMIT 1) IS NOT NULL
           LIMIT 1) IS NOT NULL
       OR (before IS NOT NULL AND jsonb_typeof(before) = 'array'
           AND (SELECT 1 FROM jsonb_array_elements(before) b
                WHERE (SELECT 1 FROM jsonb_array_elements(after) a
                       WHERE a -> 'id' IS NOT DISTINCT FROM b -> 'id'
                         AND a -> 'namespace' IS NOT DISTINCT FROM b -> 'namespace'
                         AND a -> 'target' IS NOT DISTINCT FROM b -> 'target'
                       LIMIT 1) IS NULL
                LIMIT 1) IS NOT NULL) THEN
        RAISE EXCEPTION 'details of event %: a role that may only add provenance adds a mount use''s details only as the writers write them, with every use seen before (id, namespace and target)',
                        NEW.event_id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Record the run again (`cachewarden record`): its new uses are added to the ones seen.';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER event_details_only_grow AFTER INSERT ON event_details
    FOR EACH ROW EXECUTE FUNCTION cw_event_details_only_grow();
