-- The business name of each tenant's applied spec, as a column of its own: the status snapshot
-- reads it for every tenant, and taking it out of the spec JSON cost more than the rest of the
-- row once specs carry hours and reply overrides. The store writes it with the spec. Kept in
-- step with migrations/postgres/0003_tenant_business_name.sql.
ALTER TABLE tenants ADD COLUMN business_name text NOT NULL DEFAULT '';
UPDATE tenants SET business_name = COALESCE(spec ->> 'business_name', '');
