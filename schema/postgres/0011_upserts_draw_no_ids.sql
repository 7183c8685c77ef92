-- PostgreSQL schema version 11: the hook's upserts draw no id for a row already there, and
-- leave a row alone that they would not change. Additive: the functions keep their names,
-- arguments and results, so a release at version 1 to 10 keeps reading and writing a store at
-- version 11 (writable_by stays 1).
--
-- `INSERT ... ON CONFLICT` draws the new row's id from the identity before it meets the row
-- already there, and an identity never gives an id back: every run that read a shared cache
-- ref, built on a builder or used a mount moved that table's ids on by one, so ids ran far
-- past the rows (and apart from the ids SQLite gives the same history), and a pipeline
-- recording over and over could push them further. `DO UPDATE` also wrote a new version of the
-- row, and ran its update trigger, at every call. Each function now looks for the row first
-- and inserts only what it did not find; the writer lock every write transaction takes keeps
-- another writer from adding it in between (`ON CONFLICT` stays, for a caller without it). A
-- row found is changed from its values as it stands once locked, not as it was found: a call
-- that waited for another's commit moves first sightings only earlier and last uses only
-- later, as `DO UPDATE` did.

DO $$ BEGIN
    PERFORM set_config('search_path', quote_ident(current_schema()) || ', pg_catalog, pg_temp', true);
END $$;

-- As version 6 left it: a builder's driver and endpoint are the first ones recorded, a later
-- call fills in only what is missing, and only a role that may update builders gives them.
CREATE OR REPLACE FUNCTION cw_upsert_builder(p_name TEXT, p_driver TEXT, p_endpoint TEXT)
RETURNS BIGINT
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT
BEGIN ATOMIC
    WITH caller AS (
        SELECT CASE WHEN c.may_reach THEN p_driver END AS driver,
               CASE WHEN c.may_reach THEN p_endpoint END AS endpoint
        FROM (SELECT has_table_privilege(session_user, 'builders'::regclass, 'UPDATE')
                     AS may_reach) AS c
    ), found AS (
        SELECT b.id FROM builders b WHERE b.name = p_name
    ), changed AS (
        UPDATE builders AS b
        SET driver = coalesce(b.driver, c.driver), endpoint = coalesce(b.endpoint, c.endpoint)
        FROM found f, caller c
        WHERE b.id = f.id
          AND ((b.driver IS NULL AND c.driver IS NOT NULL)
               OR (b.endpoint IS NULL AND c.endpoint IS NOT NULL))
    ), added AS (
        INSERT INTO builders AS b (name, driver, endpoint)
        SELECT p_name, c.driver, c.endpoint FROM caller c
        WHERE NOT EXISTS (SELECT 1 FROM found)
        ON CONFLICT (name) DO UPDATE SET
            driver = coalesce(b.driver, excluded.driver),
            endpoint = coalesce(b.endpoint, excluded.endpoint)
        RETURNING b.id
    )
    SELECT f.id FROM found f UNION ALL SELECT a.id FROM added a;
END;

CREATE OR REPLACE FUNCTION cw_upsert_artifact(p_backend TEXT, p_locator TEXT, p_digest TEXT,
                                              p_key TEXT, p_first_seen BIGINT)
RETURNS BIGINT
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT
BEGIN ATOMIC
    WITH found AS (
        SELECT a.id FROM artifacts a
        WHERE a.backend = p_backend AND a.locator = p_locator AND a.digest = p_digest
          AND a.key = p_key
    ), changed AS (
        UPDATE artifacts AS a SET first_seen = least(a.first_seen, p_first_seen)
        FROM found f
        WHERE a.id = f.id AND p_first_seen < a.first_seen
    ), added AS (
        INSERT INTO artifacts AS a (backend, locator, digest, key, first_seen)
        SELECT p_backend, p_locator, p_digest, p_key, p_first_seen
        WHERE NOT EXISTS (SELECT 1 FROM found)
        ON CONFLICT (backend, locator, digest, key) DO UPDATE SET
            first_seen = least(a.first_seen, excluded.first_seen)
        RETURNING a.id
    )
    SELECT f.id FROM found f UNION ALL SELECT a.id FROM added a;
END;

CREATE OR REPLACE FUNCTION cw_upsert_mount(p_builder_id BIGINT, p_namespace TEXT,
                                           p_mount_id TEXT)
RETURNS BIGINT
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT
BEGIN ATOMIC
    WITH found AS (
        SELECT m.id FROM mounts m
        WHERE m.builder_id = p_builder_id AND m.mount_id = p_mount_id
          AND m.namespace = p_namespace
    ), added AS (
        INSERT INTO mounts AS m (builder_id, namespace, mount_id)
        SELECT p_builder_id, p_namespace, p_mount_id
        WHERE NOT EXISTS (SELECT 1 FROM found)
        ON CONFLICT (builder_id, mount_id, namespace) DO UPDATE SET namespace = excluded.namespace
        RETURNING m.id
    )
    SELECT f.id FROM found f UNION ALL SELECT a.id FROM added a;
END;

CREATE OR REPLACE FUNCTION cw_upsert_builder_record(p_builder_id BIGINT, p_record_id TEXT,
                                                    p_record_type TEXT, p_description TEXT,
                                                    p_created_at BIGINT, p_last_used_at BIGINT,
                                                    p_size BIGINT)
RETURNS BIGINT
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT
BEGIN ATOMIC
    WITH found AS (
        SELECT r.id FROM builder_records r
        WHERE r.builder_id = p_builder_id AND r.record_id = p_record_id
    ), changed AS (
        UPDATE builder_records AS r
        SET last_used_at = greatest(r.last_used_at, p_last_used_at),
            size = coalesce(p_size, r.size)
        FROM found f
        WHERE r.id = f.id
          AND (p_last_used_at > r.last_used_at
               OR (r.last_used_at IS NULL AND p_last_used_at IS NOT NULL)
               OR (p_size IS NOT NULL AND p_size IS DISTINCT FROM r.size))
    ), added AS (
        INSERT INTO builder_records AS r
            (builder_id, record_id, record_type, description, created_at, last_used_at, size)
        SELECT p_builder_id, p_record_id, p_record_type, p_description, p_created_at,
               p_last_used_at, p_size
        WHERE NOT EXISTS (SELECT 1 FROM found)
        ON CONFLICT (builder_id, record_id) DO UPDATE SET
            last_used_at = CASE
                WHEN excluded.last_used_at IS NULL THEN r.last_used_at
                WHEN r.last_used_at IS NULL THEN excluded.last_used_at
                ELSE greatest(r.last_used_at, excluded.last_used_at) END,
            size = coalesce(excluded.size, r.size)
        RETURNING r.id
    )
    SELECT f.id FROM found f UNION ALL SELECT a.id FROM added a;
END;

-- The batch forms (version 3): new rows still get their ids in the order given, and the rows
-- come back in that order, as before (a caller may take the ids by position).
CREATE OR REPLACE FUNCTION cw_upsert_artifacts(p_backend TEXT[], p_locator TEXT[],
                                               p_digest TEXT[], p_key TEXT[],
                                               p_first_seen BIGINT[])
RETURNS TABLE (backend TEXT, locator TEXT, digest TEXT, key TEXT, id BIGINT)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT
BEGIN ATOMIC
    WITH given AS (
        SELECT u.backend, u.locator, u.digest, u.key, u.first_seen, u.o
        FROM unnest(p_backend, p_locator, p_digest, p_key, p_first_seen) WITH ORDINALITY
             AS u(backend, locator, digest, key, first_seen, o)
    ), found AS (
        SELECT g.o, a.id, g.first_seen
        FROM given g
        JOIN artifacts a ON a.backend = g.backend AND a.locator = g.locator
                        AND a.digest = g.digest AND a.key = g.key
    ), changed AS (
        UPDATE artifacts AS a SET first_seen = least(a.first_seen, f.first_seen)
        FROM found f
        WHERE a.id = f.id AND f.first_seen < a.first_seen
    ), added AS (
        INSERT INTO artifacts AS a (backend, locator, digest, key, first_seen)
        SELECT g.backend, g.locator, g.digest, g.key, g.first_seen
        FROM given g
        WHERE NOT EXISTS (SELECT 1 FROM found f WHERE f.o = g.o)
        ORDER BY g.o
        ON CONFLICT (backend, locator, digest, key) DO UPDATE SET
            first_seen = least(a.first_seen, excluded.first_seen)
        RETURNING a.backend, a.locator, a.digest, a.key, a.id
    )
    SELECT x.backend, x.locator, x.digest, x.key, x.id
    FROM (SELECT g.o, g.backend, g.locator, g.digest, g.key, f.id
          FROM found f JOIN given g ON g.o = f.o
          UNION ALL
          SELECT g.o, a.backend, a.locator, a.digest, a.key, a.id
          FROM added a
          JOIN given g ON g.backend = a.backend AND g.locator = a.locator
                      AND g.digest = a.digest AND g.key = a.key) AS x
    ORDER BY x.o;
END;

CREATE OR REPLACE FUNCTION cw_upsert_builder_records(p_builder_id BIGINT[], p_record_id TEXT[],
                                                     p_record_type TEXT[], p_description TEXT[],
                                                     p_created_at BIGINT[],
                                                     p_last_used_at BIGINT[], p_size BIGINT[])
RETURNS TABLE (builder_id BIGINT, record_id TEXT, id BIGINT)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT
BEGIN ATOMIC
    WITH given AS (
        SELECT u.builder_id, u.record_id, u.record_type, u.description, u.created_at,
               u.last_used_at, u.size, u.o
        FROM unnest(p_builder_id, p_record_id, p_record_type, p_description, p_created_at,
                    p_last_used_at, p_size) WITH ORDINALITY
             AS u(builder_id, record_id, record_type, description, created_at, last_used_at,
                  size, o)
    ), found AS (
        SELECT g.o, r.id, g.last_used_at, g.size
        FROM given g
        JOIN builder_records r ON r.builder_id = g.builder_id AND r.record_id = g.record_id
    ), changed AS (
        UPDATE builder_records AS r
        SET last_used_at = greatest(r.last_used_at, f.last_used_at),
            size = coalesce(f.size, r.size)
        FROM found f
        WHERE r.id = f.id
          AND (f.last_used_at > r.last_used_at
               OR (r.last_used_at IS NULL AND f.last_used_at IS NOT NULL)
               OR (f.size IS NOT NULL AND f.size IS DISTINCT FROM r.size))
    ), added AS (
        INSERT INTO builder_records AS r
            (builder_id, record_id, record_type, description, created_at, last_used_at, size)
        SELECT g.builder_id, g.record_id, g.record_type, g.description, g.created_at,
               g.last_used_at, g.size
        FROM given g
        WHERE NOT EXISTS (SELECT 1 FROM found f WHERE f.o = g.o)
        ORDER BY g.o
        ON CONFLICT (builder_id, record_id) DO UPDATE SET
            last_used_at = CASE
                WHEN excluded.last_used_at IS NULL THEN r.last_used_at
                WHEN r.last_used_at IS NULL THEN excluded.last_used_at
                ELSE greatest(r.last_used_at, excluded.last_used_at) END,
            size = coalesce(excluded.size, r.size)
        RETURNING r.builder_id, r.record_id, r.id
    )
    SELECT x.builder_id, x.record_id, x.id
    FROM (SELECT g.o, g.builder_id, g.record_id, f.id
          FROM found f JOIN given g ON g.o = f.o
          UNION ALL
          SELECT g.o, a.builder_id, a.record_id, a.id
          FROM added a JOIN given g ON g.builder_id = a.builder_id AND g.record_id = a.record_id)
         AS x
    ORDER BY x.o;
END;
