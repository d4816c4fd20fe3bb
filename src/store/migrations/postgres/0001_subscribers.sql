-- shardius schema v1 (PostgreSQL): NAS registry, services, subscribers,
-- radreply, preferences, and the change tracking the loader polls and
-- LISTENs to. Same tables and columns as the SQLite schema.

CREATE TABLE nas_devices (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    short_name TEXT,
    identifier TEXT,
    ip_address INET NOT NULL UNIQUE,
    secret TEXT NOT NULL CHECK (char_length(secret) BETWEEN 1 AND 100),
    type TEXT NOT NULL DEFAULT 'mikrotik' CHECK (type IN ('mikrotik', 'generic')),
    coa_port INTEGER NOT NULL DEFAULT 1700 CHECK (coa_port BETWEEN 1 AND 65535),
    require_message_authenticator TEXT NOT NULL DEFAULT 'auto'
        CHECK (require_message_authenticator IN ('auto', 'yes', 'no')),
    is_active BOOLEAN NOT NULL DEFAULT true,
    api_username TEXT,
    api_password TEXT,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE services (
    id BIGSERIAL PRIMARY KEY,
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
    daily_quota_bytes BIGINT,
    monthly_quota_bytes BIGINT,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE subscribers (
    id BIGSERIAL PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_enc BYTEA NOT NULL,
    service_id BIGINT REFERENCES services (id),
    is_active BOOLEAN NOT NULL DEFAULT true,
    expiry_date DATE,
    mac_address TEXT,
    static_ip INET,
    daily_usage_bytes BIGINT NOT NULL DEFAULT 0,
    monthly_usage_bytes BIGINT NOT NULL DEFAULT 0,
    fup_level INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX subscribers_updated_at ON subscribers (updated_at);

-- FreeRADIUS's radreply.
CREATE TABLE radreply (
    id SERIAL PRIMARY KEY,
    username TEXT NOT NULL DEFAULT '',
    attribute TEXT NOT NULL DEFAULT '',
    op VARCHAR(2) NOT NULL DEFAULT ':=',
    value TEXT NOT NULL DEFAULT ''
);
CREATE INDEX radreply_username ON radreply (username);

CREATE TABLE system_preferences (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO system_preferences (key, value) VALUES
    ('radius_interim_update_seconds', '30'),
    ('radius_expiry_hard_cut', 'false');

CREATE TABLE change_versions (
    table_name TEXT PRIMARY KEY,
    version BIGINT NOT NULL DEFAULT 0
);
INSERT INTO change_versions (table_name) VALUES
    ('nas_devices'), ('services'), ('subscribers'), ('radreply'), ('system_preferences');

CREATE TABLE deleted_subscribers (
    username TEXT NOT NULL,
    deleted_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX deleted_subscribers_deleted_at ON deleted_subscribers (deleted_at);

-- updated_at follows every UPDATE, whoever writes it.
CREATE FUNCTION shardius_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END $$;

-- One bump and one NOTIFY per statement: the loader LISTENs on
-- shardius_changes and applies the change within a second.
CREATE FUNCTION shardius_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE change_versions SET version = version + 1 WHERE table_name = TG_TABLE_NAME;
    PERFORM pg_notify('shardius_changes', TG_TABLE_NAME);
    RETURN NULL;
END $$;

CREATE FUNCTION shardius_tombstone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO deleted_subscribers (username) VALUES (OLD.username);
    RETURN NULL;
END $$;

CREATE TRIGGER nas_devices_touch BEFORE UPDATE ON nas_devices FOR EACH ROW EXECUTE FUNCTION shardius_touch();
CREATE TRIGGER services_touch BEFORE UPDATE ON services FOR EACH ROW EXECUTE FUNCTION shardius_touch();
CREATE TRIGGER subscribers_touch BEFORE UPDATE ON subscribers FOR EACH ROW EXECUTE FUNCTION shardius_touch();

CREATE TRIGGER nas_devices_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON nas_devices
    FOR EACH STATEMENT EXECUTE FUNCTION shardius_changed();
CREATE TRIGGER services_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON services
    FOR EACH STATEMENT EXECUTE FUNCTION shardius_changed();
CREATE TRIGGER subscribers_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON subscribers
    FOR EACH STATEMENT EXECUTE FUNCTION shardius_changed();
CREATE TRIGGER radreply_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON radreply
    FOR EACH STATEMENT EXECUTE FUNCTION shardius_changed();
CREATE TRIGGER system_preferences_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON system_preferences
    FOR EACH STATEMENT EXECUTE FUNCTION shardius_changed();

CREATE TRIGGER subscribers_tombstone AFTER DELETE ON subscribers
    FOR EACH ROW EXECUTE FUNCTION shardius_tombstone();
-- A renamed subscriber is a deletion of the old name.
CREATE TRIGGER subscribers_rename AFTER UPDATE OF username ON subscribers
    FOR EACH ROW WHEN (NEW.username IS DISTINCT FROM OLD.username) EXECUTE FUNCTION shardius_tombstone();
