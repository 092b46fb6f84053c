-- The write-back queue (issue 9): users whose application id and role are
-- to be written into Clerk's public_metadata. One row per user: a change
-- while a row is pending only bumps its generation, since the body is
-- computed from the users row when it is sent (always the latest id and
-- role). Written in the same transaction as the webhook's rows; emptied by
-- syncd serve's write-back worker, never on the webhook's request path.
-- No personal data: the Clerk user id, counters and an error's class.
CREATE TABLE writeback (
    clerk_user_id   text PRIMARY KEY,
    -- Bumped by each change enqueued while the row exists: a send that
    -- started before it does not delete the row when it succeeds.
    generation      bigint NOT NULL DEFAULT 1,
    -- When the oldest change not yet sent was queued (the age metric).
    enqueued_at     timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    -- Due time: now for a new row; after a failure, the backoff or the
    -- server's Retry-After; while a worker sends it, a lease.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- "HTTP 503", "transport: ...": never a body, personal data or the key.
    last_error      text
);
CREATE INDEX writeback_next_attempt_at ON writeback (next_attempt_at);
