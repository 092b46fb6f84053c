// Follows Sentinel's announcements of a new primary (sentinel:// only): a
// thread subscribed to "+switch-master" on one sentinel at a time, moving
// to the next when that one fails. A switch of our master is recorded in
// the metrics (the primary, one more failover), which makes every Redis
// connected before it stale (Redis::broken()): the projector's next batch
// reconnects through the sentinels instead of writing to the old primary,
// which may be gone or, worse, still up and about to be demoted.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "common/redis_address.hpp"
#include "core/config.hpp"
#include "core/metrics.hpp"
#include "daemon/redis_conn.hpp"

namespace syncd {

class SentinelWatch {
  public:
    // How long a silent subscription is left before the stop flag is looked
    // at again: bounds how long stop() waits on the thread.
    static constexpr std::chrono::milliseconds kPoll{250};

    SentinelWatch(const RedisSettings& settings, Metrics& metrics)
        : settings_(settings), metrics_(metrics) {}
    ~SentinelWatch() { stop(); }
    SentinelWatch(const SentinelWatch&) = delete;
    SentinelWatch& operator=(const SentinelWatch&) = delete;

    // Starts the thread for a sentinel:// address; nothing otherwise.
    void start();
    void stop();

  private:
    void run();
    // Subscribes on `sentinel` (`subscribed` then true) and handles its
    // messages until stop (returns) or a failure (throws RedisError).
    void watch(const session::common::RedisEndpoint& sentinel, bool& subscribed);
    // Asks `sentinel` for the primary: a switch before our subscription
    // began is not announced again.
    void check_primary(const session::common::RedisEndpoint& sentinel);
    bool stopping();
    // Waits up to `wait` for stop; false when stopping.
    bool pause(std::chrono::milliseconds wait);

    const RedisSettings settings_;
    Metrics& metrics_;
    SslCtxPtr ssl_ctx_;  // made by the thread, used by it only
    std::thread thread_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool stopping_ = false;
};

}  // namespace syncd
