-- What is known about a manifest digest. Content under a digest never changes, so its media
-- type and the manifests it lists stay true forever: a purge that knows them need not ask the
-- registry again.
CREATE TABLE manifest_facts (
    digest     TEXT PRIMARY KEY,
    media_type TEXT NOT NULL,
    -- JSON array of the digests of the manifests an index lists, in order; [] for a manifest.
    children   TEXT NOT NULL DEFAULT '[]',
    -- When it was first learned (integer microseconds, UTC).
    learned_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
