-- Delta updates: patches kept in the blob store, named by the images they join, and the
-- devices that failed one (offered the full image from then on). Shared by every replica.
CREATE TABLE patches (
    source TEXT NOT NULL REFERENCES images (id),
    target TEXT NOT NULL REFERENCES images (id),
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL CHECK (size >= 0),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (source, target));

CREATE TABLE patch_failures (
    device TEXT NOT NULL REFERENCES devices (id),
    image_id TEXT NOT NULL REFERENCES images (id),
    at BIGINT NOT NULL,
    detail TEXT,
    PRIMARY KEY (device, image_id));
