-- PostgreSQL schema version 13: what a builder record is, when the first run to name it is not
-- believed (see schema/migrations/0022_record_descriptions.sql). Additive: a release at
-- version 1 to 12 keeps reading and writing a store at version 13 (writable_by stays 1); it
-- adds no rows here, so a record such a release recorded keeps the kind its first run gave.

DO $$ BEGIN
    PERFORM set_config('search_path', quote_ident(current_schema()) || ', pg_catalog, pg_temp', true);
END $$;

CREATE TABLE record_descriptions (
    record      BIGINT NOT NULL REFERENCES builder_records (id),
    believed    BIGINT NOT NULL CHECK (believed IN (0, 1)),
    record_type TEXT NOT NULL,
    description TEXT NOT NULL,
    PRIMARY KEY (record, believed)
);

CREATE TRIGGER record_descriptions_append_only_update BEFORE UPDATE ON record_descriptions
    FOR EACH ROW EXECUTE FUNCTION cw_refuse('record descriptions are append-only');
CREATE TRIGGER record_descriptions_append_only_delete BEFORE DELETE ON record_descriptions
    FOR EACH ROW EXECUTE FUNCTION cw_refuse('record descriptions are append-only');
CREATE TRIGGER record_descriptions_never_truncate BEFORE TRUNCATE ON record_descriptions
    FOR EACH STATEMENT EXECUTE FUNCTION cw_refuse('record descriptions are append-only');

-- Roles an earlier `db grant` let add events (hooks, collectors, responders) add and read
-- these rows alike: a run's words for its records go in with its events.
DO $$
DECLARE
    grantee RECORD;
BEGIN
    FOR grantee IN
        SELECT DISTINCT g.rolname, acl.privilege_type
        FROM pg_class t
        CROSS JOIN LATERAL aclexplode(t.relacl) AS acl
        JOIN pg_roles g ON g.oid = acl.grantee
        WHERE t.oid = 'events'::regclass AND acl.privilege_type IN ('SELECT', 'INSERT')
          AND acl.grantee <> t.relowner
    LOOP
        EXECUTE format('GRANT %s ON record_descriptions TO %I', grantee.privilege_type,
                       grantee.rolname);
    END LOOP;
END;
$$;
