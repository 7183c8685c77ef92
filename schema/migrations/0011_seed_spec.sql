-- An incident's stored seeds become the project's own versioned seed type (version 2), no
-- longer the command line's argument struct: renaming a flag must not change what the store
-- keeps. Version 1 had `pipeline`, `runs`, `cache_ref`, `mount`, `builder`, `image`, `since`
-- and `until`, and no version; the values are kept exactly, only their keys change. Sweeps
-- store their policy instead of seeds and are left alone. Runs once per store; a rerun (a
-- damaged `user_version`) changes nothing, as only version-1 seeds are rewritten.
UPDATE incidents
SET seeds = json_set(seeds, '$.seeds', json_object(
    'version', 2,
    'pipelines', json(coalesce(json_extract(seeds, '$.seeds.pipeline'), '[]')),
    'runs', json(coalesce(json_extract(seeds, '$.seeds.runs'), '[]')),
    'cache_refs', json(coalesce(json_extract(seeds, '$.seeds.cache_ref'), '[]')),
    'mounts', json(coalesce(json_extract(seeds, '$.seeds.mount'), '[]')),
    'builders', json(coalesce(json_extract(seeds, '$.seeds.builder'), '[]')),
    'images', json(coalesce(json_extract(seeds, '$.seeds.image'), '[]')),
    'since', json_extract(seeds, '$.seeds.since'),
    'until', json_extract(seeds, '$.seeds.until')
))
WHERE json_valid(seeds)
  AND json_type(seeds, '$.seeds') = 'object'
  AND json_type(seeds, '$.seeds.version') IS NULL;
