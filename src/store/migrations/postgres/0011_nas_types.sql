-- NAS types with their own speed attributes (README "What a login gets").
ALTER TABLE nas_devices DROP CONSTRAINT IF EXISTS nas_devices_type_check;
ALTER TABLE nas_devices ADD CONSTRAINT nas_devices_type_check
    CHECK (type IN ('mikrotik', 'generic', 'cisco', 'juniper', 'huawei', 'accel-ppp'));
