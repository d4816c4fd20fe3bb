-- Simultaneous use (README "Simultaneous use"): a service's limit of open
-- sessions per subscriber (0 = none) and what a login over it gets.
-- subscribers.max_sessions (migration 10) overrides the limit per
-- subscriber.
ALTER TABLE services ADD COLUMN max_sessions INTEGER NOT NULL DEFAULT 0
    CHECK (max_sessions >= 0);
ALTER TABLE services ADD COLUMN over_limit TEXT NOT NULL DEFAULT 'reject'
    CHECK (over_limit IN ('reject', 'replace'));
