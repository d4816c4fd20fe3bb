-- radius_logs: best-effort observability of every accept, reject and
-- accounting event (not billing: bytes are billed from radacct).
CREATE TABLE radius_logs (
    id BIGSERIAL PRIMARY KEY,
    logged_at TIMESTAMPTZ NOT NULL,
    nas_ip INET,
    username TEXT,
    event TEXT NOT NULL,
    result TEXT NOT NULL,
    reason TEXT,
    shard INTEGER
);
CREATE INDEX radius_logs_logged_at ON radius_logs (logged_at);
CREATE INDEX radius_logs_username ON radius_logs (username, logged_at);
