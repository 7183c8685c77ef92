-- PostgreSQL schema version 8: builder purges that pruned only the builder's build records,
-- not its cache mounts (see schema/migrations/0019_purge_records_only.sql). Additive: a
-- release at version 1 to 7 keeps reading and writing a store at version 8 (writable_by
-- stays 1). Such a release records an incident's prune without `--full-prune` as a whole
-- prune: a trigger marks it records-only from its action, as the backfill below marks those
-- already held.

DO $$ BEGIN
    PERFORM set_config('search_path', quote_ident(current_schema()) || ', pg_catalog, pg_temp', true);
END $$;

ALTER TABLE purges ADD COLUMN records_only BIGINT NOT NULL DEFAULT 0
    CHECK (records_only IN (0, 1));

-- Whether the action of incident $1 numbered $2 pruned a builder without pruning all of it.
CREATE FUNCTION cw_prune_was_partial(BIGINT, BIGINT) RETURNS boolean
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT EXISTS (SELECT 1 FROM actions a
                   WHERE a.incident_id = $1 AND a.seq = $2
                     AND a.target ~ '^\s*\{'
                     AND a.target::jsonb ->> 'target' = 'builder'
                     AND coalesce((a.target::jsonb ->> 'full')::boolean, false) = false)
$$;

CREATE FUNCTION cw_purges_records_only() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.kind = 'builder' AND NEW.method = 'executor' AND NEW.records_only = 0
       AND cw_prune_was_partial(NEW.incident_id, NEW.action_seq) THEN
        NEW.records_only := 1;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER purges_records_only BEFORE INSERT ON purges
    FOR EACH ROW EXECUTE FUNCTION cw_purges_records_only();

ALTER TABLE purges DISABLE TRIGGER purges_append_only_update;
UPDATE purges SET records_only = 1
WHERE kind = 'builder' AND method = 'executor' AND cw_prune_was_partial(incident_id, action_seq);
ALTER TABLE purges ENABLE TRIGGER purges_append_only_update;
