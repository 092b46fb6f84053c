// `syncd reconcile`, and the projector's own pass when Redis has lost its
// data: rebuilds the Redis projection from PostgreSQL. Users and then
// sessions are read in pages of a few hundred rows (keyset order), each page
// compared with Redis in one pipelined read and repaired in one pipelined
// write, inside its own transaction holding the projector's lock, so that
// webhooks' projection interleaves between pages and neither writes over the
// other with older rows. Rows that can need no key (sessions expired and
// ended outside the tombstone window, users whose tombstone has expired) are
// skipped in SQL.
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <string>

#include "core/config.hpp"
#include "daemon/redis.hpp"

namespace syncd {

struct ReconcileReport {
    long users_checked = 0;
    long users_written = 0;
    long sessions_checked = 0;
    long sessions_written = 0;
    long sessions_tombstoned = 0;
    long sessions_removed = 0;
    long session_sets_written = 0;  // user_sessions: (contract version 2)
    long pages = 0;
    // Passes started again because the marker vanished (Redis emptied
    // during the pass).
    long restarts = 0;
    std::string summary() const;
};

// One pass, resumable page by page. The marker (marker_key) is leased to
// the pass while it runs and set for good when it completes; a pass that
// finds its lease gone (Redis flushed or restarted under it) starts over.
class Reconciler {
  public:
    static constexpr int kPageRows = 500;

    Reconciler(std::string prefix, std::int64_t idle_timeout, int page_rows = kPageRows);

    // Reconciles the next page; false once the pass is complete and the
    // marker set. Throws PgError / RedisError; calling it again resumes
    // where the failed page started.
    bool step(PGconn* pg, Redis& redis);

    const ReconcileReport& report() const { return report_; }

  private:
    enum class Phase { start, users, sessions, finish, done };
    void begin(Redis& redis);
    void restart(Redis& redis);
    // Writes what differs; false when the lease on the marker was gone.
    bool repair(Redis& redis, const std::vector<KeyState>& desired, bool sessions);

    std::string prefix_;
    std::int64_t idle_timeout_;
    int page_rows_;
    Phase phase_ = Phase::start;
    std::string after_;
    std::string token_;
    ReconcileReport report_;
};

// Whether Redis holds syncd's marker (set by a completed pass, or leased to
// one running).
bool marker_present(Redis& redis, const std::string& prefix);

// The whole pass on connections of its own. Throws PgError / RedisError.
ReconcileReport reconcile(const Config& cfg);

}  // namespace syncd
