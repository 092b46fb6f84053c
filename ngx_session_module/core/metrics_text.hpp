// Prometheus text exposition of the module's counters. The glue copies the
// shared-memory counters into a MetricsSnapshot; this formats it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/record.hpp"

namespace session::core {

// Upper bounds (microseconds) of the Redis lookup latency histogram; a last
// +Inf bucket follows them.
inline constexpr std::array<std::uint64_t, 11> kLatencyBucketsUs = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000};
inline constexpr std::size_t kLatencyBucketCount = kLatencyBucketsUs.size() + 1;

// Index of the bucket a latency falls in (the first bound >= latency).
std::size_t latency_bucket(std::uint64_t latency_us) noexcept;

struct MetricsSnapshot {
    std::array<std::uint64_t, kOutcomeCount> checks{};  // by Outcome
    std::uint64_t cache_hits = 0;
    std::uint64_t cache_misses = 0;
    std::uint64_t redis_errors = 0;
    std::uint64_t redis_timeouts = 0;
    std::uint64_t redis_reconnects = 0;
    std::uint64_t redis_connected_workers = 0;  // gauge
    std::uint64_t redis_workers = 0;            // gauge: workers running
    std::uint64_t touches = 0;
    std::uint64_t tls_handshake_failures = 0;
    // Per bucket, not cumulative; the formatter accumulates.
    std::array<std::uint64_t, kLatencyBucketCount> latency_buckets{};
    std::uint64_t latency_sum_us = 0;
    std::uint64_t redis_failovers = 0;
    std::uint64_t redis_moved = 0;
    std::uint64_t redis_ask = 0;
    std::uint64_t jwks_reads = 0;     // session_jwt_keys redis: GETs answered
    std::uint64_t jwks_failures = 0;  // GETs failed, or sets refused as malformed
    // sentinel://: each primary (host:port) and how many workers last
    // verified it.
    std::vector<std::pair<std::string, std::uint64_t>> primaries;
};

// Metric names:
//   nginx_session_checks_total{outcome="ok"|...}   counter
//   nginx_session_cache_hits_total / _misses_total counter
//   nginx_session_redis_errors_total               counter
//   nginx_session_redis_timeouts_total             counter
//   nginx_session_redis_reconnects_total           counter
//   nginx_session_redis_connected_workers          gauge
//   nginx_session_workers                          gauge
//   nginx_session_touches_total                    counter
//   nginx_session_redis_tls_handshake_failures_total counter
//   nginx_session_redis_failovers_total            counter
//   nginx_session_redis_primary_info{address=}     gauge (workers on it)
//   nginx_session_redis_moved_total / _ask_total   counter
//   nginx_session_jwks_reads_total / _failures_total counter
//   nginx_session_redis_lookup_seconds             histogram (le in seconds)
std::string format_prometheus(const MetricsSnapshot& snapshot);

}  // namespace session::core
