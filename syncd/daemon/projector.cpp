#include "daemon/projector.hpp"

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <vector>

#include "daemon/log.hpp"
#include "daemon/pg.hpp"
#include "daemon/state.hpp"

namespace syncd {
namespace {

constexpr int kBatch = 500;
// A user's session keys go to Redis in round trips of this many commands,
// the heartbeat fed after each (a user may have thousands of sessions).
constexpr std::size_t kCascadeChunk = 100;

struct Entry {
    std::string kind;
    std::string key;
    bool revoke = false;
    bool cascade = false;
};

}  // namespace

bool take_projection_lock(PGconn* pg) {
    // The 2 s bound is for this lock only: the statements after it keep the
    // session's lock_timeout (a table lock held elsewhere must still stall
    // the projector visibly, not turn into retries).
    auto previous = pg_exec(pg, "SELECT current_setting('lock_timeout')");
    const std::string restore = pg_text(previous.get(), 0, 0);
    pg_exec(pg, "SELECT set_config('lock_timeout', '2s', true)");
    try {
        pg_exec(pg, "SELECT pg_advisory_xact_lock(1398361668, 0)");
    } catch (const PgError& e) {
        if (e.sqlstate == "55P03") return false;  // lock_not_available
        throw;
    }
    pg_exec(pg, "SELECT set_config('lock_timeout', $1, true)", {restore});
    return true;
}

std::int64_t now_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

void project_user_key(PGconn* pg, Redis& redis, const std::string& prefix,
                      std::int64_t idle_timeout, const std::string& clerk_user_id, bool revoke,
                      bool cascade, std::set<std::string>& messages, const Progress& progress) {
    auto user = load_user(pg, clerk_user_id);
    KeyState desired;
    if (user) {
        desired = project_user(*user, prefix, now_ms());
    } else {
        desired.key = user_key(prefix, clerk_user_id);  // absent: no row, no key
    }
    redis.apply(desired);
    if (progress) progress();
    // Contract version 2: every live session hash carries a copy of the
    // user's fields, so any change of the user reaches its sessions here,
    // in the same step, from the same user row as the user hash (the copy
    // is derived from PostgreSQL, never from what Redis holds).
    auto sessions = load_user_sessions(pg, clerk_user_id);
    for (auto& session : sessions) session.user = user;
    const Fields copies = session_user_fields(user ? &*user : nullptr);
    const std::int64_t now = now_ms();
    std::vector<std::vector<std::string>> commands;
    auto flush = [&] {
        if (commands.empty()) return;
        redis.pipeline(commands);
        commands.clear();
        if (progress) progress();
    };
    for (const auto& session : sessions) {
        KeyState s = project_session(session, prefix, now, idle_timeout);
        if (cascade) {
            // Its status changed (ban, unban, deletion): the whole key.
            for (auto& cmd : apply_commands(s)) commands.push_back(std::move(cmd));
            if (revoke && (!s.present || s.tombstone)) {
                messages.insert(revocation_message("session", session.id));
            }
        } else if (s.present && !s.tombstone) {
            // Only the copy, in place: a hash that is not there (not
            // projected yet, or expired by the module's idle timeout) stays
            // so; the session's own projection writes it whole, with the
            // copy of the user row it reads then.
            commands.push_back(copy_user_fields_command(s.key, clerk_user_id, copies));
        }
        if (commands.size() >= kCascadeChunk) flush();
    }
    // The set from the same rows, whole: a session that ended or expired
    // leaves it, and nothing but syncd's projection is in it.
    for (auto& cmd :
         apply_commands(project_session_set(clerk_user_id, sessions, prefix, now, idle_timeout))) {
        commands.push_back(std::move(cmd));
    }
    flush();
    if (revoke) messages.insert(revocation_message("user", clerk_user_id));
}

void project_session_keys(PGconn* pg, Redis& redis, const std::string& prefix,
                          std::int64_t idle_timeout, const std::vector<SessionWork>& sessions,
                          std::set<std::string>& messages) {
    if (sessions.empty()) return;
    std::vector<std::string> ids;
    for (const auto& w : sessions) ids.push_back(w.id);
    std::map<std::string, SessionState> found;
    for (auto& state : load_sessions(pg, ids)) found.emplace(state.id, std::move(state));
    std::vector<std::vector<std::string>> commands;
    const std::int64_t now = now_ms();
    for (const auto& w : sessions) {
        auto it = found.find(w.id);
        KeyState desired;
        if (it != found.end()) {
            desired = project_session(it->second, prefix, now, idle_timeout);
        } else {
            desired.key = session_key(prefix, w.id);  // no row: no key
        }
        for (auto& cmd : apply_commands(desired)) commands.push_back(std::move(cmd));
        // The user's set follows the key, after it: added while the hash is
        // live (with the copy), removed once it is a tombstone or gone.
        if (it != found.end()) {
            if (auto change = session_set_change(it->second, desired, prefix)) {
                commands.push_back(session_set_command(*change, now));
            }
        }
        if (w.revoke && (!desired.present || desired.tombstone)) {
            messages.insert(revocation_message("session", w.id));
        }
    }
    redis.pipeline(commands);
}

int Projector::drain(PGconn* pg, Redis& redis, const std::string& prefix, std::int64_t idle_timeout,
                     Metrics& metrics, const Progress& progress) {
    PgTransaction tx(pg);
    if (!take_projection_lock(pg)) return 0;  // another projector's long batch
    auto rows =
        pg_exec(pg, "SELECT id, kind, key, revoke, cascade FROM outbox ORDER BY id LIMIT $1",
                {std::to_string(kBatch)});
    int n = PQntuples(rows.get());
    if (n == 0) return 0;
    // Several entries for one key collapse into one projection of its
    // current rows.
    std::vector<Entry> work;
    std::map<std::pair<std::string, std::string>, std::size_t> index;
    std::string ids = "{";
    for (int i = 0; i < n; ++i) {
        if (i) ids += ',';
        ids += pg_text(rows.get(), i, 0);
        Entry e{pg_text(rows.get(), i, 1), pg_text(rows.get(), i, 2), pg_bool(rows.get(), i, 3),
                pg_bool(rows.get(), i, 4)};
        auto [it, fresh] = index.emplace(std::make_pair(e.kind, e.key), work.size());
        if (fresh) {
            work.push_back(e);
        } else {
            work[it->second].revoke |= e.revoke;
            work[it->second].cascade |= e.cascade;
        }
    }
    ids += "}";
    std::set<std::string> messages;
    std::vector<SessionWork> sessions;
    for (const auto& e : work) {
        if (e.kind == "user") {
            project_user_key(pg, redis, prefix, idle_timeout, e.key, e.revoke, e.cascade, messages,
                             progress);
        } else {
            sessions.push_back({e.key, e.revoke});
        }
    }
    project_session_keys(pg, redis, prefix, idle_timeout, sessions, messages);
    if (progress) progress();
    const std::string channel = revocation_channel(prefix);
    for (const auto& m : messages) {
        redis.publish(channel, m);
        if (progress) progress();
    }
    pg_exec(pg, "DELETE FROM outbox WHERE id = ANY($1::bigint[])", {ids});
    tx.commit();
    metrics.count_projected(n);
    metrics.count_published(static_cast<std::int64_t>(messages.size()));
    return n;
}

void Projector::start() {
    thread_ = std::thread([this] { run(); });
}

void Projector::stop() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void Projector::wake() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        pending_ = true;
    }
    cv_.notify_one();
}

std::int64_t Projector::steady_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

void Projector::beat() {
    heartbeat_ms_.store(steady_ms());
}

std::chrono::milliseconds Projector::since_heartbeat() const {
    return std::chrono::milliseconds(steady_ms() - heartbeat_ms_.load());
}

bool Projector::woken() {
    std::lock_guard<std::mutex> lock(mu_);
    return pending_ || stopping_;
}

void Projector::resync(PGconn* pg, Redis& redis, bool check_marker) {
    auto now = std::chrono::steady_clock::now();
    if (!resync_ && (check_marker || now >= next_marker_check_)) {
        next_marker_check_ = now + kMarkerCheck;
        if (!marker_present(redis, cfg_.redis_prefix)) {
            log::warn(
                "projector: Redis holds no syncd marker (restarted without its data, "
                "flushed, or never reconciled); reconciling from PostgreSQL in the "
                "background");
            resync_ = std::make_unique<Reconciler>(cfg_.redis_prefix, cfg_.session_idle_timeout);
        }
    }
    if (!resync_) return;
    while (!woken()) {
        if (!resync_->step(pg, redis)) {
            metrics_.count_redis_resync();
            log::info("projector: Redis resynchronised from PostgreSQL: " +
                      resync_->report().summary());
            resync_.reset();
            return;
        }
        beat();
    }
}

void Projector::pause(std::chrono::milliseconds wait, bool wakeable) {
    auto deadline = std::chrono::steady_clock::now() + wait;
    std::unique_lock<std::mutex> lock(mu_);
    while (!stopping_ && !(wakeable && pending_)) {
        beat();
        auto now = std::chrono::steady_clock::now();
        if (now >= deadline) break;
        cv_.wait_until(lock, std::min(deadline, now + kHeartbeat));
    }
    beat();
}

void Projector::run() {
    PgConn pg;
    std::unique_ptr<Redis> redis;
    std::chrono::milliseconds backoff(100);
    bool failing = false;
    while (true) {
        beat();
        bool ok = true;
        try {
            if (!pg || PQstatus(pg.get()) != CONNECTION_OK) pg = pg_connect(cfg_.database_url);
            bool reconnected = false;
            if (!redis || redis->broken()) {
                redis.reset();
                redis =
                    std::make_unique<Redis>(cfg_.redis, std::chrono::milliseconds(2000), &metrics_);
                reconnected = true;
            }
            while (drain(pg.get(), *redis, cfg_.redis_prefix, cfg_.session_idle_timeout, metrics_,
                         [this] { beat(); }) == kBatch) {
                beat();
            }
            resync(pg.get(), *redis, reconnected);
            auto depth = pg_exec(pg.get(), "SELECT count(*) FROM outbox");
            metrics_.set_outbox_depth(pg_int(depth.get(), 0, 0));
            metrics_.set_redis_up(true);
            if (failing)
                log::info("projector: Redis and PostgreSQL reachable again; outbox applied");
            failing = false;
            backoff = std::chrono::milliseconds(100);
        } catch (const RedisError& e) {
            ok = false;
            redis.reset();
            metrics_.set_redis_up(false);
            if (!failing) log::warn("projector: " + std::string(e.what()) + "; will retry");
        } catch (const std::exception& e) {
            ok = false;
            if (pg && PQstatus(pg.get()) != CONNECTION_OK) pg.reset();
            if (!failing) log::warn("projector: " + std::string(e.what()) + "; will retry");
        }
        if (!ok) {
            failing = true;
            backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
        }
        // While failing, wake-ups do not cut the back-off short; the periodic
        // pass also picks up entries left by another process.
        // A pass in progress goes on at once unless a wake-up interrupted it
        // (then the outbox is drained first).
        pause(ok ? std::chrono::milliseconds(resync_ ? 0 : 1000) : backoff, ok);
        std::lock_guard<std::mutex> lock(mu_);
        if (stopping_) return;
        pending_ = false;
    }
}

}  // namespace syncd
