-- Fleet mode (`[fleet]` in flowhq.toml; PostgreSQL only, so there is no SQLite twin of this
-- file). Several daemons ("nodes") share this database; each tenant runs on exactly one of them.
-- Unlike the rest of the schema, liveness uses the database's clock (`now()`), never a node's:
-- a lease is `expires_at = now() + ttl`, and only the database compares it with `now()`.

-- One row per node: its lease, renewed by one statement per renew interval.
CREATE TABLE fleet_nodes (
    node       text PRIMARY KEY,
    capacity   integer NOT NULL CHECK (capacity >= 0),
    draining   boolean NOT NULL DEFAULT false,
    version    text NOT NULL,
    status_url text NOT NULL DEFAULT '',
    joined_at  timestamptz NOT NULL DEFAULT now(),
    renewed_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);

-- Named leases held by one node at a time; `placer` decides placement. `term` grows each time
-- the holder changes; `epoch` grows each time the placer changes an assignment, so a node reads
-- the assignments again only when they changed.
CREATE TABLE fleet_leases (
    name       text PRIMARY KEY,
    node       text NOT NULL DEFAULT '',
    term       bigint NOT NULL DEFAULT 0,
    epoch      bigint NOT NULL DEFAULT 0,
    expires_at timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO fleet_leases (name) VALUES ('placer');

-- The persisted placement: which node runs each tenant, under which generation. Every move
-- increments the generation; `node` is NULL for a tenant that fits nowhere. While
-- `handoff_from` is set, the previous node is still stopping the tenant and saving its
-- session, and the new node waits (or stops waiting once that node's lease has expired).
-- No foreign key: a tenant is placed before its owner records its row.
CREATE TABLE fleet_assignments (
    tenant_id    text PRIMARY KEY,
    node         text,
    generation   bigint NOT NULL CHECK (generation > 0),
    handoff_from text,
    counted      boolean NOT NULL DEFAULT true,
    reason       text NOT NULL,
    assigned_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX fleet_assignments_node ON fleet_assignments (node);

-- The parts of a Chromium profile that hold a WhatsApp login (Local Storage and IndexedDB),
-- compressed, in chunks, keyed by tenant and the generation that wrote them.
CREATE TABLE session_snapshots (
    tenant_id   text NOT NULL,
    generation  bigint NOT NULL,
    node        text NOT NULL,
    taken_at    bigint NOT NULL,
    bytes       bigint NOT NULL,
    raw_bytes   bigint NOT NULL,
    files       integer NOT NULL,
    chunks      integer NOT NULL,
    sha256      text NOT NULL,
    fingerprint text NOT NULL,
    cause       text NOT NULL,
    PRIMARY KEY (tenant_id, generation)
);
CREATE TABLE session_snapshot_chunks (
    tenant_id  text NOT NULL,
    generation bigint NOT NULL,
    seq        integer NOT NULL,
    data       bytea NOT NULL,
    PRIMARY KEY (tenant_id, generation, seq),
    FOREIGN KEY (tenant_id, generation) REFERENCES session_snapshots ON DELETE CASCADE
);

-- Worker fencing. A worker in fleet mode connects with `flowhq.fence_node` and
-- `flowhq.fence_generation` set; every row it writes for a tenant is then refused (SQLSTATE
-- FQ001) unless that tenant is still assigned to its node under its generation and the node's
-- lease is live. The assignment row is locked FOR SHARE until the write commits, so a move
-- waits for a write in flight and every later write sees the move. Connections without those
-- settings (the daemon, operator commands, single-host workers) are not checked.
CREATE FUNCTION flowhq_fence(p_tenant text) RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    v_node text := current_setting('flowhq.fence_node', true);
    v_generation text := current_setting('flowhq.fence_generation', true);
    v_remaining double precision;
BEGIN
    IF v_node IS NULL OR v_node = '' THEN
        RETURN NULL;
    END IF;
    SELECT extract(epoch FROM n.expires_at - now()) INTO v_remaining
      FROM fleet_assignments a JOIN fleet_nodes n ON n.node = a.node
     WHERE a.tenant_id = p_tenant
       AND a.node = v_node
       AND a.generation = v_generation::bigint
       AND n.expires_at > now()
       FOR SHARE OF a;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'fenced: tenant % is no longer run by node % under generation %',
            p_tenant, v_node, v_generation
            USING ERRCODE = 'FQ001';
    END IF;
    RETURN v_remaining;
END
$$;

CREATE FUNCTION flowhq_fence_row() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM flowhq_fence(NEW.tenant_id);
    RETURN NEW;
END
$$;

CREATE TRIGGER whatsapp_sessions_fence BEFORE INSERT OR UPDATE ON whatsapp_sessions
    FOR EACH ROW EXECUTE FUNCTION flowhq_fence_row();
CREATE TRIGGER message_log_fence BEFORE INSERT OR UPDATE ON message_log
    FOR EACH ROW EXECUTE FUNCTION flowhq_fence_row();
CREATE TRIGGER contacts_fence BEFORE INSERT OR UPDATE ON contacts
    FOR EACH ROW EXECUTE FUNCTION flowhq_fence_row();
CREATE TRIGGER tenant_counters_fence BEFORE INSERT OR UPDATE ON tenant_counters
    FOR EACH ROW EXECUTE FUNCTION flowhq_fence_row();
