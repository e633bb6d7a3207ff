-- Delta updates: patches kept in the blob store, named by the images they join, and the
-- devices that failed one (offered the full image from then on). Shared by every replica.
CREATE TABLE patches (
    source TEXT NOT NULL, target TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    created_at INTEGER NOT NULL, PRIMARY KEY (source, target));
CREATE TABLE patch_failures (
    device TEXT NOT NULL, image_id TEXT NOT NULL, at INTEGER NOT NULL, detail TEXT,
    PRIMARY KEY (device, image_id));
