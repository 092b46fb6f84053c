#include "core/retry_policy.hpp"

#include <gtest/gtest.h>

namespace syncd {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// 1994-11-06 08:49:37 UTC, the example date of RFC 9110.
const auto kExample = std::chrono::system_clock::from_time_t(784111777);

TEST(RetryAfter, DeltaSeconds) {
    EXPECT_EQ(parse_retry_after("120", kExample), milliseconds(120000));
    EXPECT_EQ(parse_retry_after(" 0 ", kExample), milliseconds(0));
    EXPECT_EQ(parse_retry_after("1", kExample), milliseconds(1000));
}

TEST(RetryAfter, HttpDateInAllThreeForms) {
    const auto now = kExample - seconds(30);
    EXPECT_EQ(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), milliseconds(30000));
    EXPECT_EQ(parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now), milliseconds(30000));
    EXPECT_EQ(parse_retry_after("Sun Nov  6 08:49:37 1994", now), milliseconds(30000));
}

TEST(RetryAfter, DateInThePastIsZeroAndFractionsRoundUp) {
    EXPECT_EQ(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", kExample + seconds(5)),
              milliseconds(0));
    EXPECT_EQ(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", kExample - milliseconds(1500)),
              milliseconds(1500));
}

TEST(RetryAfter, GarbageIsNotADelay) {
    EXPECT_FALSE(parse_retry_after("", kExample));
    EXPECT_FALSE(parse_retry_after("soon", kExample));
    EXPECT_FALSE(parse_retry_after("-5", kExample));
    EXPECT_FALSE(parse_retry_after("1.5", kExample));
    EXPECT_FALSE(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT trailing", kExample));
}

TEST(Backoff, DoublesUpToTheCapWithJitterInTheUpperHalf) {
    RetryPolicy p;
    p.base = milliseconds(500);
    p.cap = milliseconds(4000);
    EXPECT_EQ(backoff_delay(p, 1, 0.0), milliseconds(250));
    EXPECT_EQ(backoff_delay(p, 1, 1.0), milliseconds(500));
    EXPECT_EQ(backoff_delay(p, 2, 0.0), milliseconds(500));
    EXPECT_EQ(backoff_delay(p, 3, 0.5), milliseconds(1500));
    EXPECT_EQ(backoff_delay(p, 4, 1.0), milliseconds(4000));
    EXPECT_EQ(backoff_delay(p, 40, 1.0), milliseconds(4000));  // no overflow
    for (double j = 0; j < 1; j += 0.125) {
        auto d = backoff_delay(p, 3, j);
        EXPECT_GE(d, milliseconds(1000));
        EXPECT_LE(d, milliseconds(2000));
    }
}

TEST(RetryDelay, WhatIsRetried) {
    RetryPolicy p;
    EXPECT_TRUE(retry_delay(p, 1, 0, std::nullopt, 0.5));  // transport
    for (long s : {408L, 425L, 429L, 500L, 502L, 503L, 504L}) {
        EXPECT_TRUE(retry_delay(p, 1, s, std::nullopt, 0.5)) << s;
    }
    for (long s : {400L, 401L, 403L, 404L, 422L, 501L}) {
        EXPECT_FALSE(retry_delay(p, 1, s, std::nullopt, 0.5)) << s;
    }
}

TEST(RetryDelay, RetryAfterIsAFloorAndAttemptsRunOut) {
    RetryPolicy p;
    p.max_attempts = 3;
    p.base = milliseconds(100);
    EXPECT_EQ(retry_delay(p, 1, 429, seconds(7), 0.0), milliseconds(7000));
    EXPECT_EQ(retry_delay(p, 2, 503, seconds(2), 1.0), milliseconds(2000));
    EXPECT_EQ(retry_delay(p, 1, 429, std::chrono::hours(5), 0.0), p.retry_after_cap);
    EXPECT_FALSE(retry_delay(p, 3, 429, seconds(1), 0.0));
}

}  // namespace
}  // namespace syncd
