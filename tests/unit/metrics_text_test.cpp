#include "core/metrics_text.hpp"

#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

namespace session::core {
namespace {

bool contains_line(const std::string& text, const std::string& line) {
    std::istringstream lines(text);
    std::string current;
    while (std::getline(lines, current)) {
        if (current == line) return true;
    }
    return false;
}

std::vector<std::string> lines_starting_with(const std::string& text, const std::string& prefix) {
    std::vector<std::string> found;
    std::istringstream lines(text);
    std::string current;
    while (std::getline(lines, current)) {
        if (current.rfind(prefix, 0) == 0) found.push_back(current);
    }
    return found;
}

TEST(LatencyBucket, Bounds) {
    EXPECT_EQ(latency_bucket(0), 0u);
    EXPECT_EQ(latency_bucket(100), 0u);  // the bound itself belongs to the bucket
    EXPECT_EQ(latency_bucket(101), 1u);
    EXPECT_EQ(latency_bucket(250), 1u);
    EXPECT_EQ(latency_bucket(1000), 3u);
    EXPECT_EQ(latency_bucket(250000), 10u);
    EXPECT_EQ(latency_bucket(250001), 11u);  // +Inf
    EXPECT_EQ(latency_bucket(UINT64_MAX), kLatencyBucketCount - 1);
}

TEST(FormatPrometheus, Counters) {
    MetricsSnapshot snapshot;
    snapshot.checks[static_cast<std::size_t>(Outcome::ok)] = 10;
    snapshot.checks[static_cast<std::size_t>(Outcome::forbidden)] = 3;
    snapshot.checks[static_cast<std::size_t>(Outcome::stale)] = 18446744073709551615u;
    snapshot.cache_hits = 5;
    snapshot.cache_misses = 6;
    snapshot.redis_errors = 7;
    snapshot.redis_timeouts = 8;
    snapshot.redis_reconnects = 9;
    snapshot.redis_connected_workers = 2;
    snapshot.redis_workers = 4;
    snapshot.touches = 11;
    snapshot.tls_handshake_failures = 13;
    const std::string text = format_prometheus(snapshot);

    EXPECT_TRUE(contains_line(text, "# TYPE nginx_session_checks_total counter"));
    EXPECT_EQ(lines_starting_with(text, "# HELP nginx_session_checks_total ").size(), 1u);
    EXPECT_TRUE(contains_line(text, "nginx_session_checks_total{outcome=\"ok\"} 10"));
    EXPECT_TRUE(contains_line(text, "nginx_session_checks_total{outcome=\"forbidden\"} 3"));
    EXPECT_TRUE(contains_line(text, "nginx_session_checks_total{outcome=\"missing\"} 0"));
    EXPECT_TRUE(
        contains_line(text, "nginx_session_checks_total{outcome=\"stale\"} 18446744073709551615"));
    EXPECT_EQ(lines_starting_with(text, "nginx_session_checks_total{").size(), kOutcomeCount);

    const std::pair<const char*, const char*> singles[] = {
        {"nginx_session_cache_hits_total 5", "counter"},
        {"nginx_session_cache_misses_total 6", "counter"},
        {"nginx_session_redis_errors_total 7", "counter"},
        {"nginx_session_redis_timeouts_total 8", "counter"},
        {"nginx_session_redis_reconnects_total 9", "counter"},
        {"nginx_session_redis_connected_workers 2", "gauge"},
        {"nginx_session_workers 4", "gauge"},
        {"nginx_session_touches_total 11", "counter"},
        {"nginx_session_redis_tls_handshake_failures_total 13", "counter"},
    };
    for (const auto& [sample, type] : singles) {
        EXPECT_TRUE(contains_line(text, sample)) << sample;
        const std::string name = std::string(sample).substr(0, std::string(sample).find(' '));
        EXPECT_TRUE(contains_line(text, "# TYPE " + name + " " + type)) << name;
        EXPECT_EQ(lines_starting_with(text, "# HELP " + name + " ").size(), 1u) << name;
    }
    EXPECT_EQ(text.back(), '\n');
}

TEST(FormatPrometheus, HistogramIsCumulative) {
    MetricsSnapshot snapshot;
    snapshot.latency_buckets[0] = 1;   // <= 100us
    snapshot.latency_buckets[3] = 2;   // <= 1ms
    snapshot.latency_buckets[10] = 4;  // <= 250ms
    snapshot.latency_buckets[11] = 8;  // +Inf
    snapshot.latency_sum_us = 3'250'500;
    const std::string text = format_prometheus(snapshot);

    const std::string name = "nginx_session_redis_lookup_seconds";
    EXPECT_TRUE(contains_line(text, "# TYPE " + name + " histogram"));
    const std::vector<std::string> expected = {
        name + "_bucket{le=\"0.0001\"} 1", name + "_bucket{le=\"0.00025\"} 1",
        name + "_bucket{le=\"0.0005\"} 1", name + "_bucket{le=\"0.001\"} 3",
        name + "_bucket{le=\"0.0025\"} 3", name + "_bucket{le=\"0.005\"} 3",
        name + "_bucket{le=\"0.01\"} 3",   name + "_bucket{le=\"0.025\"} 3",
        name + "_bucket{le=\"0.05\"} 3",   name + "_bucket{le=\"0.1\"} 3",
        name + "_bucket{le=\"0.25\"} 7",   name + "_bucket{le=\"+Inf\"} 15",
    };
    EXPECT_EQ(lines_starting_with(text, name + "_bucket"), expected);
    EXPECT_TRUE(contains_line(text, name + "_sum 3.2505"));
    EXPECT_TRUE(contains_line(text, name + "_count 15"));
}

TEST(FormatPrometheus, EmptyHistogram) {
    const std::string text = format_prometheus(MetricsSnapshot{});
    const std::string name = "nginx_session_redis_lookup_seconds";
    EXPECT_TRUE(contains_line(text, name + "_bucket{le=\"+Inf\"} 0"));
    EXPECT_TRUE(contains_line(text, name + "_sum 0"));
    EXPECT_TRUE(contains_line(text, name + "_count 0"));
}

TEST(FormatPrometheus, SumKeepsMicroseconds) {
    MetricsSnapshot snapshot;
    snapshot.latency_sum_us = 1;
    EXPECT_TRUE(contains_line(format_prometheus(snapshot),
                              "nginx_session_redis_lookup_seconds_sum 0.000001"));
    snapshot.latency_sum_us = 12'000'000;
    EXPECT_TRUE(
        contains_line(format_prometheus(snapshot), "nginx_session_redis_lookup_seconds_sum 12"));
}

TEST(FormatPrometheus, EveryLineIsCommentOrSample) {
    MetricsSnapshot snapshot;
    snapshot.latency_buckets[5] = 1;
    const std::string text = format_prometheus(snapshot);
    std::istringstream lines(text);
    std::string line;
    int samples = 0;
    while (std::getline(lines, line)) {
        ASSERT_FALSE(line.empty());
        if (line[0] == '#') {
            EXPECT_TRUE(line.rfind("# HELP nginx_session_", 0) == 0 ||
                        line.rfind("# TYPE nginx_session_", 0) == 0)
                << line;
            continue;
        }
        ++samples;
        EXPECT_EQ(line.rfind("nginx_session_", 0), 0u) << line;
        const std::size_t space = line.rfind(' ');
        ASSERT_NE(space, std::string::npos) << line;
        EXPECT_NE(line.find_first_of("0123456789", space), std::string::npos) << line;
    }
    // 8 outcomes + 14 single metrics + 12 buckets + sum + count (no
    // primary_info lines without sentinel://)
    EXPECT_EQ(samples, 8 + 14 + 12 + 2);
}

TEST(FormatPrometheus, TopologyMetrics) {
    MetricsSnapshot snapshot;
    EXPECT_EQ(format_prometheus(snapshot).find("nginx_session_redis_primary_info"),
              std::string::npos);
    snapshot.redis_failovers = 1;
    snapshot.redis_moved = 7;
    snapshot.redis_ask = 2;
    snapshot.primaries = {{"127.0.0.1:6380", 3}, {"[::1]:6381", 1}};
    const std::string text = format_prometheus(snapshot);
    EXPECT_TRUE(contains_line(text, "nginx_session_redis_failovers_total 1"));
    EXPECT_TRUE(contains_line(text, "nginx_session_redis_moved_total 7"));
    EXPECT_TRUE(contains_line(text, "nginx_session_redis_ask_total 2"));
    EXPECT_TRUE(contains_line(text, "nginx_session_jwks_reads_total 0"));
    EXPECT_TRUE(contains_line(text, "nginx_session_jwks_failures_total 0"));
    EXPECT_TRUE(contains_line(text, "# TYPE nginx_session_redis_primary_info gauge"));
    EXPECT_TRUE(
        contains_line(text, "nginx_session_redis_primary_info{address=\"127.0.0.1:6380\"} 3"));
    EXPECT_TRUE(contains_line(text, "nginx_session_redis_primary_info{address=\"[::1]:6381\"} 1"));
}

}  // namespace
}  // namespace session::core
