// What Redis holds for a session and its user (docs/redis-contract.md), and
// the verdict on it. Pure logic: no nginx; hiredis only for its reply type.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

struct redisReply;

namespace session::core {

// The session's own fields in <prefix>sess:<id>, in the order they are read.
enum class SessionField : std::size_t {
    user_id,
    expires_at,
    status,
    idle_timeout,
    last_active_at,
    token_type,  // absent or "opaque": the id is the credential; "jwt": it is not
};
inline constexpr std::size_t kSessionFieldCount = 6;

// The user's fields: read from <prefix>user:<user id> in this order, or
// from their copies in the session hash (kSessionReadFieldNames).
enum class UserField : std::size_t {
    role,
    roles,
    db_id,
    email,
    status,
};
inline constexpr std::size_t kUserFieldCount = 5;

// The field names, in the order above: what the JWT overlay's two HMGETs,
// and the opaque check's user read, ask for.
inline constexpr std::array<std::string_view, kSessionFieldCount> kSessionFieldNames = {
    "user_id", "expires_at", "status", "idle_timeout", "last_active_at", "token_type"};
inline constexpr std::array<std::string_view, kUserFieldCount> kUserFieldNames = {
    "role", "roles", "db_id", "email", "status"};

// The opaque check's one-key read (contract version 2): the session's own
// fields, then the copies of its user's fields that a version 2 writer keeps
// in every session hash of the user. `user_status` (the user's `status`)
// marks a hash that carries them; without it the user hash is read as well.
inline constexpr std::size_t kSessionReadFieldCount = kSessionFieldCount + kUserFieldCount;
inline constexpr std::array<std::string_view, kSessionReadFieldCount> kSessionReadFieldNames = {
    "user_id",     "expires_at", "status", "idle_timeout", "last_active_at", "token_type",
    "user_status", "role",       "roles",  "db_id",        "email"};

// One lookup's answer. Non-owning: the views point into a reply or a buffer
// that outlives the record. nullopt is a field Redis did not have.
struct LookupRecord {
    std::array<std::optional<std::string_view>, kSessionFieldCount> session;
    std::array<std::optional<std::string_view>, kUserFieldCount> user;

    std::optional<std::string_view> get(SessionField f) const noexcept {
        return session[static_cast<std::size_t>(f)];
    }
    std::optional<std::string_view> get(UserField f) const noexcept {
        return user[static_cast<std::size_t>(f)];
    }
    // No user field was found (no user hash, or none of its fields).
    bool user_missing() const noexcept;
};

enum class DecodeStatus {
    ok,
    redis_error,  // an error reply (WRONGTYPE, OOM, NOPERM, ...)
    malformed,    // a reply of a shape HMGET never returns
};

// One plain HMGET's answer (the JWT overlay's two reads, the opaque check's
// user read): the session's fields (kSessionFieldNames) into out.session, or
// the user's (kUserFieldNames) into out.user. The views point into `reply`;
// the other half of `out` is left as it is.
DecodeStatus decode_session_hmget(const redisReply* reply, LookupRecord& out) noexcept;
DecodeStatus decode_user_hmget(const redisReply* reply, LookupRecord& out) noexcept;

// The opaque check's one-key read (HMGET of kSessionReadFieldNames): the
// session's fields into out.session and, when the hash has `user_status`,
// the user's copies into out.user with `user_copied` set. Without
// `user_status` the copies are ignored (out.user empty, `user_copied`
// false): such a hash was written by an application or a writer of contract
// version 1, and the user hash decides (needs_user_read). The views point
// into `reply`; on failure `out` is empty.
DecodeStatus decode_session_read(const redisReply* reply, LookupRecord& out,
                                 bool& user_copied) noexcept;

// For a session read without the user's copies: true when the session hash
// alone passes (a live session naming a user id), so that the user hash
// must be read to decide. False when it refuses by itself (absent,
// malformed, token_type, status, expired, a control byte): no user hash
// could let it through, and the check answers without a second read.
// (Reading it could at most turn `expired` into `revoked`, both a 401.)
bool needs_user_read(const LookupRecord& session_only, std::int64_t now_ms) noexcept;

// The check's outcome; also the values of $session_status.
enum class Outcome {
    ok,         // valid session, role (if required) held
    missing,    // no token in the request
    invalid,    // bad token syntax, or no such session (or a record without
                // user_id / a numeric expires_at, whose token_type says the
                // id is not a credential, or with a control byte in a field)
    expired,    // expires_at passed, or idle_timeout passed since last_active_at
    revoked,    // session or user status other than absent or active
    forbidden,  // valid session without any of the required roles
    error,      // Redis could not answer
    stale,      // ok, from a cache entry past its TTL while Redis could not answer
};
inline constexpr std::size_t kOutcomeCount = 8;

std::string_view outcome_name(Outcome outcome) noexcept;

// What the location asks of a session.
struct Policy {
    const std::string_view* required_roles = nullptr;  // any one passes
    std::size_t required_role_count = 0;
    std::int64_t touch_interval_ms = 0;  // 0: session_touch off
    // The record's fields are known to be free of control bytes (a cache
    // entry: the cache stores no other), so evaluate() need not look again.
    bool fields_checked = false;
};

struct Verdict {
    Outcome outcome = Outcome::invalid;
    // The session is valid and its last_active_at is missing or at least
    // touch_interval_ms old: the caller should update it.
    bool touch = false;
};

// The verdict on a record at `now_ms` (Unix ms), for a request that
// presented the session id itself as its token (the opaque check). Never
// returns missing, error or stale: those come from the caller.
Verdict evaluate(const LookupRecord& record, std::int64_t now_ms, const Policy& policy) noexcept;

// The name of the first field ("sess:<field>" or "user:<field>") holding a
// byte below 0x20 or 0x7f, or an empty view when every field is clean.
// "user:<field>" names the user's field whether it came from the user hash
// or from its copy in the session hash (contract version 2).
// Such a value would reach $session_user_* and from there a request header
// raw (CR/LF split it); evaluate() and evaluate_overlay() refuse the record
// as `invalid`, and the caller uses this to say which field, never its value.
std::string_view find_control_byte_field(const LookupRecord& record) noexcept;

// True when the user holds `role`: the user's `role` field, or one of the
// space-separated words of `roles`.
bool has_role(const LookupRecord& record, std::string_view role) noexcept;

// A non-negative decimal integer of at most 18 digits (no sign, no spaces).
std::optional<std::int64_t> parse_int64(std::string_view text) noexcept;

}  // namespace session::core
