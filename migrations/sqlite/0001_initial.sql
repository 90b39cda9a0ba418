-- The initial Flow HQ schema (SQLite). Keep it in step with migrations/postgres/0001_initial.sql:
-- same tables, columns, constraints and indexes. Times are unix milliseconds (bigint) on both
-- backends so that the store reads and writes them the same way.

CREATE TABLE tenants (
    id                 text PRIMARY KEY,
    spec               text NOT NULL,
    spec_hash          text NOT NULL,
    revision           text NOT NULL,
    attempted_revision text,
    source_file        text NOT NULL,
    lifecycle          text NOT NULL CHECK (lifecycle IN ('active', 'paused', 'retired')),
    config_error       text,
    created_at         bigint NOT NULL,
    updated_at         bigint NOT NULL,
    retired_at         bigint
);

CREATE TABLE whatsapp_sessions (
    tenant_id     text PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    state         text NOT NULL CHECK (state IN ('STARTING', 'QR_READY', 'QR_TIMEOUT',
                      'AUTHENTICATED', 'CONNECTED', 'DISCONNECTED', 'LOGGED_OUT', 'CONFLICT',
                      'TOS_BLOCK', 'UNPAIRED', 'ERROR')),
    qr            text,
    qr_issued_at  bigint,
    last_seen_at  bigint,
    linked_number text,
    push_name     text,
    error         text,
    updated_at    bigint NOT NULL
);

CREATE TABLE worker_processes (
    tenant_id        text PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    node             text NOT NULL,
    pid              bigint,
    start_time       bigint,
    status           text NOT NULL CHECK (status IN ('STARTING', 'RUNNING', 'BACKOFF',
                         'STOPPING', 'STOPPED', 'ERROR', 'HELD')),
    restarts         bigint NOT NULL DEFAULT 0 CHECK (restarts >= 0),
    last_exit_code   bigint,
    last_exit_signal bigint,
    last_error       text,
    next_restart_at  bigint,
    started_at       bigint,
    healthy_since    bigint,
    spec_hash        text,
    updated_at       bigint NOT NULL
);

CREATE TABLE message_log (
    id            integer PRIMARY KEY AUTOINCREMENT,
    tenant_id     text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    direction     text NOT NULL CHECK (direction IN ('IN', 'OUT')),
    chat          text NOT NULL,
    from_addr     text NOT NULL,
    to_addr       text NOT NULL,
    body          text NOT NULL,
    wa_message_id text,
    created_at    bigint NOT NULL,
    UNIQUE (tenant_id, direction, wa_message_id)
);
CREATE INDEX message_log_tenant_created ON message_log (tenant_id, created_at);
CREATE INDEX message_log_tenant_id ON message_log (tenant_id, id);
CREATE INDEX message_log_created ON message_log (created_at);

-- No foreign key on tenant_id: the audit trail may name a tenant that was never recorded (a new
-- file that failed validation) and must outlive the tenant rows it talks about.
CREATE TABLE events (
    id        integer PRIMARY KEY AUTOINCREMENT,
    tenant_id text,
    at        bigint NOT NULL,
    kind      text NOT NULL,
    reason    text NOT NULL,
    revision  text,
    detail    text
);
CREATE INDEX events_tenant_at ON events (tenant_id, at);
CREATE INDEX events_at ON events (at);

CREATE TABLE contacts (
    tenant_id  text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    chat       text NOT NULL,
    opted_out  integer NOT NULL CHECK (opted_out IN (0, 1)),
    updated_at bigint NOT NULL,
    PRIMARY KEY (tenant_id, chat)
);

CREATE TABLE tenant_counters (
    tenant_id text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name      text NOT NULL,
    value     bigint NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
