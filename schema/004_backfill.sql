-- `syncd backfill` (issue 9): where an import from Clerk's Backend API
-- stands, so that a second run after an interruption continues after the
-- last page committed instead of starting over. One row per object kind,
-- updated in the same transaction as the page's rows; the rows are deleted
-- when the run completes (the next run starts over) and the run is recorded
-- in backfill_runs. No personal data: ids and counters only.
CREATE TABLE backfill_cursor (
    kind            text PRIMARY KEY
                    CHECK (kind IN ('users', 'organizations', 'memberships', 'sessions')),
    -- The --since of the run this row belongs to (ms; NULL: a full run). A
    -- run with another --since does not resume this one.
    since_ms        bigint,
    -- List kinds: the position after the last object committed in the
    -- listing ordered by created_at, and that object (the high-water mark
    -- the next page is checked against). Sessions: last_id is the last
    -- user (clerk_id order) whose sessions are committed.
    next_offset     bigint NOT NULL DEFAULT 0,
    last_id         text NOT NULL DEFAULT '',
    last_created_at bigint NOT NULL DEFAULT 0,
    pages           bigint NOT NULL DEFAULT 0,
    created         bigint NOT NULL DEFAULT 0,
    updated         bigint NOT NULL DEFAULT 0,
    unchanged       bigint NOT NULL DEFAULT 0,
    stale           bigint NOT NULL DEFAULT 0,
    invalid         bigint NOT NULL DEFAULT 0,
    before_since    bigint NOT NULL DEFAULT 0,
    done            boolean NOT NULL DEFAULT false,
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Completed runs, newest last: when, with which --since, and the summary
-- line printed at the end.
CREATE TABLE backfill_runs (
    id           bigserial PRIMARY KEY,
    since_ms     bigint,
    started_at   timestamptz NOT NULL,
    completed_at timestamptz NOT NULL DEFAULT now(),
    summary      text NOT NULL
);
