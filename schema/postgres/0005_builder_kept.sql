-- PostgreSQL schema version 5: a builder's driver and endpoint are the first ones recorded. A
-- later line fills in what is missing and changes nothing else, so a job's upload cannot point
-- a purge or a verify at another engine. Additive: a release at version 1 to 4 keeps reading
-- and writing a store at version 5 (writable_by stays 1); it calls this function as before.

-- src/store/write.rs `upsert_builder`:
--   INSERT INTO builders (name, driver, endpoint) VALUES (?1, ?2, ?3)
--   ON CONFLICT (name) DO UPDATE SET
--      driver = coalesce(driver, excluded.driver),
--      endpoint = coalesce(endpoint, excluded.endpoint)
--   RETURNING id
CREATE OR REPLACE FUNCTION cw_upsert_builder(p_name TEXT, p_driver TEXT, p_endpoint TEXT)
RETURNS BIGINT
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT
BEGIN ATOMIC
    INSERT INTO builders AS b (name, driver, endpoint) VALUES (p_name, p_driver, p_endpoint)
    ON CONFLICT (name) DO UPDATE SET
        driver = coalesce(b.driver, excluded.driver),
        endpoint = coalesce(b.endpoint, excluded.endpoint)
    RETURNING id;
END;
