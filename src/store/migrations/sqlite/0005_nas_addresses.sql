-- The other NAS-IP-Address values a NAS entry's router may put in its
-- accounting, separated by commas or spaces (see the PostgreSQL twin).
ALTER TABLE nas_devices ADD COLUMN nas_ip_addresses TEXT NOT NULL DEFAULT '';
-- radius_logs moved to a database file of its own (shardius-logs.db), so
-- a log writer holding its write lock never holds up accounting; the rows
-- written before stay here under another name.
ALTER TABLE radius_logs RENAME TO radius_logs_before_v5;
