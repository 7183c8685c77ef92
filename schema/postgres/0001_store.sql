CREATE TABLE schema_version (version BIGINT NOT NULL, writable_by BIGINT NOT NULL);
INSERT INTO schema_version VALUES (1, 1);
