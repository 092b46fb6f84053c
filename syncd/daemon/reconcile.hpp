// `syncd reconcile`: rebuilds the Redis projection from PostgreSQL. Every
// user and session row is projected and compared with what Redis holds;
// missing or stale keys are written, recently ended sessions and deleted
// users left as tombstones, and keys of sessions that ended long ago removed.
#pragma once

#include <string>

#include "core/config.hpp"

namespace syncd {

struct ReconcileReport {
    long users_checked = 0;
    long users_written = 0;
    long sessions_checked = 0;
    long sessions_written = 0;
    long sessions_tombstoned = 0;
    long sessions_removed = 0;
    std::string summary() const;
};

// Throws PgError / RedisError.
ReconcileReport reconcile(const Config& cfg);

}  // namespace syncd
