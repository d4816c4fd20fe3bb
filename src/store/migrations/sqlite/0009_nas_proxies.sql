-- NASes behind a RADIUS proxy (README "Moving from FreeRADIUS").
-- is_proxy: the entry is a trusted proxy (a FreeRADIUS in front of
-- shardius); a request from it is attributed to the registered NAS its
-- NAS-IP-Address or NAS-Identifier names (that NAS's type and
-- Message-Authenticator policy apply), else to the proxy's own entry.
-- coa_via: the name of the proxy entry CoA and Disconnect for this NAS's
-- sessions go through (the proxy forwards them); empty: straight to the NAS.
-- coa_address: where CoA goes when straight to the NAS, if not ip_address.
ALTER TABLE nas_devices ADD COLUMN is_proxy INTEGER NOT NULL DEFAULT 0;
ALTER TABLE nas_devices ADD COLUMN coa_via TEXT;
ALTER TABLE nas_devices ADD COLUMN coa_address TEXT;
