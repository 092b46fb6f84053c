// `syncd backfill`: imports every user, organization, organization
// membership and active session from Clerk's Backend API into PostgreSQL,
// page by page, through the webhooks' own store (daemon/store.hpp): the
// same ordering rules by updated_at, the same outbox entries, so a
// backfill racing live webhooks never overwrites a newer state and never
// resurrects a deleted user. Redis is written by the projector of a running
// `syncd serve` (it polls the outbox every second) or rebuilt by
// `syncd reconcile`; the backfill itself never connects to Redis.
//
// Resumable: each page commits with its cursor (schema/004_backfill.sql);
// a second run continues after the last committed page, and a completed run
// removes the cursor so the next one starts over.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/config.hpp"

namespace syncd {

struct BackfillOptions {
    // --since: only objects whose updated_at is at or after it are applied.
    // Clerk's list endpoints cannot filter on updated_at, so every page is
    // still fetched; older objects are counted and skipped here.
    std::optional<std::int64_t> since_ms;
    // The page size asked for (Clerk allows 1-500); tests lower it.
    int page_limit = 500;
};

// Runs (or resumes) the import; returns the final summary line. Progress
// goes to stderr at most once a second. Throws clerk::ApiError (the API
// refused or kept failing), PgError, or std::runtime_error; the committed
// pages stay, and the next run resumes after them.
std::string run_backfill(const Config& cfg, const BackfillOptions& options);

}  // namespace syncd
