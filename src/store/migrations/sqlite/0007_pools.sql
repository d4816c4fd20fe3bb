-- Server-side address pools (README "Server-side addressing").
--
-- ip_pools: one row per pool as `pool add` defined it.
-- pool_addresses: one row per address or IPv6 prefix a pool hands out.
-- The primary key is the address alone, so one address is in one pool at
-- most; state free | offered | in_use | held, the subscriber it names,
-- the session (acctuniqueid) once a Start confirmed it, the node that may
-- hand it out from memory, and times in unix milliseconds of the
-- database clock (here: the node's).
CREATE TABLE IF NOT EXISTS ip_pools (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('ipv4', 'ipv6-framed', 'ipv6-delegated')),
    ranges TEXT NOT NULL,
    excludes TEXT NOT NULL DEFAULT '',
    prefix_len INTEGER NOT NULL,
    offer_timeout_secs INTEGER NOT NULL,
    hold_secs INTEGER NOT NULL,
    created_at INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS pool_addresses (
    address TEXT PRIMARY KEY,
    pool TEXT NOT NULL REFERENCES ip_pools (name) ON DELETE CASCADE,
    state TEXT NOT NULL DEFAULT 'free' CHECK (state IN ('free', 'offered', 'in_use', 'held')),
    username TEXT,
    acctuniqueid TEXT,
    node TEXT,
    expires_ms INTEGER NOT NULL DEFAULT 0,
    transferred_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS pool_addresses_pool ON pool_addresses (pool, state);
CREATE INDEX IF NOT EXISTS pool_addresses_user ON pool_addresses (pool, username)
    WHERE username IS NOT NULL;

-- Which open session has an address: the pools' sweeps and the conflict check.
CREATE INDEX IF NOT EXISTS radacct_open_framedip ON radacct (framedipaddress)
    WHERE acctstoptime IS NULL;
