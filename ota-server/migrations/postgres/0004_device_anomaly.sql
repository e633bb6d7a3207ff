-- Audit action `device.anomaly`: device reports the server did not count (see evidence.rs).
ALTER TABLE audit DROP CONSTRAINT audit_action_check;
ALTER TABLE audit ADD CONSTRAINT audit_action_check CHECK (action IN ('server.init',
    'image.upload', 'build_key.add', 'environment.create', 'environment.update',
    'release.create', 'release.rollback', 'release.pause', 'release.resume', 'device.create',
    'device.create_batch', 'device.token', 'token.create', 'token.revoke', 'rollout.advance',
    'rollout.complete', 'rollout.halt', 'device.anomaly'));
