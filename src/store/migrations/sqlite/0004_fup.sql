-- Quota and fair usage (README: "Quota and fair usage"); the same tables as on PostgreSQL.
-- Usage counters live in subscriber_usage, without change triggers on
-- its byte counters; tier and level changes bump the 'fup' counter.
CREATE TABLE service_fup_tiers (
    service_id INTEGER NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    period TEXT NOT NULL CHECK (period IN ('daily', 'monthly')),
    level INTEGER NOT NULL CHECK (level BETWEEN 1 AND 6),
    threshold_bytes INTEGER NOT NULL CHECK (threshold_bytes > 0),
    download_kbps INTEGER NOT NULL CHECK (download_kbps >= 0),
    upload_kbps INTEGER NOT NULL CHECK (upload_kbps >= 0),
    filter_id TEXT,
    PRIMARY KEY (service_id, period, level)
);

CREATE TABLE service_free_hours (
    service_id INTEGER PRIMARY KEY REFERENCES services (id) ON DELETE CASCADE,
    start_minute INTEGER NOT NULL CHECK (start_minute BETWEEN 0 AND 1439),
    end_minute INTEGER NOT NULL CHECK (end_minute BETWEEN 0 AND 1439),
    free_percent INTEGER NOT NULL CHECK (free_percent BETWEEN 0 AND 100)
);

CREATE TABLE subscriber_usage (
    username TEXT PRIMARY KEY,
    daily_bytes INTEGER NOT NULL DEFAULT 0,
    monthly_bytes INTEGER NOT NULL DEFAULT 0,
    daily_level INTEGER NOT NULL DEFAULT 0,
    monthly_level INTEGER NOT NULL DEFAULT 0,
    anniversary_day INTEGER NOT NULL DEFAULT 1,
    monthly_reset_on TEXT NOT NULL DEFAULT (date('now', 'localtime')),
    updated_at INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER))
);

CREATE TABLE quota_resets (
    period TEXT PRIMARY KEY,
    done_on TEXT NOT NULL
);

INSERT INTO change_versions (table_name) VALUES ('fup');

CREATE TRIGGER service_fup_tiers_insert_version AFTER INSERT ON service_fup_tiers
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'fup'; END;
CREATE TRIGGER service_fup_tiers_update_version AFTER UPDATE ON service_fup_tiers
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'fup'; END;
CREATE TRIGGER service_fup_tiers_delete_version AFTER DELETE ON service_fup_tiers
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'fup'; END;
CREATE TRIGGER service_free_hours_insert_version AFTER INSERT ON service_free_hours
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'fup'; END;
CREATE TRIGGER service_free_hours_update_version AFTER UPDATE ON service_free_hours
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'fup'; END;
CREATE TRIGGER service_free_hours_delete_version AFTER DELETE ON service_free_hours
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'fup'; END;
CREATE TRIGGER subscriber_usage_levels_version AFTER UPDATE OF daily_level, monthly_level ON subscriber_usage
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'fup'; END;
CREATE TRIGGER subscriber_usage_delete_version AFTER DELETE ON subscriber_usage
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'fup'; END;
