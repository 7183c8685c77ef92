-- PostgreSQL schema version 3: a hook role's import upserts a batch's artifacts and builder
-- records by one statement each. Additive: a release at version 1 or 2 keeps reading and
-- writing a store at version 3 (writable_by stays 1), and keeps using the row functions.
--
-- A hook role may not update `artifacts` or `builder_records`, so it upserts through SECURITY
-- DEFINER functions. Version 1's take one row, a statement each, and each statement ran the
-- table's page trigger over one row: about a millisecond a row. These take a batch, already
-- folded to one row a key (a key given twice fails the statement: PostgreSQL cannot affect a
-- row twice in one `ON CONFLICT DO UPDATE`), and leave each row as the row function would
-- have, one page-trigger run a batch. Each returns the rows it wrote or found, named by key.

-- `cw_upsert_artifact` for many: new rows get their ids in the order given.
CREATE FUNCTION cw_upsert_artifacts(p_backend TEXT[], p_locator TEXT[], p_digest TEXT[],
                                    p_key TEXT[], p_first_seen BIGINT[])
RETURNS TABLE (backend TEXT, locator TEXT, digest TEXT, key TEXT, id BIGINT)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT
BEGIN ATOMIC
    INSERT INTO artifacts AS a (backend, locator, digest, key, first_seen)
    SELECT u.backend, u.locator, u.digest, u.key, u.first_seen
    FROM unnest(p_backend, p_locator, p_digest, p_key, p_first_seen) WITH ORDINALITY
         AS u(backend, locator, digest, key, first_seen, o)
    ORDER BY u.o
    ON CONFLICT (backend, locator, digest, key) DO UPDATE SET
        first_seen = least(a.first_seen, excluded.first_seen)
    RETURNING a.backend, a.locator, a.digest, a.key, a.id;
END;

-- `cw_upsert_builder_record` for many: new rows get their ids in the order given.
CREATE FUNCTION cw_upsert_builder_records(p_builder_id BIGINT[], p_record_id TEXT[],
                                          p_record_type TEXT[], p_description TEXT[],
                                          p_created_at BIGINT[], p_last_used_at BIGINT[],
                                          p_size BIGINT[])
RETURNS TABLE (builder_id BIGINT, record_id TEXT, id BIGINT)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT
BEGIN ATOMIC
    INSERT INTO builder_records AS r
        (builder_id, record_id, record_type, description, created_at, last_used_at, size)
    SELECT u.builder_id, u.record_id, u.record_type, u.description, u.created_at,
           u.last_used_at, u.size
    FROM unnest(p_builder_id, p_record_id, p_record_type, p_description, p_created_at,
                p_last_used_at, p_size) WITH ORDINALITY
         AS u(builder_id, record_id, record_type, description, created_at, last_used_at, size, o)
    ORDER BY u.o
    ON CONFLICT (builder_id, record_id) DO UPDATE SET
        last_used_at = CASE
            WHEN excluded.last_used_at IS NULL THEN r.last_used_at
            WHEN r.last_used_at IS NULL THEN excluded.last_used_at
            ELSE greatest(r.last_used_at, excluded.last_used_at) END,
        size = coalesce(excluded.size, r.size)
    RETURNING r.builder_id, r.record_id, r.id;
END;

-- Nothing runs as its owner unless a grant says so (src/store/pg.rs, `db grant`).
REVOKE ALL ON FUNCTION cw_upsert_artifacts(TEXT[], TEXT[], TEXT[], TEXT[], BIGINT[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION cw_upsert_builder_records(BIGINT[], TEXT[], TEXT[], TEXT[], BIGINT[],
                                                 BIGINT[], BIGINT[]) FROM PUBLIC;

-- Whoever may call a row function may call its batch function: roles granted by an earlier
-- `db grant` import in bulk without being granted again.
DO $$
DECLARE
    grant_to RECORD;
BEGIN
    FOR grant_to IN
        SELECT DISTINCT g.rolname, f.batch
        FROM (VALUES
                ('cw_upsert_artifact(text, text, text, text, bigint)'::regprocedure,
                 'cw_upsert_artifacts(text[], text[], text[], text[], bigint[])'),
                ('cw_upsert_builder_record(bigint, text, text, text, bigint, bigint, bigint)'::regprocedure,
                 'cw_upsert_builder_records(bigint[], text[], text[], text[], bigint[], bigint[], bigint[])'))
             AS f(row_function, batch)
        JOIN pg_proc p ON p.oid = f.row_function
        CROSS JOIN LATERAL aclexplode(p.proacl) AS acl
        JOIN pg_roles g ON g.oid = acl.grantee
        WHERE acl.privilege_type = 'EXECUTE' AND acl.grantee <> p.proowner
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', grant_to.batch, grant_to.rolname);
    END LOOP;
END;
$$;
