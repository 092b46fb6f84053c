#include <gtest/gtest.h>

#include "core/metrics.hpp"

namespace syncd {
namespace {

bool has(const std::string& text, const std::string& line) {
    return text.find(line + "\n") != std::string::npos;
}

TEST(Metrics, Exposition) {
    Metrics m;
    m.count_event("user.created", "applied");
    m.count_event("user.created", "applied");
    m.count_event("user.created", "duplicate");
    m.count_signature_failure("bad_signature");
    m.observe_latency(0.003);
    m.observe_latency(0.2);
    m.set_outbox_depth(7);
    std::string t = m.render();
    EXPECT_TRUE(has(t, "syncd_events_total{type=\"user.created\",outcome=\"applied\"} 2"));
    EXPECT_TRUE(has(t, "syncd_duplicates_total 1"));
    EXPECT_TRUE(has(t, "syncd_signature_failures_total{reason=\"bad_signature\"} 1"));
    EXPECT_TRUE(has(t, "syncd_signature_failures_total{reason=\"too_old\"} 0"));
    EXPECT_TRUE(has(t, "syncd_outbox_depth 7"));
    EXPECT_TRUE(has(t, "syncd_request_duration_seconds_bucket{le=\"0.0025\"} 0"));
    EXPECT_TRUE(has(t, "syncd_request_duration_seconds_bucket{le=\"0.005\"} 1"));
    EXPECT_TRUE(has(t, "syncd_request_duration_seconds_bucket{le=\"0.25\"} 2"));
    EXPECT_TRUE(has(t, "syncd_request_duration_seconds_bucket{le=\"+Inf\"} 2"));
    EXPECT_TRUE(has(t, "syncd_request_duration_seconds_count 2"));
}

TEST(Metrics, RedisTopology) {
    Metrics m;
    EXPECT_FALSE(m.set_redis_primary("10.0.0.1:6379"));  // the first: no failover
    EXPECT_FALSE(m.set_redis_primary("10.0.0.1:6379"));
    EXPECT_TRUE(m.set_redis_primary("10.0.0.2:6379"));
    EXPECT_FALSE(m.set_redis_primary("10.0.0.2:6379"));  // seen twice, counted once
    EXPECT_EQ(m.redis_failovers(), 1u);
    m.count_redis_moved();
    m.count_redis_moved();
    m.count_redis_ask();
    m.count_redis_tls_handshake_failure();
    std::string t = m.render();
    EXPECT_TRUE(has(t, "syncd_redis_primary_info{address=\"10.0.0.2:6379\"} 1"));
    EXPECT_EQ(t.find("10.0.0.1:6379"), std::string::npos);
    EXPECT_TRUE(has(t, "syncd_redis_failovers_total 1"));
    EXPECT_TRUE(has(t, "syncd_redis_moved_total 2"));
    EXPECT_TRUE(has(t, "syncd_redis_ask_total 1"));
    EXPECT_TRUE(has(t, "syncd_redis_tls_handshake_failures_total 1"));
    m.set_redis_primaries({"a:1", "b:2", "c:3"});
    t = m.render();
    EXPECT_TRUE(has(t, "syncd_redis_primary_info{address=\"b:2\"} 1"));
    EXPECT_TRUE(has(t, "syncd_redis_failovers_total 1"));
}

TEST(Metrics, TypeCardinalityIsBounded) {
    Metrics m;
    for (int i = 0; i < 100; ++i) m.count_event("t" + std::to_string(i), "ignored");
    EXPECT_EQ(m.events("other", "ignored"), 100u - Metrics::kMaxEventTypes);
    EXPECT_EQ(m.events("t0", "ignored"), 1u);
}

TEST(Metrics, LabelsEscaped) {
    Metrics m;
    m.count_event("a\"b", "applied");
    EXPECT_NE(m.render().find("type=\"a\\\"b\""), std::string::npos);
}

}  // namespace
}  // namespace syncd
