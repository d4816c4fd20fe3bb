-- 1,000,000 subscribers for the snapshot-load benchmark (bench/pg-1m.sh).
-- Every row reuses the encrypted password of the subscriber 'seed' (added
-- with the CLI, password "pass"), so any of them can log in.
INSERT INTO subscribers (username, password_enc, service_id, is_active, expiry_date, mac_address, static_ip)
SELECT 'user' || g,
       (SELECT password_enc FROM subscribers WHERE username = 'seed'),
       (SELECT id FROM services WHERE name = 'bench'),
       true,
       DATE '2027-12-31',
       CASE WHEN g % 2 = 0 THEN 'AA:BB:CC:' || lpad(to_hex((g >> 16) & 255), 2, '0') || ':'
            || lpad(to_hex((g >> 8) & 255), 2, '0') || ':' || lpad(to_hex(g & 255), 2, '0') END,
       CASE WHEN g % 10 = 0 THEN ('100.64.0.0'::inet + g) END
FROM generate_series(1, 1000000) AS g;
ANALYZE subscribers;
