// Commits one verified event to PostgreSQL: the delivery id (deduplication),
// the rows under the ordering rules of core/rules.hpp, and the outbox
// entries for Redis, all in one transaction.
#pragma once

#include <libpq-fe.h>

#include <string>

#include "core/event.hpp"

namespace syncd {

enum class Outcome { applied, stale, ignored, duplicate };

const char* outcome_name(Outcome o) noexcept;

struct StoreResult {
    Outcome outcome = Outcome::applied;
    int outbox_entries = 0;
};

// Throws PgError when the transaction cannot be committed; nothing is
// stored then, and the sender must retry.
StoreResult store_event(PGconn* conn, const std::string& delivery_id, const Event& event);

}  // namespace syncd
