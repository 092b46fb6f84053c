// The background side of issue 9 in `syncd serve`: the write-back worker,
// which sends the queued users' application id and role to Clerk
// (schema/005_writeback.sql), and the key fetcher, which keeps the
// instance's JWKS in Redis for the nginx module. Each runs on its own
// thread with its own BackendApi (one curl handle per thread), so that a
// slow or failing Clerk never touches the webhook's request path, and a
// backlog of write-backs never delays a key rotation.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>

#include "core/config.hpp"
#include "core/metrics.hpp"
#include "core/retry_policy.hpp"
#include "daemon/clerk_api.hpp"
#include "daemon/pg.hpp"
#include "daemon/redis.hpp"

namespace syncd {

// What the Backend API client is given in serve: SYNCD_CLERK_*, with
// timeouts short enough that stopping syncd never waits long on Clerk.
clerk::ApiSettings serve_api_settings(const Config& cfg);

// A stoppable thread that runs `step` and then waits for what it returns
// (or for stop).
class Worker {
  public:
    virtual ~Worker();
    void start();
    void stop();

  protected:
    // One round; returns how long to wait before the next. Must not throw.
    virtual std::chrono::milliseconds step() noexcept = 0;
    // Waits up to `d` unless stop is asked; false once stopping.
    bool sleep_for(std::chrono::milliseconds d);
    bool stopping();

  private:
    std::thread thread_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool stopping_ = false;
};

class WriteBack : public Worker {
  public:
    WriteBack(const Config& cfg, Metrics& metrics);
    ~WriteBack() override { stop(); }

    // Rows taken per pass, and how often the queue is looked at when idle:
    // a new row waits at most that long (the webhook never signals the
    // worker, so that nothing of the write-back is on its path).
    static constexpr int kBatch = 20;
    static constexpr std::chrono::milliseconds kPoll{1000};
    // A row being sent is leased for this long (a crash mid-send leaves it
    // to be sent again after it): longer than one request may take.
    static constexpr std::chrono::seconds kLease{60};

  private:
    std::chrono::milliseconds step() noexcept override;
    // One pass over the due rows; returns how long to pause (0: more are
    // due now). Throws PgError.
    std::chrono::milliseconds drain();
    struct Row {
        std::string clerk_user_id;
        std::string generation;
        int attempts = 0;
        std::optional<std::string> db_id;  // none: no live users row
        std::string role;
    };
    // Sends one row and records the outcome; returns the Retry-After of a
    // 429 (the whole queue waits), else zero.
    std::chrono::milliseconds send(const Row& row);
    // Done with a row: deleted, unless a change bumped its generation since
    // it was claimed (then due again at once).
    void settle(const Row& row);
    void report_depth();
    double jitter();

    Config cfg_;
    Metrics& metrics_;
    RetryPolicy policy_;
    std::unique_ptr<clerk::BackendApi> api_;
    PgConn pg_;
    std::mt19937_64 rng_{std::random_device{}()};
    bool pg_failing_ = false;
    bool clerk_failing_ = false;
};

class KeyFetcher : public Worker {
  public:
    KeyFetcher(const Config& cfg, Metrics& metrics);
    ~KeyFetcher() override { stop(); }

    // After a failed round (Clerk or Redis), the next comes sooner than the
    // interval: backoff from kRetryFirst, never beyond the interval.
    static constexpr std::chrono::milliseconds kRetryFirst{2000};

  private:
    std::chrono::milliseconds step() noexcept override;
    // Fetches, checks and stores the set; throws on failure.
    void refresh();

    Config cfg_;
    Metrics& metrics_;
    std::unique_ptr<clerk::BackendApi> api_;
    std::unique_ptr<Redis> redis_;
    int failures_ = 0;
    bool failing_ = false;
    std::mt19937_64 rng_{std::random_device{}()};
};

// `<prefix>jwks` (docs/redis-contract.md).
std::string jwks_key(const std::string& prefix);

// Stores `body` under `<prefix>jwks` when its bytes differ from the stored
// ones, then publishes `keys` on the revocation channel; returns whether it
// did. Throws RedisError.
bool store_jwks(Redis& redis, const std::string& prefix, const std::string& body);

}  // namespace syncd
