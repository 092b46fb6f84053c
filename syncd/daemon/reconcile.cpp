#include "daemon/reconcile.hpp"

#include <algorithm>
#include <chrono>
#include <thread>

#include "core/projection.hpp"
#include "daemon/log.hpp"
#include "daemon/pg.hpp"
#include "daemon/projector.hpp"
#include "daemon/redis.hpp"
#include "daemon/state.hpp"

namespace syncd {
namespace {

constexpr int kPage = 1000;

using Fields = std::vector<std::pair<std::string, std::string>>;

// last_active_at is left out of the comparison: the module moves it forward
// (session_touch) and reconcile must not undo that.
Fields comparable(Fields fields, bool ignore_last_active) {
    if (ignore_last_active) {
        fields.erase(std::remove_if(fields.begin(), fields.end(),
                                    [](const auto& f) { return f.first == "last_active_at"; }),
                     fields.end());
    }
    std::sort(fields.begin(), fields.end());
    return fields;
}

// Whether Redis already holds the desired state.
bool matches(const KeyState& desired, const KeyState& actual, bool has_ttl, bool is_session) {
    if (desired.present != actual.present) return false;
    if (!desired.present) return true;
    bool wants_ttl = desired.expire_at_ms.has_value() || desired.ttl_seconds.has_value();
    return wants_ttl == has_ttl &&
           comparable(desired.fields, is_session) == comparable(actual.fields, is_session);
}

// Holds the projector's lock for the whole run, so that a running daemon's
// projector does not interleave stale writes; it resumes afterwards.
void take_projector_lock(PGconn* pg) {
    for (int i = 0; i < 100; ++i) {
        auto r = pg_exec(pg, "SELECT pg_try_advisory_lock(1398361668, 0)");
        if (pg_bool(r.get(), 0, 0)) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    throw PgError("another projector holds the projection lock", false);
}

}  // namespace

std::string ReconcileReport::summary() const {
    return "users checked " + std::to_string(users_checked) + ", written " +
           std::to_string(users_written) + "; sessions checked " +
           std::to_string(sessions_checked) + ", written " + std::to_string(sessions_written) +
           ", tombstones written " + std::to_string(sessions_tombstoned) + ", removed " +
           std::to_string(sessions_removed);
}

ReconcileReport reconcile(const Config& cfg) {
    PgConn pg = pg_connect(cfg.database_url);
    Redis redis(cfg.redis, std::chrono::milliseconds(5000));
    take_projector_lock(pg.get());
    ReconcileReport report;
    const std::string& prefix = cfg.redis_prefix;

    std::string after;
    for (auto page = list_user_ids(pg.get(), after, kPage); !page.empty();
         page = list_user_ids(pg.get(), after, kPage)) {
        for (const auto& id : page) {
            auto user = load_user(pg.get(), id);
            if (!user) continue;
            KeyState desired = project_user(*user, prefix, now_ms());
            bool has_ttl = false;
            KeyState actual = redis.read(desired.key, has_ttl);
            ++report.users_checked;
            if (!matches(desired, actual, has_ttl, false)) {
                redis.apply(desired);
                ++report.users_written;
            }
        }
        after = page.back();
    }

    after.clear();
    for (auto page = list_session_ids(pg.get(), after, kPage); !page.empty();
         page = list_session_ids(pg.get(), after, kPage)) {
        for (const auto& id : page) {
            auto session = load_session(pg.get(), id);
            if (!session) continue;
            KeyState desired = project_session(*session, prefix, now_ms());
            bool has_ttl = false;
            KeyState actual = redis.read(desired.key, has_ttl);
            ++report.sessions_checked;
            if (matches(desired, actual, has_ttl, true)) continue;
            // A tombstone is written, never removed, while tokens issued
            // before the end may still verify: removing it would let them
            // through JWT mode's optional overlay again.
            redis.apply(desired);
            if (!desired.present) {
                ++report.sessions_removed;
            } else if (desired.tombstone) {
                ++report.sessions_tombstoned;
            } else {
                ++report.sessions_written;
            }
        }
        after = page.back();
    }
    pg_exec(pg.get(), "SELECT pg_advisory_unlock(1398361668, 0)");
    return report;
}

}  // namespace syncd
