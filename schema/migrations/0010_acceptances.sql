-- Verification that never passes with tainted content left: targets a responder leaves in
-- place on purpose, evidence that could not be saved, and scope decided when acting.

-- Each acceptance of a target left in place: who, when and why. Append-only.
CREATE TABLE acceptances (
    id          INTEGER PRIMARY KEY,
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    seq         INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    by          TEXT NOT NULL,
    reason      TEXT NOT NULL,
    FOREIGN KEY (incident_id, seq) REFERENCES actions (incident_id, seq)
) STRICT;

CREATE INDEX acceptances_by_incident ON acceptances (incident_id, seq);

CREATE TRIGGER acceptances_never_update BEFORE UPDATE ON acceptances
BEGIN
    SELECT RAISE(ABORT, 'acceptances are append-only');
END;

CREATE TRIGGER acceptances_never_delete BEFORE DELETE ON acceptances
BEGIN
    SELECT RAISE(ABORT, 'acceptances are append-only');
END;

-- Why the evidence of an action's target could not be saved before it was acted on.
ALTER TABLE actions ADD COLUMN evidence_gap TEXT;

-- Scope is decided when acting, against the config in force then: an incident's action that
-- fell outside the scope when it was planned is not settled, it waits.
UPDATE actions SET state = 'pending'
WHERE state = 'skipped' AND in_scope = 0 AND kind <> 'follow-up'
  AND incident_id IN (SELECT id FROM incidents WHERE kind = 'incident');
