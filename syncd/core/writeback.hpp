// The write-back of the application's user id and role into Clerk's
// public_metadata, and the instance's key set: the pure parts (what is
// sent, what an answer means, when to try again, whether a JWKS is worth
// storing). No I/O; the daemon's WriteBack and KeyFetcher use them.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/retry_policy.hpp"

namespace syncd {

// The role syncd gives a user whose public_metadata.role is absent or not a
// usable role word (event.hpp). The write-back omits it: syncd never writes
// a role it did not read from Clerk, nor deletes (null) one it could not use.
inline constexpr std::string_view kDefaultRole = "user";

// `{"public_metadata":{"dbId":"<db_id>","role":"<role>"}}`, role omitted
// when it is kDefaultRole. Clerk deep-merges public_metadata, so the user's
// other keys are kept: nothing else is sent.
std::string writeback_body(const std::string& db_id, const std::string& role);

// "/v1/users/<id>/metadata", the id percent-encoded (a Clerk id is
// [a-z0-9_], but a path segment must not be taken from a payload unchecked).
std::string writeback_path(const std::string& clerk_user_id);

// What to do with a queued row after one attempt.
enum class WritebackStep {
    done,   // 2xx: delete the row
    drop,   // 404: the user is gone from Clerk; nothing to write any more
    retry,  // anything else: keep the row, try again after retry_delay()
};

// `status` is the HTTP status, 0 for a transport failure (no answer).
WritebackStep writeback_step(long status);

// The wait before a row's next attempt after `attempts` failed ones: the
// server's Retry-After when it gave one (a 429; capped by the policy's
// retry_after_cap), else the policy's backoff with jitter (retry_policy.hpp,
// shared with the Backend API client). The queue retries without limit:
// max_attempts is not consulted.
std::chrono::milliseconds writeback_delay(const RetryPolicy& policy, int attempts,
                                          std::chrono::milliseconds retry_after, double jitter);

// A body fit to be stored as `<prefix>jwks`: a JSON object whose "keys" is
// a non-empty array of objects. Anything else (an error page, truncated JSON, an
// empty answer) is refused, and the set already stored stays.
bool is_usable_jwks(std::string_view body);

}  // namespace syncd
