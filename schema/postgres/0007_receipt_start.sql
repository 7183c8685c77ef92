-- PostgreSQL schema version 7: the earliest time each received run may have begun, as the
-- collector bounded it (see schema/migrations/0018_receipt_start.sql). Additive: a release at
-- version 1 to 6 keeps reading and writing a store at version 7 (writable_by stays 1); its
-- collector leaves the column NULL, which a trace reads as no bound from the token.

ALTER TABLE run_receipts ADD COLUMN began_after BIGINT;
