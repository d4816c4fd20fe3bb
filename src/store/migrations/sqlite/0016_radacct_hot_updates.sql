-- PostgreSQL's migration 16 drops an index on AcctUpdateTime and sets a
-- fillfactor so that Interim-Updates become HOT updates; SQLite never had
-- that index and has no fillfactor: nothing to do here (the version number
-- keeps both schemas in step).
SELECT 1;
