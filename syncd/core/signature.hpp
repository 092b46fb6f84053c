// Standard Webhooks (Svix) signature verification: HMAC-SHA256 over
// "{id}.{timestamp}.{body}", base64, "v1," entries, +-300 s tolerance.
// Pure logic over OpenSSL; the clock is a parameter.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace syncd {

inline constexpr std::int64_t kTimestampToleranceSeconds = 300;

// The HMAC keys: raw bytes decoded from "whsec_<base64>" (or bare base64).
using SecretKeys = std::vector<std::string>;

// Decodes a space-separated list of secrets. Throws ConfigError naming
// `key` and the entry's position (never its value) when an entry is empty
// or not base64, or when the list is empty.
SecretKeys parse_secrets(const std::string& key, std::string_view list);

struct WebhookHeaders {
    std::optional<std::string_view> id;
    std::optional<std::string_view> timestamp;
    std::optional<std::string_view> signature;
};

enum class Verdict {
    ok,
    missing_header,
    bad_timestamp,  // not a non-negative decimal number of seconds
    too_old,
    too_new,
    bad_signature,  // no v1 entry matches any key
};

const char* verdict_name(Verdict v) noexcept;

// Checks the headers in the order the spec asks: presence, timestamp
// (before any HMAC work), then every v1 entry against every key in constant
// time. `now` is Unix time in seconds.
Verdict verify_signature(const SecretKeys& keys, const WebhookHeaders& headers,
                         std::string_view body, std::int64_t now);

// "v1,<base64 HMAC>" for one key: what a sender puts in svix-signature.
std::string sign_payload(const std::string& key, std::string_view id, std::string_view timestamp,
                         std::string_view body);

// Standard base64 with padding; nullopt when `in` is not exactly that.
std::optional<std::string> base64_decode(std::string_view in);
std::string base64_encode(std::string_view in);

}  // namespace syncd
