-- Dashboard sign-in sessions (issue 19). The browser holds a random secret in an HttpOnly
-- cookie; only its SHA-256 is kept here, with the hash of the management token it was opened
-- with (so revoking the token ends its sessions) and when it expires. Kept in the database, not
-- in a replica's memory, so that a session opened on one replica is valid on every other.
CREATE TABLE ui_sessions (
    hash BYTEA PRIMARY KEY,
    token_hash BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX ui_sessions_expires_at ON ui_sessions (expires_at);
