-- shardius schema v1 (SQLite): NAS registry, services, subscribers,
-- radreply, preferences, and the change tracking the loader polls.
-- Timestamps are microseconds since the Unix epoch.

CREATE TABLE nas_devices (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    short_name TEXT,
    identifier TEXT,
    ip_address TEXT NOT NULL UNIQUE,
    secret TEXT NOT NULL CHECK (length(secret) BETWEEN 1 AND 100),
    type TEXT NOT NULL DEFAULT 'mikrotik' CHECK (type IN ('mikrotik', 'generic')),
    coa_port INTEGER NOT NULL DEFAULT 1700 CHECK (coa_port BETWEEN 1 AND 65535),
    require_message_authenticator TEXT NOT NULL DEFAULT 'auto'
        CHECK (require_message_authenticator IN ('auto', 'yes', 'no')),
    is_active INTEGER NOT NULL DEFAULT 1,
    api_username TEXT,
    api_password TEXT,
    updated_at INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER))
);

CREATE TABLE services (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    download_kbps INTEGER NOT NULL CHECK (download_kbps >= 0),
    upload_kbps INTEGER NOT NULL CHECK (upload_kbps >= 0),
    burst_download_kbps INTEGER,
    burst_upload_kbps INTEGER,
    burst_threshold_download_kbps INTEGER,
    burst_threshold_upload_kbps INTEGER,
    burst_time_secs INTEGER,
    pool_name TEXT,
    filter_id TEXT,
    idle_timeout INTEGER,
    daily_quota_bytes INTEGER,
    monthly_quota_bytes INTEGER,
    updated_at INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER))
);

CREATE TABLE subscribers (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_enc BLOB NOT NULL,
    service_id INTEGER REFERENCES services (id),
    is_active INTEGER NOT NULL DEFAULT 1,
    expiry_date TEXT,
    mac_address TEXT,
    static_ip TEXT,
    daily_usage_bytes INTEGER NOT NULL DEFAULT 0,
    monthly_usage_bytes INTEGER NOT NULL DEFAULT 0,
    fup_level INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)),
    updated_at INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER))
);
CREATE INDEX subscribers_updated_at ON subscribers (updated_at);

CREATE TABLE radreply (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL,
    attribute TEXT NOT NULL,
    op TEXT NOT NULL DEFAULT ':=',
    value TEXT NOT NULL
);
CREATE INDEX radreply_username ON radreply (username);

CREATE TABLE system_preferences (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO system_preferences (key, value) VALUES ('radius_interim_update_seconds', '30');
INSERT INTO system_preferences (key, value) VALUES ('radius_expiry_hard_cut', 'false');

-- Change tracking: a counter per table, bumped by every write from any
-- client (CLI, billing panel, psql), and tombstones for deleted subscribers.
CREATE TABLE change_versions (
    table_name TEXT PRIMARY KEY,
    version INTEGER NOT NULL DEFAULT 0
);
INSERT INTO change_versions (table_name) VALUES
    ('nas_devices'), ('services'), ('subscribers'), ('radreply'), ('system_preferences');

CREATE TABLE deleted_subscribers (
    username TEXT NOT NULL,
    deleted_at INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER))
);
CREATE INDEX deleted_subscribers_deleted_at ON deleted_subscribers (deleted_at);

-- Triggers (one set per table).
CREATE TRIGGER nas_devices_insert_version AFTER INSERT ON nas_devices
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'nas_devices'; END;
CREATE TRIGGER nas_devices_update_version AFTER UPDATE ON nas_devices
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'nas_devices'; END;
CREATE TRIGGER nas_devices_delete_version AFTER DELETE ON nas_devices
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'nas_devices'; END;
CREATE TRIGGER services_insert_version AFTER INSERT ON services
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'services'; END;
CREATE TRIGGER services_update_version AFTER UPDATE ON services
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'services'; END;
CREATE TRIGGER services_delete_version AFTER DELETE ON services
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'services'; END;
CREATE TRIGGER subscribers_insert_version AFTER INSERT ON subscribers
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'subscribers'; END;
CREATE TRIGGER subscribers_update_version AFTER UPDATE ON subscribers
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'subscribers'; END;
CREATE TRIGGER subscribers_delete_version AFTER DELETE ON subscribers
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'subscribers'; END;
CREATE TRIGGER radreply_insert_version AFTER INSERT ON radreply
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'radreply'; END;
CREATE TRIGGER radreply_update_version AFTER UPDATE ON radreply
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'radreply'; END;
CREATE TRIGGER radreply_delete_version AFTER DELETE ON radreply
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'radreply'; END;
CREATE TRIGGER system_preferences_insert_version AFTER INSERT ON system_preferences
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'system_preferences'; END;
CREATE TRIGGER system_preferences_update_version AFTER UPDATE ON system_preferences
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'system_preferences'; END;
CREATE TRIGGER system_preferences_delete_version AFTER DELETE ON system_preferences
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'system_preferences'; END;
CREATE TRIGGER nas_devices_touch AFTER UPDATE ON nas_devices WHEN NEW.updated_at = OLD.updated_at
BEGIN UPDATE nas_devices SET updated_at = CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER) WHERE id = NEW.id; END;
CREATE TRIGGER services_touch AFTER UPDATE ON services WHEN NEW.updated_at = OLD.updated_at
BEGIN UPDATE services SET updated_at = CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER) WHERE id = NEW.id; END;
CREATE TRIGGER subscribers_touch AFTER UPDATE ON subscribers WHEN NEW.updated_at = OLD.updated_at
BEGIN UPDATE subscribers SET updated_at = CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER) WHERE id = NEW.id; END;
CREATE TRIGGER subscribers_tombstone AFTER DELETE ON subscribers
BEGIN INSERT INTO deleted_subscribers (username) VALUES (OLD.username); END;
-- A renamed subscriber is a deletion of the old name.
CREATE TRIGGER subscribers_rename AFTER UPDATE OF username ON subscribers WHEN NEW.username <> OLD.username
BEGIN INSERT INTO deleted_subscribers (username) VALUES (OLD.username); END;
