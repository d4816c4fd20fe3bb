-- What `shardius import freeradius` brings over (README "Moving from
-- FreeRADIUS").
-- password_kind: 'cleartext' (password_enc holds the password) or
-- 'nt-hash' (it holds the 16-byte NT hash of a FreeRADIUS NT-Password:
-- MS-CHAPv2 and PAP work, CHAP cannot without the password itself).
ALTER TABLE subscribers ADD COLUMN password_kind TEXT NOT NULL DEFAULT 'cleartext';
-- max_sessions: FreeRADIUS's Simultaneous-Use, kept for the
-- simultaneous-use policy; not enforced yet.
ALTER TABLE subscribers ADD COLUMN max_sessions INTEGER;
-- reply_attributes: the service's own reply attributes, one
-- "Attribute op value" per line (a FreeRADIUS group's radgroupreply).
ALTER TABLE services ADD COLUMN reply_attributes TEXT NOT NULL DEFAULT '';
