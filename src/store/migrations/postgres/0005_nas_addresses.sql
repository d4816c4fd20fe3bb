-- The other NAS-IP-Address values a NAS entry's router may put in its
-- accounting (it signs from one interface and names another, or sits
-- behind NAT), separated by commas or spaces. Accounting from the entry's
-- source address naming any other address is recorded under the entry's
-- own address, counted and logged, so one NAS can neither close another's
-- sessions with Accounting-On/Off nor write sessions in its name.
ALTER TABLE nas_devices ADD COLUMN nas_ip_addresses TEXT NOT NULL DEFAULT '';
