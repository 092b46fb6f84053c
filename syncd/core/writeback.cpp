#include "core/writeback.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>

namespace syncd {

std::string writeback_body(const std::string& db_id, const std::string& role) {
    nlohmann::json metadata = {{"dbId", db_id}};
    if (!role.empty() && role != kDefaultRole) metadata["role"] = role;
    return nlohmann::json{{"public_metadata", metadata}}.dump();
}

std::string writeback_path(const std::string& clerk_user_id) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out = "/v1/users/";
    for (unsigned char c : clerk_user_id) {
        bool unreserved = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                          (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' || c == '~';
        if (unreserved) {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += kHex[c >> 4];
            out += kHex[c & 0x0f];
        }
    }
    return out + "/metadata";
}

WritebackStep writeback_step(long status) {
    if (status >= 200 && status < 300) return WritebackStep::done;
    if (status == 404) return WritebackStep::drop;
    // 429, 5xx and transport failures pass; a 401/403 (a wrong or revoked
    // secret key) or a 422 waits for the operator, the row kept and
    // visible in the queue's metrics rather than lost.
    return WritebackStep::retry;
}

std::chrono::milliseconds writeback_delay(const RetryPolicy& policy, int attempts,
                                          std::chrono::milliseconds retry_after, double jitter) {
    // Clerk asked for that long: no sooner (and no jitter: the server
    // spreads its clients itself).
    if (retry_after.count() > 0) return std::min(retry_after, policy.retry_after_cap);
    return backoff_delay(policy, std::max(attempts, 1), jitter);
}

bool is_usable_jwks(std::string_view body) {
    auto doc = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (!doc.is_object()) return false;  // a parse error is `discarded`, not an object
    auto keys = doc.find("keys");
    // An empty set would make every token fail: as bad as garbage.
    if (keys == doc.end() || !keys->is_array() || keys->empty()) return false;
    return std::all_of(keys->begin(), keys->end(), [](const auto& k) { return k.is_object(); });
}

}  // namespace syncd
