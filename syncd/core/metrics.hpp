// syncd's counters and their Prometheus text exposition. Thread-safe; no
// I/O. Label values are event types and fixed outcome names only.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace syncd {

class Metrics {
  public:
    static constexpr std::array<double, 12> kLatencyBuckets = {
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0};
    // More distinct event types than this are counted as "other".
    static constexpr std::size_t kMaxEventTypes = 64;

    // outcome: applied, stale, ignored, duplicate, failed.
    void count_event(const std::string& type, const char* outcome);
    void count_signature_failure(const char* reason);
    void count_response(int status);
    void observe_latency(double seconds);
    void set_outbox_depth(std::int64_t depth) { outbox_depth_.store(depth); }
    // Called by the projector after each cycle: up means it applied the
    // outbox to Redis; the time of the last such cycle is kept for /healthz.
    void set_redis_up(bool up) {
        redis_up_.store(up ? 1 : 0);
        if (up) {
            projector_ok_ms_.store(std::chrono::duration_cast<std::chrono::milliseconds>(
                                       std::chrono::system_clock::now().time_since_epoch())
                                       .count());
        } else {
            redis_down_reported_.store(true);
        }
    }
    // 0 until the projector's first successful cycle.
    std::int64_t projector_last_success_ms() const { return projector_ok_ms_.load(); }
    // The projector's last cycle failed on Redis.
    bool redis_down() const { return redis_down_reported_.load() && redis_up_.load() == 0; }
    void count_projected(std::int64_t n) { projected_ += n; }
    void count_published(std::int64_t n) { published_ += n; }
    // A background reconciliation completed because Redis lacked the marker.
    void count_redis_resync() { ++redis_resyncs_; }

    // Redis topology (issue 8). The primary syncd writes to (standalone,
    // Sentinel): a change from a known one is a failover, whoever noticed
    // it first (the sentinel subscription or a reconnection), counted once.
    // Returns whether it was one.
    bool set_redis_primary(const std::string& address);
    // Cluster: every primary of the slot map; not counted as failovers.
    void set_redis_primaries(std::vector<std::string> addresses);
    // Bumped by each failover: a connection made before it is stale.
    std::uint64_t redis_failovers() const { return redis_failovers_.load(); }
    void count_redis_moved() { ++redis_moved_; }
    void count_redis_ask() { ++redis_ask_; }
    void count_redis_tls_handshake_failure() { ++redis_tls_failures_; }

    // The write-back queue (issue 9): its depth and the age of its oldest
    // change (seconds), read by the worker after each pass; attempts that
    // failed (any answer but 2xx and 404, or none); rows sent, and rows
    // dropped because the user is gone (404) or has no live row here.
    void set_writeback_queue(std::int64_t depth, double oldest_age_s) {
        writeback_depth_.store(depth);
        writeback_oldest_age_ms_.store(static_cast<std::int64_t>(oldest_age_s * 1000));
    }
    void count_writeback_failure() { ++writeback_failures_; }
    void count_writeback_sent() { ++writeback_sent_; }
    void count_writeback_dropped() { ++writeback_dropped_; }
    // The instance's key set: the last fetch that got a usable set (epoch
    // seconds; 0: none yet), fetches that did not, and the sets stored in
    // Redis because they differed from the one there.
    void set_jwks_fetched_now() {
        jwks_success_s_.store(std::chrono::duration_cast<std::chrono::seconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count());
    }
    void count_jwks_failure() { ++jwks_failures_; }
    void count_jwks_stored() { ++jwks_stored_; }

    std::string render() const;

    // For tests.
    std::uint64_t events(const std::string& type, const std::string& outcome) const;

  private:
    mutable std::mutex mu_;
    std::map<std::pair<std::string, std::string>, std::uint64_t> events_;
    std::map<std::string, std::uint64_t> signature_failures_;
    std::map<int, std::uint64_t> responses_;
    std::array<std::uint64_t, kLatencyBuckets.size()> latency_buckets_{};
    std::uint64_t latency_count_ = 0;
    double latency_sum_ = 0;
    std::atomic<std::int64_t> outbox_depth_{0};
    std::atomic<int> redis_up_{0};
    std::atomic<bool> redis_down_reported_{false};
    std::atomic<std::int64_t> projector_ok_ms_{0};
    std::atomic<std::int64_t> projected_{0};
    std::atomic<std::int64_t> published_{0};
    std::atomic<std::int64_t> redis_resyncs_{0};
    std::vector<std::string> redis_primaries_;  // under mu_
    std::atomic<std::uint64_t> redis_failovers_{0};
    std::atomic<std::uint64_t> redis_moved_{0};
    std::atomic<std::uint64_t> redis_ask_{0};
    std::atomic<std::uint64_t> redis_tls_failures_{0};
    std::atomic<std::int64_t> writeback_depth_{0};
    std::atomic<std::int64_t> writeback_oldest_age_ms_{0};
    std::atomic<std::uint64_t> writeback_failures_{0};
    std::atomic<std::uint64_t> writeback_sent_{0};
    std::atomic<std::uint64_t> writeback_dropped_{0};
    std::atomic<std::int64_t> jwks_success_s_{0};
    std::atomic<std::uint64_t> jwks_failures_{0};
    std::atomic<std::uint64_t> jwks_stored_{0};
};

}  // namespace syncd
