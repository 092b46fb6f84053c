-- Dead letters and retention (issue 7, item 15).

-- A delivery whose signature verified but whose body syncd cannot decode
-- (not JSON, or a handled type missing a field it needs): kept here, whole,
-- instead of being lost once the sender gives up. The body is stored as
-- received (bytea: it need not be valid UTF-8) and may hold personal data,
-- so the table is pruned with webhook_events (SYNCD_EVENT_RETENTION).
CREATE TABLE dead_letters (
    id               text PRIMARY KEY,  -- the delivery id
    received_at      timestamptz NOT NULL DEFAULT now(),
    last_received_at timestamptz NOT NULL DEFAULT now(),
    deliveries       integer NOT NULL DEFAULT 1,
    reason           text NOT NULL,
    payload          bytea NOT NULL
);
CREATE INDEX dead_letters_received_at ON dead_letters (received_at);

-- The background pruning reads each table by age, a few hundred rows at a
-- time: these keep every batch an index range scan.
CREATE INDEX webhook_events_received_at ON webhook_events (received_at);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX memberships_deleted_at ON memberships (deleted_at) WHERE deleted_at IS NOT NULL;
