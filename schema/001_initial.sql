-- syncd's tables: the identity provider's users, sessions and organization
-- memberships, the events received (for deduplication), and the outbox of
-- changes still to be applied to Redis. Times from the provider are kept
-- twice: as timestamptz for people and as the exact milliseconds
-- (source_updated_at) that order concurrent versions of a row.

CREATE TABLE users (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    clerk_id          text NOT NULL,
    email             text,
    name              text,
    image_url         text,
    role              text NOT NULL DEFAULT 'user',
    banned            boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz,
    source_updated_at bigint NOT NULL DEFAULT 0,
    -- A deleted user keeps no personal data.
    CONSTRAINT users_deleted_has_no_personal_data
        CHECK (deleted_at IS NULL OR (email IS NULL AND name IS NULL AND image_url IS NULL))
);
CREATE UNIQUE INDEX users_clerk_id_live ON users (clerk_id) WHERE deleted_at IS NULL;
CREATE INDEX users_clerk_id ON users (clerk_id);

CREATE TABLE sessions (
    id                text PRIMARY KEY,
    clerk_user_id     text NOT NULL,
    status            text NOT NULL,
    expires_at        timestamptz,
    last_active_at    timestamptz,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    source_updated_at bigint NOT NULL
);
CREATE INDEX sessions_clerk_user_id ON sessions (clerk_user_id);

CREATE TABLE memberships (
    id                text PRIMARY KEY,
    clerk_user_id     text NOT NULL,
    organization_id   text NOT NULL,
    organization_slug text,
    role              text NOT NULL,
    permissions       text[] NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    deleted_at        timestamptz,
    source_updated_at bigint NOT NULL
);
CREATE INDEX memberships_clerk_user_id ON memberships (clerk_user_id) WHERE deleted_at IS NULL;

-- One row per delivery id ever committed: the idempotency key. No payload
-- and no personal data.
CREATE TABLE webhook_events (
    id              text PRIMARY KEY,
    type            text NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    event_timestamp bigint,
    outcome         text NOT NULL CHECK (outcome IN ('applied', 'stale', 'ignored'))
);

-- Changes committed here and not yet applied to Redis. Written in the same
-- transaction as the rows; emptied by syncd's projector.
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('user', 'session')),
    key         text NOT NULL,
    revoke      boolean NOT NULL DEFAULT false,
    cascade     boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);
