// `session_jwt_keys redis`: the pure part of the key set read from Redis
// (docs/redis-contract.md, `<prefix>jwks`). Parsing, combining with the
// keys of files, and when a token of an unknown kid may ask Redis again.
// No nginx; the nginx side is nginx/jwt_key_store.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/jwt.hpp"

namespace session::core {

// A JWKS of Clerk's is about 1 KiB per key; anything far larger is not one
// (and would not fit the shared zone twice).
inline constexpr std::size_t kMaxRedisJwksLength = 64 * 1024;

// A worker reads <prefix>jwks for a token of an unknown kid at most this
// often: a flood of made-up kids costs one read per interval per worker.
inline constexpr std::int64_t kUnknownKidReadIntervalMs = 10000;

// The STRING at <prefix>jwks: a JWKS document (or a single JWK), RSA
// signing keys only, as JwtKeys::add parses a JWKS file. False, with
// `error` naming the problem (never key material), when it is empty, larger
// than kMaxRedisJwksLength, not JSON, or holds no usable key.
bool parse_redis_jwks(std::string_view text, JwtKeys& out, std::string& error);

// The keys a location verifies with: its files' (may be null), then the
// Redis set's; a Redis key whose kid a file already has is left out.
JwtKeys combine_keys(const JwtKeys* files, const JwtKeys& redis);

// True when some key has no kid (a PEM key): a token whose kid no key has is
// then tried with it, and fails as `signature` rather than `unknown_key`.
bool has_kidless_key(const JwtKeys& keys) noexcept;

// Whether a verification failure may mean "signed by a key not read yet":
// unknown_key, or signature when a kid-less key stood in for the kid.
bool may_be_unknown_kid(JwtError error, bool kidless_present) noexcept;

// One worker's reads of <prefix>jwks: at most one in flight, shared by
// every request that waits for it, and for unknown kids at most one per
// kUnknownKidReadIntervalMs since the last read began (whatever caused it).
class KeyReadGate {
  public:
    enum class Decision {
        refuse,  // read recently: the kid is unknown, refuse now
        join,    // a read is in flight: wait for it
        read,    // start a read (then call started()) and wait for it
    };

    Decision on_unknown_kid(std::int64_t now_ms) const noexcept {
        if (in_flight_) return Decision::join;
        if (has_read_ && now_ms - last_read_ms_ < kUnknownKidReadIntervalMs) {
            return Decision::refuse;
        }
        return Decision::read;
    }

    bool in_flight() const noexcept { return in_flight_; }

    void started(std::int64_t now_ms) noexcept {
        in_flight_ = true;
        has_read_ = true;
        last_read_ms_ = now_ms;
    }

    void finished() noexcept { in_flight_ = false; }

  private:
    bool in_flight_ = false;
    bool has_read_ = false;
    std::int64_t last_read_ms_ = 0;
};

}  // namespace session::core
