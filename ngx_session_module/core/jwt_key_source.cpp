#include "core/jwt_key_source.hpp"

namespace session::core {

bool parse_redis_jwks(std::string_view text, JwtKeys& out, std::string& error) {
    if (text.size() > kMaxRedisJwksLength) {
        error = "larger than " + std::to_string(kMaxRedisJwksLength) + " bytes";
        return false;
    }
    std::size_t first = text.find_first_not_of(" \t\r\n");
    // The contract is JSON: PEM (which JwtKeys::add also reads) is refused.
    if (first == std::string_view::npos || text[first] != '{') {
        error = "not a JWKS (a JSON object)";
        return false;
    }
    JwtKeys keys;
    if (!keys.add(text, error)) {
        return false;
    }
    out = std::move(keys);
    return true;
}

JwtKeys combine_keys(const JwtKeys* files, const JwtKeys& redis) {
    JwtKeys combined;
    if (files != nullptr) combined.merge(*files);
    combined.merge(redis);
    return combined;
}

bool has_kidless_key(const JwtKeys& keys) noexcept {
    for (const auto& key : keys.keys()) {
        if (key.kid.empty()) return true;
    }
    return false;
}

bool may_be_unknown_kid(JwtError error, bool kidless_present) noexcept {
    return error == JwtError::unknown_key || (kidless_present && error == JwtError::signature);
}

}  // namespace session::core
