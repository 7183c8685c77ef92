-- PostgreSQL schema version 9: builder prunes that removed only some of the builder's
-- records, and the records they named (see schema/migrations/0020_selective_prunes.sql).
-- Additive: a release at version 1 to 8 keeps reading and writing a store at version 9
-- (writable_by stays 1). Such a release records an incident's prune without `--full-prune`
-- as a prune of all build records: triggers mark it selective from its action, and keep the
-- records the action named, as the backfill below does for those already held. It leaves
-- `selective` out, which this release always writes: that is how the trigger knows it.

DO $$ BEGIN
    PERFORM set_config('search_path', quote_ident(current_schema()) || ', pg_catalog, pg_temp', true);
END $$;

ALTER TABLE purges ADD COLUMN selective BIGINT NOT NULL DEFAULT 0 CHECK (selective IN (0, 1));
ALTER TABLE purges ADD COLUMN records_since BIGINT;
ALTER TABLE purges ADD COLUMN records_skew BIGINT NOT NULL DEFAULT 300000000
    CHECK (records_skew >= 0);

CREATE TABLE purge_records (
    purge_id BIGINT NOT NULL REFERENCES purges (id),
    record   BIGINT NOT NULL REFERENCES builder_records (id),
    PRIMARY KEY (purge_id, record)
);

CREATE TRIGGER purge_records_append_only_update BEFORE UPDATE ON purge_records
    FOR EACH ROW EXECUTE FUNCTION cw_refuse('purges are append-only');
CREATE TRIGGER purge_records_append_only_delete BEFORE DELETE ON purge_records
    FOR EACH ROW EXECUTE FUNCTION cw_refuse('purges are append-only');
CREATE TRIGGER purge_records_never_truncate BEFORE TRUNCATE ON purge_records
    FOR EACH STATEMENT EXECUTE FUNCTION cw_refuse('purges are append-only');

-- When the action of incident $1 numbered $2 pruned records used since, as micros.
CREATE FUNCTION cw_prune_records_since(BIGINT, BIGINT) RETURNS BIGINT
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT (a.target::jsonb ->> 'used_since')::bigint FROM actions a
    WHERE a.incident_id = $1 AND a.seq = $2 AND a.target ~ '^\s*\{'
      AND jsonb_typeof(a.target::jsonb -> 'used_since') = 'number'
$$;

-- A row a release before this version wrote (no `selective`): an incident's records-only
-- prune is what its action named; one an import line claims an incident made (such a
-- release may not have kept `records_only` from it) named nothing, and cleans no mount.
CREATE FUNCTION cw_purges_selective() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.selective IS NULL THEN
        NEW.selective := 0;
        IF NEW.kind = 'builder' AND NEW.method = 'executor' AND NEW.records_only = 1 THEN
            NEW.selective := 1;
            NEW.records_since := cw_prune_records_since(NEW.incident_id, NEW.action_seq);
        ELSIF NEW.kind = 'builder' AND NEW.method = 'imported'
              AND NEW.claimed_method = 'executor' THEN
            NEW.selective := 1;
            NEW.records_only := 1;
        END IF;
    END IF;
    RETURN NEW;
END;
$$;

-- Runs after `purges_records_only`, which marks an older release's prune records-only.
CREATE TRIGGER purges_second_selective BEFORE INSERT ON purges
    FOR EACH ROW EXECUTE FUNCTION cw_purges_selective();

-- The records the action of a selective prune named, as this store holds them.
CREATE FUNCTION cw_purge_named_records() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.selective = 1 AND NEW.method = 'executor' THEN
        INSERT INTO purge_records (purge_id, record)
        SELECT NEW.id, r.id
        FROM actions a
        CROSS JOIN LATERAL jsonb_array_elements_text(a.target::jsonb -> 'record_ids') j(value)
        JOIN builder_records r ON r.builder_id = NEW.builder_id AND r.record_id = j.value
        WHERE a.incident_id = NEW.incident_id AND a.seq = NEW.action_seq
          AND a.target ~ '^\s*\{'
          AND jsonb_typeof(a.target::jsonb -> 'record_ids') = 'array'
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER purges_named_records AFTER INSERT ON purges
    FOR EACH ROW EXECUTE FUNCTION cw_purge_named_records();

ALTER TABLE purges DISABLE TRIGGER purges_append_only_update;
UPDATE purges SET selective = 1, records_since = cw_prune_records_since(incident_id, action_seq)
WHERE kind = 'builder' AND method = 'executor' AND records_only = 1;
-- (One imported before records-only prunes were told apart may have been one, whatever its
-- `records_only` says: it is taken as one, cleaning no mount.)
UPDATE purges SET selective = 1, records_only = 1
WHERE kind = 'builder' AND method = 'imported' AND claimed_method = 'executor';
ALTER TABLE purges ENABLE TRIGGER purges_append_only_update;

-- From here on a row without `selective` is a release before this version's.
ALTER TABLE purges ALTER COLUMN selective DROP DEFAULT;

INSERT INTO purge_records (purge_id, record)
SELECT u.id, r.id
FROM purges u
JOIN actions a ON a.incident_id = u.incident_id AND a.seq = u.action_seq
CROSS JOIN LATERAL jsonb_array_elements_text(a.target::jsonb -> 'record_ids') j(value)
JOIN builder_records r ON r.builder_id = u.builder_id AND r.record_id = j.value
WHERE u.selective = 1 AND u.method = 'executor' AND a.target ~ '^\s*\{'
  AND jsonb_typeof(a.target::jsonb -> 'record_ids') = 'array'
ON CONFLICT DO NOTHING;

-- Roles an earlier `db grant` gave purges to read and write this table alike: a responder's
-- prune, and an older release's, records what it named through it.
DO $$
DECLARE
    grantee RECORD;
BEGIN
    FOR grantee IN
        SELECT DISTINCT g.rolname, acl.privilege_type
        FROM pg_class t
        CROSS JOIN LATERAL aclexplode(t.relacl) AS acl
        JOIN pg_roles g ON g.oid = acl.grantee
        WHERE t.oid = 'purges'::regclass AND acl.privilege_type IN ('SELECT', 'INSERT')
          AND acl.grantee <> t.relowner
    LOOP
        EXECUTE format('GRANT %s ON purge_records TO %I', grantee.privilege_type, grantee.rolname);
    END LOOP;
END;
$$;
