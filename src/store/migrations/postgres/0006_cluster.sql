-- The nodes of a cluster on one database, and who leads each singleton job.
--
-- cluster_nodes: one row per node name, rewritten by the node's heartbeat
-- every cluster.heartbeat_ms; a node whose heartbeat is older than
-- cluster.node_dead_after_ms is shown dead by `shardius cluster status`.
CREATE TABLE IF NOT EXISTS cluster_nodes (
    name TEXT PRIMARY KEY,
    listen TEXT NOT NULL DEFAULT '',
    version TEXT NOT NULL DEFAULT '',
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    snapshot_age_ms BIGINT NOT NULL DEFAULT 0,
    spool_bytes BIGINT NOT NULL DEFAULT 0
);

-- A lease per singleton job: held by `holder` until `expires_at` (the
-- database's clock), renewed by the holder; `epoch` grows by one at every
-- change of holder and fences the job's writes (they commit only while
-- the lease with that epoch is still the holder's and unexpired).
CREATE TABLE IF NOT EXISTS cluster_leases (
    job TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

-- Every fenced run of a singleton job, written in the run's transaction:
-- who ran it under which epoch (what the HA tests and an operator read).
-- Pruned to the last 7 days by the runs themselves.
CREATE TABLE IF NOT EXISTS cluster_job_runs (
    id BIGSERIAL PRIMARY KEY,
    job TEXT NOT NULL,
    node TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    ran_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    affected BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS cluster_job_runs_job_ran ON cluster_job_runs (job, ran_at);

-- The FUP levels whose speed the NAS was last told (by CoA). Any node
-- raises daily_level/monthly_level as its usage writes cross a tier; the
-- leader of the quota job sends the CoA for every row where the two
-- differ and then records the levels as applied, so one node sends it.
ALTER TABLE subscriber_usage
    ADD COLUMN applied_daily_level SMALLINT NOT NULL DEFAULT 0,
    ADD COLUMN applied_monthly_level SMALLINT NOT NULL DEFAULT 0;
UPDATE subscriber_usage SET applied_daily_level = daily_level, applied_monthly_level = monthly_level;
CREATE INDEX subscriber_usage_tier_pending ON subscriber_usage (username)
    WHERE daily_level <> applied_daily_level OR monthly_level <> applied_monthly_level;
