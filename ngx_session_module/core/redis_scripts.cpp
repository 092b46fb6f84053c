#include "core/redis_scripts.hpp"

#include <openssl/evp.h>

namespace session::core {

// One key per script: the touch reads and writes only the session hash, so
// it runs on any topology, Redis Cluster included.
// Lua numbers are doubles: exact for millisecond timestamps (< 2^53).
// string.format('%d') keeps PEXPIRE's argument an integer in decimal form.
const std::string_view kTouchScript = R"lua(
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
if not now or not interval then
    return redis.error_reply('touch: bad now or interval')
end
if redis.call('EXISTS', KEYS[1]) == 0 then
    return 0
end
local fields = redis.call('HMGET', KEYS[1], 'expires_at', 'idle_timeout', 'last_active_at')
local last_active_at = tonumber(fields[3])
if last_active_at and now - last_active_at < interval then
    return 0
end
redis.call('HSET', KEYS[1], 'last_active_at', ARGV[1])
local idle_timeout = tonumber(fields[2])
if idle_timeout then
    local ttl_ms = idle_timeout * 1000
    local expires_at = tonumber(fields[1])
    if expires_at and expires_at - now < ttl_ms then
        ttl_ms = expires_at - now
    end
    -- A TTL <= 0 would delete the key: leave expiry of a dead session to its
    -- writer and to the reader's expires_at check.
    if ttl_ms >= 1 then
        redis.call('PEXPIRE', KEYS[1], string.format('%d', math.floor(ttl_ms)))
    end
end
return 1
)lua";

std::string script_sha1(std::string_view script) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    if (EVP_Digest(script.data(), script.size(), digest, &digest_len, EVP_sha1(), nullptr) != 1) {
        return {};  // EVALSHA of "" fails with NOSCRIPT; the caller falls back to EVAL
    }
    constexpr char kHex[] = "0123456789abcdef";
    std::string hex;
    hex.reserve(digest_len * 2);
    for (unsigned int i = 0; i < digest_len; ++i) {
        hex.push_back(kHex[digest[i] >> 4]);
        hex.push_back(kHex[digest[i] & 0x0F]);
    }
    return hex;
}

}  // namespace session::core
