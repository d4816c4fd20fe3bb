-- The nodes of a cluster and the leases of its singleton jobs (see the
-- PostgreSQL migration of the same number). The embedded store has one
-- node, which registers here too and leads every job. Times are
-- microseconds since the epoch, as elsewhere in this schema.
CREATE TABLE IF NOT EXISTS cluster_nodes (
    name TEXT PRIMARY KEY,
    listen TEXT NOT NULL DEFAULT '',
    version TEXT NOT NULL DEFAULT '',
    started_at INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    snapshot_age_ms INTEGER NOT NULL DEFAULT 0,
    spool_bytes INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS cluster_leases (
    job TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS cluster_job_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL,
    node TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    ran_at INTEGER NOT NULL,
    affected INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS cluster_job_runs_job_ran ON cluster_job_runs (job, ran_at);

-- The FUP levels whose speed the NAS was last told (by CoA): the quota
-- job's leader sends the CoA where they differ from the levels reached.
ALTER TABLE subscriber_usage ADD COLUMN applied_daily_level INTEGER NOT NULL DEFAULT 0;
ALTER TABLE subscriber_usage ADD COLUMN applied_monthly_level INTEGER NOT NULL DEFAULT 0;
UPDATE subscriber_usage SET applied_daily_level = daily_level, applied_monthly_level = monthly_level;
CREATE INDEX subscriber_usage_tier_pending ON subscriber_usage (username)
    WHERE daily_level <> applied_daily_level OR monthly_level <> applied_monthly_level;
