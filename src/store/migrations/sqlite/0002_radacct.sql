-- radacct with FreeRADIUS's column names (raddb/mods-config/sql/main/
-- sqlite/schema.sql), plus what the accounting upsert needs.
CREATE TABLE radacct (
    radacctid INTEGER PRIMARY KEY AUTOINCREMENT,
    acctsessionid TEXT NOT NULL,
    acctuniqueid TEXT NOT NULL UNIQUE,
    username TEXT,
    realm TEXT,
    nasipaddress TEXT NOT NULL,
    nasportid TEXT,
    nasporttype TEXT,
    acctstarttime DATETIME,
    acctupdatetime DATETIME,
    acctstoptime DATETIME,
    acctinterval INTEGER,
    acctsessiontime INTEGER,
    acctauthentic TEXT,
    connectinfo_start TEXT,
    connectinfo_stop TEXT,
    acctinputoctets INTEGER,
    acctoutputoctets INTEGER,
    calledstationid TEXT,
    callingstationid TEXT,
    acctterminatecause TEXT,
    servicetype TEXT,
    framedprotocol TEXT,
    framedipaddress TEXT,
    framedipv6address TEXT,
    framedipv6prefix TEXT,
    framedinterfaceid TEXT,
    delegatedipv6prefix TEXT,
    class TEXT
);
CREATE INDEX radacct_active_session ON radacct (acctuniqueid) WHERE acctstoptime IS NULL;
CREATE INDEX radacct_bulk_close ON radacct (nasipaddress, acctstarttime) WHERE acctstoptime IS NULL;
CREATE INDEX radacct_start_user ON radacct (acctstarttime, username);
CREATE INDEX radacct_username ON radacct (username);
