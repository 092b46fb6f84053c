// Commits one verified event to PostgreSQL: the delivery id (deduplication),
// the rows under the ordering rules of core/rules.hpp, and the outbox
// entries for Redis, all in one transaction.
#pragma once

#include <libpq-fe.h>

#include <string>
#include <string_view>

#include "core/event.hpp"
#include "daemon/pg.hpp"

namespace syncd {

enum class Outcome { applied, stale, ignored, duplicate };

const char* outcome_name(Outcome o) noexcept;

struct StoreResult {
    Outcome outcome = Outcome::applied;
    int outbox_entries = 0;
    int writeback_entries = 0;  // users queued for the write-back
};

struct StoreOptions {
    // SYNCD_CLERK_WRITEBACK=on: a user created here, or whose role or
    // organization roles changed, is queued for the write-back of its id
    // and role (schema/005_writeback.sql) in the same transaction. Nothing
    // else is: the user.updated that Clerk sends back for the write-back
    // changes neither, so it queues nothing (no loop).
    bool writeback = false;
};

// Throws PgError when the transaction cannot be committed; nothing is
// stored then, and the sender must retry.
StoreResult store_event(PGconn* conn, const std::string& delivery_id, const Event& event,
                        const StoreOptions& options = {});

// Applies one decoded change under the same ordering rules, inside the
// caller's transaction, without a webhook_events row: `syncd backfill`'s
// entry. False when the stored version was kept (stale, or final).
bool apply_change(PGconn* conn, const Change& change, const StoreOptions& options,
                  StoreResult& result);

// Queues (or, when one is pending, re-arms) the write-back of one user,
// inside the caller's transaction. The row's lock is held until the caller
// commits; the worker never holds it while talking to Clerk.
void enqueue_writeback(PGconn* conn, const std::string& clerk_user_id);

// Keeps a verified delivery that could not be decoded in dead_letters: the
// body as received and the decoder's reason (which names a field, never a
// value). A redelivery of the same id counts another delivery and keeps the
// first body. Throws PgError when it cannot be committed.
void store_dead_letter(PGconn* conn, const std::string& delivery_id, std::string_view body,
                       const std::string& reason);

// store_dead_letter on a pooled connection (one retry on a fresh one after a
// lost connection); logs, never throws. False when it was not stored.
bool keep_dead_letter(PgPool& pool, const std::string& delivery_id, std::string_view body,
                      const std::string& reason) noexcept;

}  // namespace syncd
