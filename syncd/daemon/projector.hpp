// Applies the outbox to Redis: a background thread that reads the pending
// entries, projects the current PostgreSQL rows they name (never the event
// itself, so that order of arrival does not matter), publishes revocations
// and deletes the entries, retrying with back-off while Redis is down.
#pragma once

#include <libpq-fe.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/config.hpp"
#include "core/metrics.hpp"
#include "daemon/reconcile.hpp"
#include "daemon/redis.hpp"

namespace syncd {

// Serialises projection across processes (projectors, reconcile's pages):
// whoever holds it writes Redis. Taken inside the caller's transaction and
// released at its end; waits in line up to 2 s (lock_timeout), so that a
// holder's short batch or page is waited for rather than skipped, and
// returns false when the wait ran out.
bool take_projection_lock(PGconn* pg);

std::int64_t now_ms();

// Called after each key written: the projector's heartbeat, so that a long
// batch (or a user with many sessions) does not starve the watchdog.
using Progress = std::function<void()>;

// Projects one user (and, with `cascade`, that user's sessions) or one
// session into Redis; adds the revocation messages to `messages`.
// `idle_timeout` is SYNCD_SESSION_IDLE_TIMEOUT (project_session).
void project_user_key(PGconn* pg, Redis& redis, const std::string& prefix,
                      std::int64_t idle_timeout, const std::string& clerk_user_id, bool revoke,
                      bool cascade, std::set<std::string>& messages, const Progress& progress = {});
// Sessions are projected in batches: one query, one Redis round trip.
struct SessionWork {
    std::string id;
    bool revoke = false;
};
void project_session_keys(PGconn* pg, Redis& redis, const std::string& prefix,
                          std::int64_t idle_timeout, const std::vector<SessionWork>& sessions,
                          std::set<std::string>& messages);

class Projector {
  public:
    Projector(const Config& cfg, Metrics& metrics) : cfg_(cfg), metrics_(metrics) {}
    ~Projector() { stop(); }

    void start();
    void stop();
    // Called after a commit that wrote outbox entries.
    void wake();
    // Time since the loop last made progress: it beats at least every
    // kHeartbeat while idle or backing off, and after every projected entry
    // (every session of a cascade, every pipelined round trip). A call
    // blocked in PostgreSQL or Redis stops the beat (serve withholds the
    // systemd watchdog ping then).
    std::chrono::milliseconds since_heartbeat() const;
    static constexpr std::chrono::milliseconds kHeartbeat{250};
    // How often the marker is looked for besides each new connection: a
    // FLUSHALL leaves the connection up.
    static constexpr std::chrono::milliseconds kMarkerCheck{5000};

    // One pass over the outbox on the given connections; returns the number
    // of entries applied. Calls `progress` after each entry. Throws PgError /
    // RedisError.
    static int drain(PGconn* pg, Redis& redis, const std::string& prefix, std::int64_t idle_timeout,
                     Metrics& metrics, const Progress& progress = {});

  private:
    void run();
    void beat();
    bool woken();
    // Starts a background pass when Redis lacks the marker; runs its pages
    // until a wake-up (a webhook's change goes first) or stop.
    void resync(PGconn* pg, Redis& redis, bool check_marker);
    // Waits up to `wait` for stop (or a wake-up when `wakeable`), beating.
    void pause(std::chrono::milliseconds wait, bool wakeable);

    Config cfg_;
    Metrics& metrics_;
    std::thread thread_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool stopping_ = false;
    bool pending_ = false;
    std::atomic<std::int64_t> heartbeat_ms_{steady_ms()};
    std::unique_ptr<Reconciler> resync_;
    std::chrono::steady_clock::time_point next_marker_check_{};

    static std::int64_t steady_ms();
};

}  // namespace syncd
