-- The time-blind blast radius of one pipeline's runs since a time (microseconds) as a
-- recursive CTE: the SQL baseline that benches/trace.sh measures `cachewarden trace
-- --ignore-time` against.
WITH RECURSIVE tainted(kind, id) AS (
    SELECT 'run', r.id FROM runs r JOIN pipelines p ON p.id = r.pipeline_id WHERE p.name = '@PIPELINE@'
        AND r.started_at >= @SINCE@
    UNION
    -- A run taints what it wrote (failed runs export and produce nothing).
    SELECT CASE e.kind WHEN 'wrote_mount' THEN 'mount' WHEN 'created_record' THEN 'record' ELSE 'artifact' END, e.target
    FROM tainted t JOIN events e ON e.run_id = t.id
    JOIN runs r ON r.id = e.run_id
    WHERE t.kind = 'run' AND (e.kind IN ('wrote_mount', 'created_record')
        OR (e.kind IN ('exported', 'produced') AND r.status = 'succeeded'))
    UNION
    -- The same digest anywhere is the same bytes.
    SELECT 'artifact', a2.id FROM tainted t JOIN artifacts a ON a.id = t.id
    JOIN artifacts a2 ON a2.digest = a.digest
    WHERE t.kind = 'artifact' AND a.digest <> ''
    UNION
    -- Every reader of a tainted artifact.
    SELECT 'run', e.run_id FROM tainted t JOIN events e ON e.kind IN ('imported', 'used_base') AND e.target = t.id
    WHERE t.kind = 'artifact'
    UNION
    -- Every reader of a tainted mount.
    SELECT 'run', e.run_id FROM tainted t JOIN events e ON e.kind = 'read_mount' AND e.target = t.id
    WHERE t.kind = 'mount'
    UNION
    -- Every reuser of a tainted record that carries taint.
    SELECT 'run', e.run_id FROM tainted t JOIN builder_records br ON br.id = t.id
    JOIN events e ON e.kind = 'reused_record' AND e.target = br.id
    WHERE t.kind = 'record' AND br.record_type = 'regular' AND br.description NOT LIKE 'pulled from%'
        AND br.description NOT LIKE 'from local%'
    UNION
    -- A tainted run's builder, and every run on it without record-level evidence.
    SELECT 'builder', r.builder_id FROM tainted t JOIN runs r ON r.id = t.id
    WHERE t.kind = 'run' AND r.builder_id IS NOT NULL
    UNION
    SELECT 'run', r.id FROM tainted t JOIN runs r ON r.builder_id = t.id
    WHERE t.kind = 'builder' AND r.has_records = 0
)
SELECT (SELECT count(*) FROM tainted) || ' entities, ' || (SELECT count(*) FROM tainted WHERE kind = 'run') || ' runs';
