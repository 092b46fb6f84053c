#include "core/metrics.hpp"

#include <cstdio>
#include <cstdlib>
#include <set>

namespace syncd {
namespace {

// The shortest decimal that reads back as the same double.
std::string number(double v) {
    char buf[64];
    for (int precision = 1; precision <= 17; ++precision) {
        std::snprintf(buf, sizeof buf, "%.*g", precision, v);
        if (std::strtod(buf, nullptr) == v) break;
    }
    return buf;
}

// Label values are event types, which are trusted (they come signed) but
// still escaped as the exposition format asks.
std::string label(const std::string& v) {
    std::string out;
    for (char c : v) {
        if (c == '\\' || c == '"') out += '\\';
        if (c == '\n') {
            out += "\\n";
            continue;
        }
        out += c;
    }
    return out;
}

}  // namespace

void Metrics::count_event(const std::string& type, const char* outcome) {
    std::lock_guard<std::mutex> lock(mu_);
    std::set<std::string> types;
    for (const auto& [key, n] : events_) types.insert(key.first);
    std::string t = type;
    if (types.count(t) == 0 && types.size() >= kMaxEventTypes) t = "other";
    ++events_[{t, outcome}];
}

void Metrics::count_signature_failure(const char* reason) {
    std::lock_guard<std::mutex> lock(mu_);
    ++signature_failures_[reason];
}

void Metrics::count_response(int status) {
    std::lock_guard<std::mutex> lock(mu_);
    ++responses_[status];
}

void Metrics::observe_latency(double seconds) {
    std::lock_guard<std::mutex> lock(mu_);
    for (std::size_t i = 0; i < kLatencyBuckets.size(); ++i) {
        if (seconds <= kLatencyBuckets[i]) ++latency_buckets_[i];
    }
    ++latency_count_;
    latency_sum_ += seconds;
}

std::uint64_t Metrics::events(const std::string& type, const std::string& outcome) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = events_.find({type, outcome});
    return it == events_.end() ? 0 : it->second;
}

bool Metrics::set_redis_primary(const std::string& address) {
    std::lock_guard<std::mutex> lock(mu_);
    const bool failover = redis_primaries_.size() == 1 && redis_primaries_[0] != address;
    if (failover) ++redis_failovers_;
    redis_primaries_.assign(1, address);
    return failover;
}

void Metrics::set_redis_primaries(std::vector<std::string> addresses) {
    std::lock_guard<std::mutex> lock(mu_);
    redis_primaries_ = std::move(addresses);
}

std::string Metrics::render() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::string out;
    out += "# HELP syncd_events_total Verified webhook events by type and outcome.\n";
    out += "# TYPE syncd_events_total counter\n";
    std::uint64_t duplicates = 0;
    for (const auto& [key, n] : events_) {
        out += "syncd_events_total{type=\"" + label(key.first) + "\",outcome=\"" + key.second +
               "\"} " + std::to_string(n) + "\n";
        if (key.second == "duplicate") duplicates += n;
    }
    out += "# HELP syncd_duplicates_total Redeliveries of an event already committed.\n";
    out += "# TYPE syncd_duplicates_total counter\n";
    out += "syncd_duplicates_total " + std::to_string(duplicates) + "\n";
    out += "# HELP syncd_signature_failures_total Deliveries rejected with 401, by reason.\n";
    out += "# TYPE syncd_signature_failures_total counter\n";
    for (const char* reason :
         {"missing_header", "bad_timestamp", "too_old", "too_new", "bad_signature"}) {
        auto it = signature_failures_.find(reason);
        std::uint64_t n = it == signature_failures_.end() ? 0 : it->second;
        out += std::string("syncd_signature_failures_total{reason=\"") + reason + "\"} " +
               std::to_string(n) + "\n";
    }
    out += "# HELP syncd_http_responses_total HTTP responses by status code.\n";
    out += "# TYPE syncd_http_responses_total counter\n";
    for (const auto& [code, n] : responses_) {
        out += "syncd_http_responses_total{code=\"" + std::to_string(code) + "\"} " +
               std::to_string(n) + "\n";
    }
    out += "# HELP syncd_outbox_depth Changes committed in PostgreSQL not yet applied to Redis.\n";
    out += "# TYPE syncd_outbox_depth gauge\n";
    out += "syncd_outbox_depth " + std::to_string(outbox_depth_.load()) + "\n";
    out += "# HELP syncd_redis_up Whether the last Redis operation succeeded.\n";
    out += "# TYPE syncd_redis_up gauge\n";
    out += "syncd_redis_up " + std::to_string(redis_up_.load()) + "\n";
    out += "# HELP syncd_projected_total Outbox entries applied to Redis.\n";
    out += "# TYPE syncd_projected_total counter\n";
    out += "syncd_projected_total " + std::to_string(projected_.load()) + "\n";
    out +=
        "# HELP syncd_revocations_published_total Messages published on the revocation channel.\n";
    out += "# TYPE syncd_revocations_published_total counter\n";
    out += "syncd_revocations_published_total " + std::to_string(published_.load()) + "\n";
    out +=
        "# HELP syncd_redis_resyncs_total Reconciliations run because Redis had lost syncd's "
        "marker (restarted empty, flushed).\n";
    out += "# TYPE syncd_redis_resyncs_total counter\n";
    out += "syncd_redis_resyncs_total " + std::to_string(redis_resyncs_.load()) + "\n";
    out +=
        "# HELP syncd_redis_primary_info The Redis primary syncd writes to (every primary of "
        "the slot map in a cluster).\n";
    out += "# TYPE syncd_redis_primary_info gauge\n";
    for (const auto& address : redis_primaries_) {
        out += "syncd_redis_primary_info{address=\"" + label(address) + "\"} 1\n";
    }
    out +=
        "# HELP syncd_redis_failovers_total Changes of the Redis primary seen (Sentinel's "
        "+switch-master, or a reconnection that found another primary).\n";
    out += "# TYPE syncd_redis_failovers_total counter\n";
    out += "syncd_redis_failovers_total " + std::to_string(redis_failovers_.load()) + "\n";
    out += "# HELP syncd_redis_moved_total MOVED redirections from Redis Cluster.\n";
    out += "# TYPE syncd_redis_moved_total counter\n";
    out += "syncd_redis_moved_total " + std::to_string(redis_moved_.load()) + "\n";
    out += "# HELP syncd_redis_ask_total ASK redirections from Redis Cluster.\n";
    out += "# TYPE syncd_redis_ask_total counter\n";
    out += "syncd_redis_ask_total " + std::to_string(redis_ask_.load()) + "\n";
    out +=
        "# HELP syncd_redis_tls_handshake_failures_total TLS handshakes with Redis that "
        "failed (certificate, name, protocol, or a refused client certificate).\n";
    out += "# TYPE syncd_redis_tls_handshake_failures_total counter\n";
    out += "syncd_redis_tls_handshake_failures_total " +
           std::to_string(redis_tls_failures_.load()) + "\n";
    out +=
        "# HELP syncd_writeback_queue_depth Users whose id and role are still to be written to "
        "Clerk.\n";
    out += "# TYPE syncd_writeback_queue_depth gauge\n";
    out += "syncd_writeback_queue_depth " + std::to_string(writeback_depth_.load()) + "\n";
    out +=
        "# HELP syncd_writeback_oldest_age_seconds Age of the oldest change in the write-back "
        "queue (0 when empty).\n";
    out += "# TYPE syncd_writeback_oldest_age_seconds gauge\n";
    out += "syncd_writeback_oldest_age_seconds " +
           number(static_cast<double>(writeback_oldest_age_ms_.load()) / 1000.0) + "\n";
    out +=
        "# HELP syncd_writeback_failures_total Write-back attempts that failed (to be retried).\n";
    out += "# TYPE syncd_writeback_failures_total counter\n";
    out += "syncd_writeback_failures_total " + std::to_string(writeback_failures_.load()) + "\n";
    out += "# HELP syncd_writeback_sent_total Write-backs Clerk accepted.\n";
    out += "# TYPE syncd_writeback_sent_total counter\n";
    out += "syncd_writeback_sent_total " + std::to_string(writeback_sent_.load()) + "\n";
    out +=
        "# HELP syncd_writeback_dropped_total Write-backs dropped: the user is gone (404, or "
        "deleted here).\n";
    out += "# TYPE syncd_writeback_dropped_total counter\n";
    out += "syncd_writeback_dropped_total " + std::to_string(writeback_dropped_.load()) + "\n";
    out +=
        "# HELP syncd_jwks_last_success_timestamp_seconds When the instance's key set was last "
        "fetched and found usable (0: never).\n";
    out += "# TYPE syncd_jwks_last_success_timestamp_seconds gauge\n";
    out += "syncd_jwks_last_success_timestamp_seconds " + std::to_string(jwks_success_s_.load()) +
           "\n";
    out +=
        "# HELP syncd_jwks_fetch_failures_total Key set fetches that failed or were refused "
        "(the stored set kept).\n";
    out += "# TYPE syncd_jwks_fetch_failures_total counter\n";
    out += "syncd_jwks_fetch_failures_total " + std::to_string(jwks_failures_.load()) + "\n";
    out += "# HELP syncd_jwks_updates_total Key sets written to Redis because they changed.\n";
    out += "# TYPE syncd_jwks_updates_total counter\n";
    out += "syncd_jwks_updates_total " + std::to_string(jwks_stored_.load()) + "\n";
    out += "# HELP syncd_request_duration_seconds Webhook request latency.\n";
    out += "# TYPE syncd_request_duration_seconds histogram\n";
    for (std::size_t i = 0; i < kLatencyBuckets.size(); ++i) {
        out += "syncd_request_duration_seconds_bucket{le=\"" + number(kLatencyBuckets[i]) + "\"} " +
               std::to_string(latency_buckets_[i]) + "\n";
    }
    out += "syncd_request_duration_seconds_bucket{le=\"+Inf\"} " + std::to_string(latency_count_) +
           "\n";
    out += "syncd_request_duration_seconds_sum " + number(latency_sum_) + "\n";
    out += "syncd_request_duration_seconds_count " + std::to_string(latency_count_) + "\n";
    return out;
}

}  // namespace syncd
