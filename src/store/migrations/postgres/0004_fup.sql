-- Quota and fair usage (README: "Quota and fair usage"). Usage counters live in subscriber_usage,
-- a table without change triggers on its byte counters, so the writer's
-- per-batch usage updates never make the loader reload subscribers; only
-- tier and level changes bump the 'fup' change counter.
CREATE TABLE service_fup_tiers (
    service_id BIGINT NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    period TEXT NOT NULL CHECK (period IN ('daily', 'monthly')),
    level SMALLINT NOT NULL CHECK (level BETWEEN 1 AND 6),
    threshold_bytes BIGINT NOT NULL CHECK (threshold_bytes > 0),
    download_kbps INTEGER NOT NULL CHECK (download_kbps >= 0),
    upload_kbps INTEGER NOT NULL CHECK (upload_kbps >= 0),
    filter_id TEXT,
    PRIMARY KEY (service_id, period, level)
);

-- Between start_minute and end_minute (local time, minutes after
-- midnight; wrapping past midnight when start > end) only
-- (100 - free_percent)% of the traffic counts.
CREATE TABLE service_free_hours (
    service_id BIGINT PRIMARY KEY REFERENCES services (id) ON DELETE CASCADE,
    start_minute SMALLINT NOT NULL CHECK (start_minute BETWEEN 0 AND 1439),
    end_minute SMALLINT NOT NULL CHECK (end_minute BETWEEN 0 AND 1439),
    free_percent SMALLINT NOT NULL CHECK (free_percent BETWEEN 0 AND 100)
);

CREATE TABLE subscriber_usage (
    username TEXT PRIMARY KEY,
    daily_bytes BIGINT NOT NULL DEFAULT 0,
    monthly_bytes BIGINT NOT NULL DEFAULT 0,
    daily_level SMALLINT NOT NULL DEFAULT 0,
    monthly_level SMALLINT NOT NULL DEFAULT 0,
    -- The day of month the monthly usage resets (the subscriber's creation day).
    anniversary_day SMALLINT NOT NULL DEFAULT 1,
    -- The last local date the monthly usage was reset (or counting began).
    monthly_reset_on DATE NOT NULL DEFAULT CURRENT_DATE,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

-- The last local date each reset ran (so a restart does not reset twice).
CREATE TABLE quota_resets (
    period TEXT PRIMARY KEY,
    done_on DATE NOT NULL
);

INSERT INTO change_versions (table_name) VALUES ('fup');

CREATE FUNCTION shardius_fup_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE change_versions SET version = version + 1 WHERE table_name = 'fup';
    PERFORM pg_notify('shardius_changes', 'fup');
    RETURN NULL;
END $$;

CREATE TRIGGER service_fup_tiers_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON service_fup_tiers
    FOR EACH STATEMENT EXECUTE FUNCTION shardius_fup_changed();
CREATE TRIGGER service_free_hours_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON service_free_hours
    FOR EACH STATEMENT EXECUTE FUNCTION shardius_fup_changed();
CREATE TRIGGER subscriber_usage_levels_changed AFTER UPDATE OF daily_level, monthly_level OR DELETE ON subscriber_usage
    FOR EACH STATEMENT EXECUTE FUNCTION shardius_fup_changed();
