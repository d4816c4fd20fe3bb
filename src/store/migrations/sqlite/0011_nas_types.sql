-- NAS types with their own speed attributes (README "What a login gets").
-- SQLite cannot change a CHECK constraint: the table is rebuilt with the
-- same rows and ids, and its triggers made again.
CREATE TABLE nas_devices_v11 (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    short_name TEXT,
    identifier TEXT,
    ip_address TEXT NOT NULL UNIQUE,
    secret TEXT NOT NULL CHECK (length(secret) BETWEEN 1 AND 100),
    type TEXT NOT NULL DEFAULT 'mikrotik'
        CHECK (type IN ('mikrotik', 'generic', 'cisco', 'juniper', 'huawei', 'accel-ppp')),
    coa_port INTEGER NOT NULL DEFAULT 1700 CHECK (coa_port BETWEEN 1 AND 65535),
    require_message_authenticator TEXT NOT NULL DEFAULT 'auto'
        CHECK (require_message_authenticator IN ('auto', 'yes', 'no')),
    is_active INTEGER NOT NULL DEFAULT 1,
    api_username TEXT,
    api_password TEXT,
    updated_at INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)),
    nas_ip_addresses TEXT NOT NULL DEFAULT '',
    is_proxy INTEGER NOT NULL DEFAULT 0,
    coa_via TEXT,
    coa_address TEXT
);
INSERT INTO nas_devices_v11 (id, name, short_name, identifier, ip_address, secret, type, coa_port,
        require_message_authenticator, is_active, api_username, api_password, updated_at,
        nas_ip_addresses, is_proxy, coa_via, coa_address)
    SELECT id, name, short_name, identifier, ip_address, secret, type, coa_port,
        require_message_authenticator, is_active, api_username, api_password, updated_at,
        nas_ip_addresses, is_proxy, coa_via, coa_address
    FROM nas_devices;
DROP TABLE nas_devices;
ALTER TABLE nas_devices_v11 RENAME TO nas_devices;
CREATE TRIGGER nas_devices_insert_version AFTER INSERT ON nas_devices
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'nas_devices'; END;
CREATE TRIGGER nas_devices_update_version AFTER UPDATE ON nas_devices
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'nas_devices'; END;
CREATE TRIGGER nas_devices_delete_version AFTER DELETE ON nas_devices
BEGIN UPDATE change_versions SET version = version + 1 WHERE table_name = 'nas_devices'; END;
CREATE TRIGGER nas_devices_touch AFTER UPDATE ON nas_devices WHEN NEW.updated_at = OLD.updated_at
BEGIN UPDATE nas_devices SET updated_at = CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER) WHERE id = NEW.id; END;
UPDATE change_versions SET version = version + 1 WHERE table_name = 'nas_devices';
