// better-auth's sessions (https://better-auth.com, checked against 1.7.25):
// its signed session cookie and the JSON it keeps in a Redis
// `secondaryStorage`. Pure logic: OpenSSL for the HMAC, simdjson for the
// JSON, no nginx. The formats are better-auth's, not ours (see
// docs/redis-contract.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/record.hpp"

namespace session::core {

// better-call's signCookieValue: `<value>.<base64 HMAC-SHA256>`, the
// signature in standard base64 with padding (44 characters for 32 bytes).
inline constexpr std::size_t kBetterAuthSignatureLength = 44;

// Larger JSON is not a session better-auth wrote; refused before parsing.
inline constexpr std::size_t kMaxBetterAuthRecordSize = 64 * 1024;

// A secret longer than this is refused by the directive (better-auth's are
// 32 to 64 characters).
inline constexpr std::size_t kMaxBetterAuthSecretLength = 1024;

struct SignedCookie {
    std::string_view token;      // what the HMAC covers: the session token
    std::string_view signature;  // base64, kBetterAuthSignatureLength characters
};

// Splits a cookie value, already percent-decoded, as better-call's
// getSignedCookie does: at the last '.', with a signature of exactly 44
// characters ending in '='. The token must be a valid token (is_valid_token):
// it becomes a Redis key. nullopt otherwise.
std::optional<SignedCookie> split_signed_cookie(std::string_view value) noexcept;

// True when `signature` is the base64 of HMAC-SHA256(secret, token).
// Compared in constant time (CRYPTO_memcmp) over the encoded form, which
// is canonical: a signature that decodes to the same bytes with other
// padding bits is refused (better-auth never writes one).
bool signature_matches(std::string_view token, std::string_view signature,
                       std::string_view secret) noexcept;

// The signature of `token` under `secret`, as better-auth writes it (for
// tests and the benchmark's seeding). Empty if OpenSSL fails.
std::string sign_token(std::string_view token, std::string_view secret);

// What the module takes from one `<token>` key: better-auth's
// `{"session": {...}, "user": {...}}`.
struct BetterAuthSession {
    std::string session_id;
    std::string user_id;
    std::string email;          // empty when absent or null
    std::string roles;          // the role field's words, space-separated
    std::string expires_at_ms;  // Unix ms, decimal: the record's expires_at
    bool banned = false;
};

enum class BetterAuthDecode {
    ok,
    malformed,  // not JSON, not better-auth's shape, or a field of the wrong type
};

// Parses the stored JSON of `token`. Required: session.id, session.userId
// and user.id (strings, the two user ids equal), session.expiresAt (an ISO
// 8601 UTC time as Date.toJSON writes it); session.token, when present,
// must be `token`. Optional: user.email, user.role (a string of roles
// separated by commas and/or spaces), user.banned (a boolean). Strings may
// hold control bytes here: the verdict refuses them (see to_lookup_record).
BetterAuthDecode decode_better_auth(std::string_view json, std::string_view token,
                                    BetterAuthSession& out) noexcept;

// The session as the module's record, so that the opaque check's verdict,
// cache, roles and variables apply unchanged: user_id, expires_at; the
// user's role (the first word), roles, db_id (better-auth's user id is the
// application's own), email, and status "banned" or "active". Views into
// `session`.
LookupRecord to_lookup_record(const BetterAuthSession& session) noexcept;

// "2026-11-30T14:10:09.123Z" (Date.prototype.toISOString, the only form
// JSON.stringify writes for a Date) as Unix ms; a fraction of any length
// (its milliseconds count), no offset other than Z, years 1970-9999.
std::optional<std::int64_t> parse_iso8601_ms(std::string_view text) noexcept;

}  // namespace session::core
