-- Sweeps (scheduled policy purges) and registry audits.

-- A sweep is stored as an incident of kind 'sweep': the same plan, journal and report.
ALTER TABLE incidents ADD COLUMN kind TEXT NOT NULL DEFAULT 'incident'
    CHECK (kind IN ('incident', 'sweep'));

-- What audits saw in registries. Times are when an audit saw it (integer microseconds, UTC).

-- Each manifest an audit classified, by digest: content under a digest never changes, so a
-- later audit that finds a tag still at a known digest need not fetch it again.
CREATE TABLE audit_manifests (
    registry   TEXT NOT NULL,
    repository TEXT NOT NULL,
    digest     TEXT NOT NULL,
    -- cache-index, cache-manifest, inline-cache-image, image, index
    kind       TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    PRIMARY KEY (registry, repository, digest)
) STRICT, WITHOUT ROWID;

-- Which digest each tag pointed at: one row per (tag, digest), first and last seen there.
-- The current digest of a tag is its row with the latest `last_seen`.
CREATE TABLE audit_tags (
    registry   TEXT NOT NULL,
    repository TEXT NOT NULL,
    tag        TEXT NOT NULL,
    digest     TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    PRIMARY KEY (registry, repository, tag, digest)
) STRICT, WITHOUT ROWID;

-- Findings, each stored once under its fingerprint: a later audit reports only new ones.
CREATE TABLE audit_findings (
    id          INTEGER PRIMARY KEY,
    code        TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    registry    TEXT NOT NULL,
    repository  TEXT NOT NULL,
    tag         TEXT,
    digest      TEXT,
    message     TEXT NOT NULL,
    -- JSON object of strings: the facts behind the finding.
    detail      TEXT NOT NULL,
    -- When what it reports was first seen (see the finding's code).
    first_seen  INTEGER NOT NULL,
    -- When an audit first and last reported it.
    reported_at INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL
) STRICT;

-- One row per audit.
CREATE TABLE audits (
    id           INTEGER PRIMARY KEY,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER NOT NULL,
    tags         INTEGER NOT NULL,
    new_findings INTEGER NOT NULL,
    -- JSON array of the registries that could not be audited, with why.
    errors       TEXT NOT NULL DEFAULT '[]'
) STRICT;
