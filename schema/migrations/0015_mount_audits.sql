-- Cache-mount audits: what each mount held when an audit (or a baseline) copied it out, file
-- by file, so the next audit diffs against it. Times are integer microseconds, UTC.

-- A finding is about a registry repository (`audit registry`) or a cache mount (`audit
-- mounts`: `registry` holds the builder, `repository` the mount id, `tag` the file's path).
-- Both share one id space: `incident open --from-audit ID` takes either.
ALTER TABLE audit_findings ADD COLUMN target TEXT NOT NULL DEFAULT 'registry'
    CHECK (target IN ('registry', 'mount'));

CREATE TABLE mount_snapshots (
    id        INTEGER PRIMARY KEY,
    builder   TEXT NOT NULL,
    mount_id  TEXT NOT NULL,
    taken_at  INTEGER NOT NULL,
    -- audit: taken by `audit mounts`; baseline: by `audit mounts --baseline`; purge: the empty
    -- mount right after the purge executor pruned it.
    source    TEXT NOT NULL CHECK (source IN ('audit', 'baseline', 'purge')),
    files     INTEGER NOT NULL,
    bytes     INTEGER NOT NULL,
    -- The snapshot whose file rows this one shares, when nothing changed since it: an hourly
    -- audit of an unchanged mount adds one row, not one per file.
    files_of  INTEGER REFERENCES mount_snapshots (id)
) STRICT;

CREATE INDEX mount_snapshots_by_mount ON mount_snapshots (builder, mount_id, taken_at);

-- Every file of a snapshot. `path` is the file's name bytes relative to the mount root, as the
-- builder wrote them (hostile: never a path on this machine). `sha256` is 32 bytes; for a
-- symbolic link, of its target.
CREATE TABLE mount_snapshot_files (
    snapshot_id INTEGER NOT NULL REFERENCES mount_snapshots (id),
    path        BLOB NOT NULL,
    size        INTEGER NOT NULL,
    mode        INTEGER NOT NULL,
    sha256      BLOB NOT NULL,
    PRIMARY KEY (snapshot_id, path)
) STRICT, WITHOUT ROWID;
