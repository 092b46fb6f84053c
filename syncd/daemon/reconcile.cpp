#include "daemon/reconcile.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <utility>
#include <vector>

#include "core/projection.hpp"
#include "daemon/log.hpp"
#include "daemon/pg.hpp"
#include "daemon/projector.hpp"
#include "daemon/state.hpp"

namespace syncd {
namespace {

using Fields = std::vector<std::pair<std::string, std::string>>;

// How long the marker stays leased to a pass after its last page: a pass
// whose process died leaves the marker to expire, and the next check
// starts a new one. Far above a page's time, even with the projector's
// batches in between.
constexpr std::int64_t kMarkerLeaseMs = 60'000;

// KEYS[1] the marker; ARGV[1] the pass's lease token, ARGV[2] the value to
// set, ARGV[3] its lifetime in ms ("" for none). 0: the marker is gone
// (Redis lost its data during the pass); 2: another pass holds it (it will
// set it); 1: set.
const char* const kMarkerScript =
    "local v = redis.call('GET', KEYS[1])\n"
    "if not v then return 0 end\n"
    "if v ~= ARGV[1] then return 2 end\n"
    "if ARGV[3] == '' then redis.call('SET', KEYS[1], ARGV[2])\n"
    "else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end\n"
    "return 1\n";

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
    if (desired.is_set) return wants_ttl == has_ttl && desired.members == actual.members;
    return wants_ttl == has_ttl &&
           comparable(desired.fields, is_session) == comparable(actual.fields, is_session);
}

std::vector<std::string> marker_command(const std::string& prefix, const std::string& token,
                                        const std::string& value, const std::string& px) {
    return {"EVAL", kMarkerScript, "1", marker_key(prefix), token, value, px};
}

}  // namespace

std::string ReconcileReport::summary() const {
    return "users checked " + std::to_string(users_checked) + ", written " +
           std::to_string(users_written) + "; sessions checked " +
           std::to_string(sessions_checked) + ", written " + std::to_string(sessions_written) +
           ", tombstones written " + std::to_string(sessions_tombstoned) + ", removed " +
           std::to_string(sessions_removed) + "; session sets written " +
           std::to_string(session_sets_written);
}

Reconciler::Reconciler(std::string prefix, std::int64_t idle_timeout, int page_rows)
    : prefix_(std::move(prefix)), idle_timeout_(idle_timeout), page_rows_(page_rows) {}

void Reconciler::begin(Redis& redis) {
    token_ = "reconciling " + std::to_string(::getpid()) + " " + std::to_string(now_ms());
    redis.command({"SET", marker_key(prefix_), token_, "PX", std::to_string(kMarkerLeaseMs)});
    phase_ = Phase::users;
    after_.clear();
}

void Reconciler::restart(Redis& redis) {
    ++report_.restarts;
    log::warn(
        "reconcile: syncd's marker vanished from Redis during the pass (restarted or "
        "flushed); starting over");
    begin(redis);
}

bool Reconciler::repair(Redis& redis, const std::vector<KeyState>& desired, bool sessions) {
    auto stored = redis.read_many(desired);
    std::vector<std::vector<std::string>> commands;
    for (std::size_t i = 0; i < desired.size(); ++i) {
        const KeyState& want = desired[i];
        if (matches(want, stored[i].state, stored[i].has_ttl, sessions)) continue;
        // A tombstone is written, never removed, while tokens issued before
        // the end may still verify: removing it would let them through JWT
        // mode's optional overlay again.
        for (auto& cmd : apply_commands(want)) commands.push_back(std::move(cmd));
        if (want.is_set) {
            ++report_.session_sets_written;
        } else if (!sessions) {
            ++report_.users_written;
        } else if (!want.present) {
            ++report_.sessions_removed;
        } else if (want.tombstone) {
            ++report_.sessions_tombstoned;
        } else {
            ++report_.sessions_written;
        }
    }
    // The lease renewal rides in the same round trip; it fails when the
    // marker is gone, i.e. Redis lost what earlier pages wrote.
    commands.push_back(marker_command(prefix_, token_, token_, std::to_string(kMarkerLeaseMs)));
    auto replies = redis.pipeline(commands);
    const redisReply* lease = replies.back().get();
    return !(lease->type == REDIS_REPLY_INTEGER && lease->integer == 0);
}

bool Reconciler::step(PGconn* pg, Redis& redis) {
    switch (phase_) {
        case Phase::start:
            begin(redis);
            return true;
        case Phase::done:
            return false;
        case Phase::finish: {
            auto reply = redis.command(
                marker_command(prefix_, token_, "reconciled " + std::to_string(now_ms()), ""));
            if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 0) {
                restart(redis);
                return true;
            }
            phase_ = Phase::done;
            return false;
        }
        case Phase::users:
        case Phase::sessions:
            break;
    }
    const bool sessions = phase_ == Phase::sessions;
    // The page is read and written under the projector's lock, so that a
    // projection of newer rows cannot land between our read and our write;
    // released at the commit, so webhooks' changes go in between pages.
    PgTransaction tx(pg);
    if (!take_projection_lock(pg)) return true;  // a long batch elsewhere: try again
    const std::int64_t now = now_ms();
    std::vector<KeyState> desired;
    std::string last;
    int rows = 0;
    if (sessions) {
        auto page = load_session_page(pg, after_, page_rows_, now);
        for (const auto& s : page)
            desired.push_back(project_session(s, prefix_, now, idle_timeout_));
        if (!page.empty()) last = page.back().id;
        rows = static_cast<int>(page.size());
        report_.sessions_checked += static_cast<long>(page.size());
    } else {
        auto page = load_user_page(pg, after_, page_rows_, now);
        // Contract version 2: each user's set of live sessions, from the
        // same rows the projector reads (one more query per page).
        std::vector<std::string> ids;
        for (const auto& u : page) ids.push_back(u.clerk_id);
        std::map<std::string, std::vector<SessionState>> live;
        for (auto& s : load_live_sessions_of(pg, ids, now)) {
            live[s.clerk_user_id].push_back(std::move(s));
        }
        for (const auto& u : page) {
            desired.push_back(project_user(u, prefix_, now));
            desired.push_back(
                project_session_set(u.clerk_id, live[u.clerk_id], prefix_, now, idle_timeout_));
        }
        if (!page.empty()) last = page.back().clerk_id;
        rows = static_cast<int>(page.size());
        report_.users_checked += static_cast<long>(page.size());
    }
    const bool last_page = rows < page_rows_;
    if (!desired.empty()) {
        if (!repair(redis, desired, sessions)) {
            tx.commit();
            restart(redis);
            return true;
        }
        ++report_.pages;
        after_ = last;
    }
    tx.commit();
    if (last_page) {
        after_.clear();
        phase_ = sessions ? Phase::finish : Phase::sessions;
    }
    return true;
}

bool marker_present(Redis& redis, const std::string& prefix) {
    auto reply = redis.command({"EXISTS", marker_key(prefix)});
    return reply->type == REDIS_REPLY_INTEGER && reply->integer > 0;
}

ReconcileReport reconcile(const Config& cfg) {
    PgConn pg = pg_connect(cfg.database_url);
    Redis redis(cfg.redis, std::chrono::milliseconds(5000));
    Reconciler pass(cfg.redis_prefix, cfg.session_idle_timeout);
    while (pass.step(pg.get(), redis)) {
    }
    return pass.report();
}

}  // namespace syncd
