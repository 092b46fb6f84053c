// Background pruning of what syncd no longer needs: webhook_events and
// dead_letters older than SYNCD_EVENT_RETENTION, sessions past their last
// possible use (expired, and unchanged, for longer than that) and memberships
// removed longer ago than that. Each table goes in batches of a few hundred
// rows, one short transaction each, skipping rows a webhook holds locked, so
// that no lock is held for long and deliveries never wait behind a pass.
#pragma once

#include <libpq-fe.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

namespace syncd {

struct RetentionReport {
    long webhook_events = 0;
    long dead_letters = 0;
    long sessions = 0;
    long memberships = 0;
    long total() const { return webhook_events + dead_letters + sessions + memberships; }
    std::string summary() const;  // "webhook_events 3, dead_letters 0, ..."
};

// One pass over every table with the given retention (seconds); returns
// between batches once `stopping` says so. Throws PgError.
RetentionReport prune_expired(PGconn* pg, std::int64_t retention_seconds,
                              const std::function<bool()>& stopping = {});

class Retention {
  public:
    Retention(std::string database_url, std::int64_t retention_seconds)
        : database_url_(std::move(database_url)), retention_seconds_(retention_seconds) {}
    ~Retention() { stop(); }
    Retention(const Retention&) = delete;
    Retention& operator=(const Retention&) = delete;

    // A pass at start, then every kPeriod (kRetry after a failure), on a
    // connection of its own.
    void start();
    void stop();

    static constexpr std::chrono::minutes kPeriod{10};
    static constexpr std::chrono::seconds kRetry{30};

  private:
    void run();
    bool stopping();
    // Waits up to `wait` for stop; false when stopping.
    bool pause(std::chrono::milliseconds wait);

    std::string database_url_;
    std::int64_t retention_seconds_;
    std::thread thread_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool stopping_ = false;
};

}  // namespace syncd
