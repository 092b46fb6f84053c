#include "core/metrics_text.hpp"

#include <cinttypes>
#include <cstdio>

namespace session::core {
namespace {

constexpr std::uint64_t kUsPerSecond = 1000000;

void append_u64(std::string& out, std::uint64_t value) {
    char digits[24];
    const int n = std::snprintf(digits, sizeof digits, "%" PRIu64, value);
    if (n > 0) out.append(digits, static_cast<std::size_t>(n));
}

// Microseconds as decimal seconds, exactly ("0.00025", "1.5", "3"): no
// floating point, so bucket bounds are stable strings across scrapes.
void append_seconds(std::string& out, std::uint64_t microseconds) {
    append_u64(out, microseconds / kUsPerSecond);
    std::uint64_t fraction = microseconds % kUsPerSecond;
    if (fraction == 0) return;
    char digits[8];
    std::snprintf(digits, sizeof digits, "%06" PRIu64, fraction);
    std::size_t length = 6;
    while (length > 0 && digits[length - 1] == '0') --length;
    out.push_back('.');
    out.append(digits, length);
}

void append_header(std::string& out, std::string_view name, std::string_view help,
                   std::string_view type) {
    out.append("# HELP ").append(name).append(" ").append(help).append("\n");
    out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

void append_single(std::string& out, std::string_view name, std::string_view help,
                   std::string_view type, std::uint64_t value) {
    append_header(out, name, help, type);
    out.append(name).append(" ");
    append_u64(out, value);
    out.append("\n");
}

}  // namespace

std::size_t latency_bucket(std::uint64_t latency_us) noexcept {
    for (std::size_t i = 0; i < kLatencyBucketsUs.size(); ++i) {
        if (latency_us <= kLatencyBucketsUs[i]) return i;
    }
    return kLatencyBucketsUs.size();  // +Inf
}

std::string format_prometheus(const MetricsSnapshot& snapshot) {
    std::string out;
    out.reserve(4096);

    constexpr std::string_view kChecks = "nginx_session_checks_total";
    append_header(out, kChecks, "Session checks by outcome.", "counter");
    for (std::size_t i = 0; i < kOutcomeCount; ++i) {
        out.append(kChecks).append("{outcome=\"");
        out.append(outcome_name(static_cast<Outcome>(i))).append("\"} ");
        append_u64(out, snapshot.checks[i]);
        out.append("\n");
    }

    append_single(out, "nginx_session_cache_hits_total",
                  "Checks answered from the shared-memory cache.", "counter", snapshot.cache_hits);
    append_single(out, "nginx_session_cache_misses_total",
                  "Checks the shared-memory cache could not answer.", "counter",
                  snapshot.cache_misses);
    append_single(out, "nginx_session_redis_errors_total",
                  "Redis lookups that failed (error reply, malformed reply, lost connection).",
                  "counter", snapshot.redis_errors);
    append_single(out, "nginx_session_redis_timeouts_total", "Redis lookups that timed out.",
                  "counter", snapshot.redis_timeouts);
    append_single(out, "nginx_session_redis_reconnects_total",
                  "Connections to Redis opened again after a loss.", "counter",
                  snapshot.redis_reconnects);
    append_single(out, "nginx_session_redis_connected_workers",
                  "Worker processes currently connected to Redis.", "gauge",
                  snapshot.redis_connected_workers);
    append_single(out, "nginx_session_workers", "Worker processes running the module.", "gauge",
                  snapshot.redis_workers);
    append_single(out, "nginx_session_touches_total",
                  "Sliding-expiry updates of last_active_at sent to Redis.", "counter",
                  snapshot.touches);
    append_single(out, "nginx_session_redis_tls_handshake_failures_total",
                  "TLS handshakes with Redis that failed or did not verify.", "counter",
                  snapshot.tls_handshake_failures);

    append_single(out, "nginx_session_redis_failovers_total",
                  "Sentinel failovers seen: a verified primary other than the last one.", "counter",
                  snapshot.redis_failovers);
    if (!snapshot.primaries.empty()) {
        constexpr std::string_view kPrimary = "nginx_session_redis_primary_info";
        append_header(out, kPrimary,
                      "The primary workers last verified (sentinel://), and how many did.",
                      "gauge");
        for (const auto& [address, workers] : snapshot.primaries) {
            // host:port never holds a quote, a backslash or a newline.
            out.append(kPrimary).append("{address=\"").append(address).append("\"} ");
            append_u64(out, workers);
            out.append("\n");
        }
    }
    append_single(out, "nginx_session_redis_moved_total",
                  "MOVED redirections from Redis Cluster (the slot map changed).", "counter",
                  snapshot.redis_moved);
    append_single(out, "nginx_session_redis_ask_total",
                  "ASK redirections from Redis Cluster (a slot being migrated).", "counter",
                  snapshot.redis_ask);
    append_single(out, "nginx_session_jwks_reads_total",
                  "Reads of the key set in Redis (session_jwt_keys redis) answered.", "counter",
                  snapshot.jwks_reads);
    append_single(out, "nginx_session_jwks_failures_total",
                  "Reads of the key set that failed, or sets refused as malformed.", "counter",
                  snapshot.jwks_failures);

    constexpr std::string_view kLatency = "nginx_session_redis_lookup_seconds";
    append_header(out, kLatency, "Latency of Redis session lookups.", "histogram");
    // The snapshot counts per bucket; Prometheus wants each bucket to count
    // every observation at or below its bound.
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < kLatencyBucketCount; ++i) {
        cumulative += snapshot.latency_buckets[i];
        out.append(kLatency).append("_bucket{le=\"");
        if (i < kLatencyBucketsUs.size()) {
            append_seconds(out, kLatencyBucketsUs[i]);
        } else {
            out.append("+Inf");
        }
        out.append("\"} ");
        append_u64(out, cumulative);
        out.append("\n");
    }
    out.append(kLatency).append("_sum ");
    append_seconds(out, snapshot.latency_sum_us);
    out.append("\n");
    out.append(kLatency).append("_count ");
    append_u64(out, cumulative);
    out.append("\n");
    return out;
}

}  // namespace session::core
