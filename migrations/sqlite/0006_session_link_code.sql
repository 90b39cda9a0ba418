-- Linking by phone number: an operator asks for a pairing code (`flowhq link-code TENANT`, or
-- the QR page's "link with phone number"), which sets link_code_requested_at; the worker,
-- polling its row while WhatsApp Web waits for a link, asks WhatsApp Web for an 8-character
-- code for the tenant's phone and stores it in link_code with link_code_issued_at (a refused
-- request stores no code, the reason in error, and the time). Kept in step between
-- migrations/postgres and migrations/sqlite.
ALTER TABLE whatsapp_sessions ADD COLUMN link_code text;
ALTER TABLE whatsapp_sessions ADD COLUMN link_code_issued_at bigint;
ALTER TABLE whatsapp_sessions ADD COLUMN link_code_requested_at bigint;
