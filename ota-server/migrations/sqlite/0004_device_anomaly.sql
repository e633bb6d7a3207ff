-- Audit action `device.anomaly`: SQLite's audit table does not constrain actions, so nothing
-- changes here; the number keeps both stores' migrations in step.
SELECT 1;
