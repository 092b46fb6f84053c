// When to try an HTTP call again, and after how long: pure logic, so that
// the Backend API client (daemon/clerk_api.cpp) and the write-back queue
// share one policy and it can be tested without a server or a clock.
//
// - 429 and the transient statuses are retried; other 4xx are not (the
//   same request would fail the same way).
// - A Retry-After the server sent (delta-seconds or an HTTP-date, RFC 9110
//   section 10.2.3) is a floor: the next attempt never comes earlier.
// - Otherwise exponential backoff with "equal jitter": half of the capped
//   exponential delay, plus a random part of the other half, so that many
//   clients failing together do not come back in step, and no retry comes
//   immediately.
#pragma once

#include <chrono>
#include <optional>
#include <string_view>

namespace syncd {

struct RetryPolicy {
    int max_attempts = 8;  // the first attempt included
    std::chrono::milliseconds base{500};
    std::chrono::milliseconds cap{30000};
    // A Retry-After longer than this is cut to it: a misbehaving server must
    // not park a caller for hours. Above `cap` on purpose: honouring the
    // server's wish is the point.
    std::chrono::milliseconds retry_after_cap{std::chrono::minutes(10)};
};

// 408, 425, 429, 500, 502, 503 and 504: a later attempt may succeed.
bool is_retryable_status(long status) noexcept;

// The Retry-After header's value as a delay from `now`: delta-seconds
// ("120"), or an HTTP-date in any of the three forms HTTP allows
// ("Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT",
// "Sun Nov  6 08:49:37 1994"). A date in the past is zero. nullopt when the
// value is none of these.
std::optional<std::chrono::milliseconds> parse_retry_after(
    std::string_view value, std::chrono::system_clock::time_point now);

// The backoff before attempt number `attempt` + 1, after `attempt` failed
// ones (attempt >= 1): d = min(cap, base * 2^(attempt-1)), result in
// [d/2, d]; `jitter` in [0, 1) picks the point.
std::chrono::milliseconds backoff_delay(const RetryPolicy& policy, int attempt, double jitter);

// The whole decision after a failed attempt (`attempts_done` >= 1):
// nullopt when not to retry (not retryable, or attempts used up), else the
// delay: the server's Retry-After when it gave one (capped by
// retry_after_cap, never below it otherwise), else backoff_delay.
// `status` is 0 for a transport failure (retryable).
std::optional<std::chrono::milliseconds> retry_delay(
    const RetryPolicy& policy, int attempts_done, long status,
    std::optional<std::chrono::milliseconds> retry_after, double jitter);

}  // namespace syncd
