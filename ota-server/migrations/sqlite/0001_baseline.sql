-- The schema of ota-server 0.1, before versioned migrations. Every statement is idempotent:
-- a database made by that release already has these tables and is adopted as it is.
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY, file_sha256 TEXT NOT NULL, board TEXT NOT NULL, version TEXT NOT NULL,
    security_counter INTEGER NOT NULL, size INTEGER NOT NULL, summary TEXT NOT NULL,
    uploaded_at INTEGER NOT NULL, uploaded_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS environments (
    name TEXT PRIMARY KEY, upstream TEXT, promote_min_confirmed INTEGER NOT NULL,
    failure_threshold REAL NOT NULL, stages TEXT NOT NULL, advance_ratio REAL NOT NULL,
    public_key BLOB NOT NULL, private_key BLOB, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS releases (
    environment TEXT NOT NULL, sequence INTEGER NOT NULL, image_id TEXT NOT NULL,
    board TEXT NOT NULL, kind TEXT NOT NULL, statement BLOB NOT NULL,
    created_at INTEGER NOT NULL, created_by TEXT NOT NULL, state TEXT NOT NULL,
    stage INTEGER NOT NULL, reason TEXT, halted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (environment, sequence));
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY, board TEXT NOT NULL, environment TEXT NOT NULL,
    token_hash BLOB NOT NULL UNIQUE, enrolled_at INTEGER NOT NULL, last_seen INTEGER,
    running TEXT, confirmed INTEGER NOT NULL, failed_image TEXT, slot_b TEXT,
    last_outcome TEXT, release_sequence INTEGER);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT NOT NULL, at INTEGER NOT NULL,
    image_id TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT);
CREATE INDEX IF NOT EXISTS events_by_device ON events (device, seq);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY, hash BLOB NOT NULL UNIQUE, role TEXT NOT NULL, name TEXT NOT NULL,
    created_at INTEGER NOT NULL, revoked INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS build_keys (public_key BLOB PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, actor TEXT NOT NULL,
    role TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL);
