-- Interim-Updates as HOT updates (performance issue, aim 4): an interim
-- changes AcctUpdateTime, AcctSessionTime, AcctInterval and the counters.
-- radacct_bulk_timeout indexed AcctUpdateTime, so every interim wrote a new
-- entry into each of radacct's indexes. Without it, and with room left in
-- each page (fillfactor), an interim rewrites the row in its page and
-- touches no index. The stale-session job finds open sessions through
-- radacct_active_session_idx (partial, open rows only); its
-- COALESCE(AcctUpdateTime, AcctStartTime) could not use this index anyway.
DROP INDEX IF EXISTS radacct_bulk_timeout;
ALTER TABLE radacct SET (fillfactor = 80);
