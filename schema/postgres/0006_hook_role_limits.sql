-- PostgreSQL schema version 6: a role that may only add provenance (`db grant --role hook`)
-- adds what a hook may add, and nothing that moves a pipeline's ceiling, a builder's endpoint
-- or a manifest's facts. Additive: a release at version 1 to 5 keeps reading and writing a
-- store at version 6 (writable_by stays 1): its hooks add the same rows as before, and a row
-- one of them could not have added as a hook is refused for it as for this release.
--
-- A role that may only add provenance is told apart as in version 4: it may not UPDATE the
-- table (the owner and a responder may).

DO $$ BEGIN
    PERFORM set_config('search_path', quote_ident(current_schema()) || ', pg_catalog, pg_temp', true);
END $$;

-- A pipeline's project and trust ceiling are the latest of its `pipeline_changes` (the
-- `pipeline_current` view), which sweeps, `ls pipelines` and the ceilings of later runs read.
-- A hook brings a pipeline's first project and ceiling (its own, or its config's) and never
-- changes them afterwards (src/store/write.rs `ensure_pipeline`). So a row added by such a
-- role must be its pipeline's first of that field, and not a migration's; a change the config
-- makes later is recorded by a role that may update the table.
CREATE FUNCTION cw_pipeline_changes_a_hook_may_add() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    refused RECORD;
BEGIN
    IF has_table_privilege('pipeline_changes'::regclass, 'UPDATE') THEN
        RETURN NULL;
    END IF;
    SELECT n.pipeline_id, n.field, n.value, n.source INTO refused
    FROM cw_new_rows n
    WHERE n.source NOT IN ('hook', 'config')
       OR EXISTS (SELECT 1 FROM pipeline_changes c
                  WHERE c.pipeline_id = n.pipeline_id AND c.field = n.field AND c.id <> n.id)
    ORDER BY n.id
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'pipeline % already has a %: a role that may only add provenance adds a pipeline''s first project and ceiling, not "%" (source %) after them',
                        refused.pipeline_id, refused.field, refused.value, refused.source
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'A responder or the owner records a change of a pipeline''s project or ceiling.';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER pipeline_changes_a_hook_may_add AFTER INSERT ON pipeline_changes
    REFERENCING NEW TABLE AS cw_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cw_pipeline_changes_a_hook_may_add();

-- A builder's driver and endpoint say where purges, `collect` and verification connect when
-- the config does not name the builder. They are recorded by a role that may update builders
-- (the owner, a responder: an import of a trusted fleet's lines, a `record` run as one); a
-- role that may only add provenance names its builders without saying how to reach them, as
-- an untrusted run does on any store, so a job's credentials cannot point a purge at another
-- engine. The caller is the session's role: inside this function `current_user` is the owner.
CREATE OR REPLACE FUNCTION cw_upsert_builder(p_name TEXT, p_driver TEXT, p_endpoint TEXT)
RETURNS BIGINT
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT
BEGIN ATOMIC
    INSERT INTO builders AS b (name, driver, endpoint)
    SELECT p_name,
           CASE WHEN caller.may_reach THEN p_driver END,
           CASE WHEN caller.may_reach THEN p_endpoint END
    FROM (SELECT has_table_privilege(session_user, 'builders'::regclass, 'UPDATE') AS may_reach)
         AS caller
    ON CONFLICT (name) DO UPDATE SET
        driver = coalesce(b.driver, excluded.driver),
        endpoint = coalesce(b.endpoint, excluded.endpoint)
    RETURNING id;
END;

-- Manifest facts (media type, children) are learned from registries by responders, and the
-- first one recorded for a digest is kept: `check` and purges trust them. A role that may only
-- add provenance reads them and adds none (`db grant --role hook` no longer grants it); the
-- grant an earlier `db grant` gave is taken back here.
DO $$
DECLARE
    grantee RECORD;
BEGIN
    FOR grantee IN
        SELECT g.rolname
        FROM pg_class t
        CROSS JOIN LATERAL aclexplode(t.relacl) AS acl
        JOIN pg_roles g ON g.oid = acl.grantee
        WHERE t.oid = 'manifest_facts'::regclass AND acl.privilege_type = 'INSERT'
          AND acl.grantee <> t.relowner
          AND NOT has_table_privilege(g.oid, t.oid, 'UPDATE')
    LOOP
        EXECUTE format('REVOKE INSERT ON manifest_facts FROM %I', grantee.rolname);
    END LOOP;
END;
$$;
