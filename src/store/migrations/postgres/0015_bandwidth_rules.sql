-- Time-of-day bandwidth rules (README "Bandwidth rules"): while a rule's
-- window is open (local time; days of the week it starts on, none = every
-- day; it may cross midnight), services it applies to (none = all) get
-- their speed multiplied (percent). On overlap the lowest priority wins.
CREATE TABLE IF NOT EXISTS bandwidth_rules (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    -- Bits 0..6: Monday..Sunday; 0 = every day.
    days SMALLINT NOT NULL DEFAULT 0 CHECK (days BETWEEN 0 AND 127),
    start_minute SMALLINT NOT NULL CHECK (start_minute BETWEEN 0 AND 1439),
    end_minute SMALLINT NOT NULL CHECK (end_minute BETWEEN 0 AND 1439),
    download_percent INTEGER NOT NULL CHECK (download_percent BETWEEN 1 AND 1000),
    upload_percent INTEGER NOT NULL CHECK (upload_percent BETWEEN 1 AND 1000),
    -- Comma-separated service names; '' = every service.
    services TEXT NOT NULL DEFAULT '',
    priority INTEGER NOT NULL DEFAULT 100
);
CREATE TRIGGER bandwidth_rules_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON bandwidth_rules
    FOR EACH STATEMENT EXECUTE FUNCTION shardius_fup_changed();
-- The local time up to which the leader has sent the rules' CoAs, so a
-- new leader sends the changes since, not again and not never.
CREATE TABLE IF NOT EXISTS bandwidth_rule_clock (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    evaluated_at TEXT NOT NULL
);
