-- Organizations by id, and Clerk's silent session end (issue 7, items 10-12).
--
-- Roles in Redis now name an organization by its id (`org_.../org:admin`):
-- a slug is renamed and then free for anyone to take. memberships already
-- keep organization_id, so no row changes; the users with live memberships
-- are queued for re-projection below, and `syncd reconcile` rewrites any
-- that a running projector has not reached.

-- organization.created/updated/deleted, ordered by source_updated_at (ms);
-- a deleted organization is final and its memberships are ended with it.
CREATE TABLE organizations (
    id                text PRIMARY KEY,
    slug              text,
    name              text,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    deleted_at        timestamptz,
    source_updated_at bigint NOT NULL
);

-- An organization's deletion ends its live memberships in one statement.
CREATE INDEX memberships_organization_id ON memberships (organization_id)
    WHERE deleted_at IS NULL;

-- Clerk abandons an inactive session at abandon_at without a webhook.
ALTER TABLE sessions ADD COLUMN abandon_at timestamptz;

-- Rewrite `roles` from slugs to ids, revoking cached entries on the way.
INSERT INTO outbox (kind, key, revoke, cascade)
SELECT DISTINCT 'user', clerk_user_id, true, false
FROM memberships WHERE deleted_at IS NULL;
