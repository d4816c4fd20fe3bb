-- Walled garden (README "Walled garden"): what a login of an expired or a
-- disabled subscriber of the service gets: 'reject' (as before) or
-- 'portal' (accepted into the captive state of [portal]).
ALTER TABLE services ADD COLUMN on_expired TEXT NOT NULL DEFAULT 'reject'
    CHECK (on_expired IN ('reject', 'portal'));
ALTER TABLE services ADD COLUMN on_disabled TEXT NOT NULL DEFAULT 'reject'
    CHECK (on_disabled IN ('reject', 'portal'));
-- Live sessions the expiry job moved into the portal by CoA (a session
-- that logged in captive says so by its Class). Rows of closed sessions
-- are removed by the job.
CREATE TABLE IF NOT EXISTS portal_sessions (
    acctuniqueid TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    reason TEXT NOT NULL,
    moved_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
