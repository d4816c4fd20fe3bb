-- Byte quotas (README "Quota and fair usage"): services.daily_quota_bytes
-- and monthly_quota_bytes (0 or NULL = none) are enforced from the same
-- usage as the FUP tiers. What reaching one does: 'throttle' (the quota
-- speed below, by CoA and at every login), 'reject' (new logins get
-- Access-Reject "quota exceeded", live sessions are disconnected) or
-- 'portal' (the walled garden). A subscriber over a quota has level 7 in
-- subscriber_usage (the tiers are 1..6); the resets bring it down.
ALTER TABLE services ADD COLUMN quota_action TEXT NOT NULL DEFAULT 'throttle'
    CHECK (quota_action IN ('throttle', 'reject', 'portal'));
ALTER TABLE services ADD COLUMN quota_download_kbps INTEGER NOT NULL DEFAULT 0
    CHECK (quota_download_kbps >= 0);
ALTER TABLE services ADD COLUMN quota_upload_kbps INTEGER NOT NULL DEFAULT 0
    CHECK (quota_upload_kbps >= 0);
