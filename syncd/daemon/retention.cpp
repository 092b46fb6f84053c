#include "daemon/retention.hpp"

#include <chrono>
#include <string>

#include "daemon/log.hpp"
#include "daemon/pg.hpp"

namespace syncd {
namespace {

constexpr int kBatch = 500;
// Between two batches: room for the deliveries' own statements.
constexpr std::chrono::milliseconds kBetweenBatches{20};

// Each statement deletes at most $2 rows older than $1 seconds, chosen in
// the order of an index, in its own transaction. SKIP LOCKED: a row a
// delivery is updating now is not old, and is not waited for.
constexpr const char* kPruneWebhookEvents =
    "DELETE FROM webhook_events WHERE id IN (SELECT id FROM webhook_events "
    "WHERE received_at < now() - $1::bigint * interval '1 second' "
    "ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED)";
// The body may carry personal data: kept no longer than the events.
constexpr const char* kPruneDeadLetters =
    "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters "
    "WHERE received_at < now() - $1::bigint * interval '1 second' "
    "ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED)";
// A session's last possible use is its expiry, whatever its status: a row
// that ended early (revoked) stays until then, so that a late delivery of
// an older version cannot create it again as active; past its expiry plus
// the retention, any version of it that could still arrive is expired too.
constexpr const char* kPruneSessions =
    "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions "
    "WHERE expires_at < now() - $1::bigint * interval '1 second' "
    "AND updated_at < now() - $1::bigint * interval '1 second' "
    "ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)";
// A removed membership's row keeps a late membership.created from granting
// the role again; past the retention no such delivery is expected.
constexpr const char* kPruneMemberships =
    "DELETE FROM memberships WHERE id IN (SELECT id FROM memberships "
    "WHERE deleted_at < now() - $1::bigint * interval '1 second' "
    "ORDER BY deleted_at LIMIT $2 FOR UPDATE SKIP LOCKED)";

long prune_table(PGconn* pg, const char* sql, std::int64_t retention_seconds,
                 const std::function<bool()>& stopping) {
    long total = 0;
    while (!(stopping && stopping())) {
        auto res = pg_exec(pg, sql, {std::to_string(retention_seconds), std::to_string(kBatch)});
        long n = std::stol(PQcmdTuples(res.get()));
        total += n;
        if (n < kBatch) break;
        std::this_thread::sleep_for(kBetweenBatches);
    }
    return total;
}

}  // namespace

std::string RetentionReport::summary() const {
    return "webhook_events " + std::to_string(webhook_events) + ", dead_letters " +
           std::to_string(dead_letters) + ", sessions " + std::to_string(sessions) +
           ", memberships " + std::to_string(memberships);
}

RetentionReport prune_expired(PGconn* pg, std::int64_t retention_seconds,
                              const std::function<bool()>& stopping) {
    RetentionReport r;
    r.webhook_events = prune_table(pg, kPruneWebhookEvents, retention_seconds, stopping);
    r.dead_letters = prune_table(pg, kPruneDeadLetters, retention_seconds, stopping);
    r.sessions = prune_table(pg, kPruneSessions, retention_seconds, stopping);
    r.memberships = prune_table(pg, kPruneMemberships, retention_seconds, stopping);
    return r;
}

void Retention::start() {
    thread_ = std::thread([this] { run(); });
}

void Retention::stop() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
}

bool Retention::stopping() {
    std::lock_guard<std::mutex> lock(mu_);
    return stopping_;
}

bool Retention::pause(std::chrono::milliseconds wait) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, wait, [this] { return stopping_; });
    return !stopping_;
}

void Retention::run() {
    PgConn pg;
    bool failing = false;
    do {
        try {
            if (!pg || PQstatus(pg.get()) != CONNECTION_OK) pg = pg_connect(database_url_);
            RetentionReport r =
                prune_expired(pg.get(), retention_seconds_, [this] { return stopping(); });
            if (r.total() > 0) log::info("retention: pruned " + r.summary());
            if (failing) log::info("retention: PostgreSQL reachable again");
            failing = false;
        } catch (const std::exception& e) {
            if (pg && PQstatus(pg.get()) != CONNECTION_OK) pg.reset();
            if (!failing) log::warn("retention: " + std::string(e.what()) + "; will retry");
            failing = true;
        }
    } while (
        pause(failing ? std::chrono::milliseconds(kRetry) : std::chrono::milliseconds(kPeriod)));
}

}  // namespace syncd
