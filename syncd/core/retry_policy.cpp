#include "core/retry_policy.hpp"

#include <time.h>

#include <algorithm>
#include <cctype>
#include <string>

namespace syncd {

bool is_retryable_status(long status) noexcept {
    switch (status) {
        case 408:
        case 425:
        case 429:
        case 500:
        case 502:
        case 503:
        case 504:
            return true;
        default:
            return false;
    }
}

std::optional<std::chrono::milliseconds> parse_retry_after(
    std::string_view value, std::chrono::system_clock::time_point now) {
    auto b = value.find_first_not_of(" \t");
    if (b == std::string_view::npos) return std::nullopt;
    value = value.substr(b, value.find_last_not_of(" \t") - b + 1);
    if (std::all_of(value.begin(), value.end(),
                    [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
        // Delta-seconds; anything longer than ten digits is beyond any cap.
        if (value.size() > 10) return std::chrono::milliseconds(std::chrono::hours(24 * 365));
        return std::chrono::milliseconds(std::stoll(std::string(value)) * 1000);
    }
    // HTTP-date: IMF-fixdate, then the two obsolete forms recipients must
    // accept. strptime in the C locale (the month and day names are
    // English); the whole value must be consumed.
    const std::string text(value);
    static constexpr const char* kFormats[] = {"%a, %d %b %Y %H:%M:%S GMT",
                                               "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"};
    for (const char* format : kFormats) {
        struct tm tm {};
        const char* end = strptime(text.c_str(), format, &tm);
        if (!end || *end != '\0') continue;
        time_t at = timegm(&tm);
        if (at == static_cast<time_t>(-1)) continue;
        auto when = std::chrono::system_clock::from_time_t(at);
        if (when <= now) return std::chrono::milliseconds(0);
        // Rounded up: the date has whole seconds, and coming back a
        // fraction early is coming back early.
        return std::chrono::ceil<std::chrono::milliseconds>(when - now);
    }
    return std::nullopt;
}

std::chrono::milliseconds backoff_delay(const RetryPolicy& policy, int attempt, double jitter) {
    using std::chrono::milliseconds;
    jitter = std::clamp(jitter, 0.0, 1.0);
    long long d = std::max<long long>(policy.base.count(), 1);
    const long long cap = std::max<long long>(policy.cap.count(), 1);
    for (int i = 1; i < attempt && d < cap; ++i) d *= 2;
    d = std::min(d, cap);
    long long half = d / 2;
    return milliseconds(half + static_cast<long long>(static_cast<double>(d - half) * jitter));
}

std::optional<std::chrono::milliseconds> retry_delay(
    const RetryPolicy& policy, int attempts_done, long status,
    std::optional<std::chrono::milliseconds> retry_after, double jitter) {
    if (attempts_done >= policy.max_attempts) return std::nullopt;
    if (status != 0 && !is_retryable_status(status)) return std::nullopt;
    if (retry_after) {
        return std::min(std::max(*retry_after, std::chrono::milliseconds(0)),
                        policy.retry_after_cap);
    }
    return backoff_delay(policy, attempts_done, jitter);
}

}  // namespace syncd
