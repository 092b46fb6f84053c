#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/metrics.hpp"
#include "core/writeback.hpp"

namespace syncd {
namespace {

using std::chrono::milliseconds;

TEST(WritebackBody, IdAndRoleUnderPublicMetadataOnly) {
    auto body =
        nlohmann::json::parse(writeback_body("0b5c6a1e-0000-4000-8000-000000000001", "admin"));
    EXPECT_EQ(body, nlohmann::json::parse(R"({"public_metadata":{
        "dbId":"0b5c6a1e-0000-4000-8000-000000000001","role":"admin"}})"));
}

TEST(WritebackBody, DefaultRoleIsOmittedNeverNull) {
    // Clerk had no usable role: its value is left alone (no null, which
    // would delete it; no "user", which syncd would have invented).
    auto body = nlohmann::json::parse(writeback_body("id-1", "user"));
    EXPECT_EQ(body, nlohmann::json::parse(R"({"public_metadata":{"dbId":"id-1"}})"));
    body = nlohmann::json::parse(writeback_body("id-1", ""));
    EXPECT_FALSE(body["public_metadata"].contains("role"));
}

TEST(WritebackBody, RoleIsEscapedAsJson) {
    auto body = nlohmann::json::parse(writeback_body("id", "a\"b"));
    EXPECT_EQ(body["public_metadata"]["role"], "a\"b");
}

TEST(WritebackPath, EncodesTheId) {
    EXPECT_EQ(writeback_path("user_2abcXYZ"), "/v1/users/user_2abcXYZ/metadata");
    EXPECT_EQ(writeback_path("a/b?c d"), "/v1/users/a%2Fb%3Fc%20d/metadata");
}

TEST(WritebackStep, WhatAnAnswerMeans) {
    EXPECT_EQ(writeback_step(200), WritebackStep::done);
    EXPECT_EQ(writeback_step(204), WritebackStep::done);
    EXPECT_EQ(writeback_step(404), WritebackStep::drop);
    for (long s : {0L, 400L, 401L, 403L, 422L, 429L, 500L, 502L, 503L}) {
        EXPECT_EQ(writeback_step(s), WritebackStep::retry) << s;
    }
}

TEST(WritebackDelay, RetryAfterIsHonouredAndCapped) {
    RetryPolicy p;
    p.base = std::chrono::seconds(1);
    p.cap = std::chrono::minutes(10);
    p.retry_after_cap = std::chrono::hours(1);
    EXPECT_EQ(writeback_delay(p, 1, milliseconds(7000), 0.0), milliseconds(7000));
    EXPECT_EQ(writeback_delay(p, 9, milliseconds(7000), 1.0), milliseconds(7000));
    EXPECT_EQ(writeback_delay(p, 1, std::chrono::hours(5), 0.5), std::chrono::hours(1));
}

TEST(WritebackDelay, ExponentialWithJitterUpToTheCap) {
    RetryPolicy p;
    p.base = std::chrono::seconds(1);
    p.cap = std::chrono::minutes(10);
    for (double j : {0.0, 0.3, 0.999}) {
        for (int attempts = 1; attempts < 40; ++attempts) {
            auto d = writeback_delay(p, attempts, milliseconds(0), j);
            auto full =
                std::min<milliseconds>(p.cap, milliseconds(1000LL << std::min(attempts - 1, 20)));
            EXPECT_GE(d, full / 2) << attempts;
            EXPECT_LE(d, full) << attempts;
        }
    }
    // Jitter spreads rows that failed together.
    EXPECT_NE(writeback_delay(p, 3, milliseconds(0), 0.1),
              writeback_delay(p, 3, milliseconds(0), 0.9));
}

TEST(Jwks, UsableSet) {
    EXPECT_TRUE(is_usable_jwks(R"({"keys":[{"kid":"ins_1","kty":"RSA","n":"AQAB","e":"AQAB"}]})"));
    EXPECT_TRUE(is_usable_jwks(R"({"keys":[{"kid":"a"},{"kid":"b"}],"extra":1})"));
}

TEST(Jwks, GarbageIsRefused) {
    for (const char* body :
         {"", "not json", "{\"keys\":[{\"kid\":\"a\"}]", "[]", "null", "{}", "{\"keys\":{}}",
          "{\"keys\":[]}", "{\"keys\":[1]}", "{\"keys\":\"x\"}", "<html>502</html>"}) {
        EXPECT_FALSE(is_usable_jwks(body)) << body;
    }
}

TEST(Metrics, WritebackAndKeys) {
    Metrics m;
    std::string out = m.render();
    EXPECT_NE(out.find("syncd_writeback_queue_depth 0\n"), std::string::npos);
    EXPECT_NE(out.find("syncd_writeback_oldest_age_seconds 0\n"), std::string::npos);
    EXPECT_NE(out.find("syncd_jwks_last_success_timestamp_seconds 0\n"), std::string::npos);
    m.set_writeback_queue(3, 12.5);
    m.count_writeback_failure();
    m.count_writeback_failure();
    m.count_writeback_sent();
    m.count_writeback_dropped();
    m.count_jwks_failure();
    m.count_jwks_stored();
    m.set_jwks_fetched_now();
    out = m.render();
    EXPECT_NE(out.find("syncd_writeback_queue_depth 3\n"), std::string::npos);
    EXPECT_NE(out.find("syncd_writeback_oldest_age_seconds 12.5\n"), std::string::npos);
    EXPECT_NE(out.find("syncd_writeback_failures_total 2\n"), std::string::npos);
    EXPECT_NE(out.find("syncd_writeback_sent_total 1\n"), std::string::npos);
    EXPECT_NE(out.find("syncd_writeback_dropped_total 1\n"), std::string::npos);
    EXPECT_NE(out.find("syncd_jwks_fetch_failures_total 1\n"), std::string::npos);
    EXPECT_NE(out.find("syncd_jwks_updates_total 1\n"), std::string::npos);
    EXPECT_EQ(out.find("syncd_jwks_last_success_timestamp_seconds 0\n"), std::string::npos);
}

}  // namespace
}  // namespace syncd
