-- Indexes that FreeRADIUS's own schema.sql has and shardius's lacked, under
-- FreeRADIUS's names (issue 16: one database shared during a cutover).
--
-- radacct by Class: FreeRADIUS's index keeps its spelling, "calss", so a
-- database created by either schema ends up with one index, not two.
CREATE INDEX IF NOT EXISTS radacct_calss_idx ON radacct (class);

-- radreply by (username, attribute), as FreeRADIUS's radreply_UserName
-- (unquoted, so radreply_username): replaces shardius's index on username
-- alone, which had that name.
DROP INDEX IF EXISTS radreply_username;
CREATE INDEX radreply_username ON radreply (username, attribute);
