-- A fresh QR flow asked for by an operator (`flowhq qr TENANT`) after the worker gave up
-- waiting for a scan (QR_TIMEOUT). The idle worker polls this column and starts a new QR flow
-- when it is newer than its timeout. Kept in step between migrations/postgres and
-- migrations/sqlite.
ALTER TABLE whatsapp_sessions ADD COLUMN qr_requested_at bigint;
