// What Redis should hold for a user or a session, computed from the rows in
// PostgreSQL (docs/redis-contract.md). Pure logic: the Redis client applies
// the result; reconcile compares it with what Redis has.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace syncd {

// A deleted user's tombstone outlives every session: at least this long, and
// at least a day past the user's latest session expiry.
inline constexpr std::int64_t kTombstoneMinTtlSeconds = 30LL * 24 * 3600;
inline constexpr std::int64_t kTombstoneMarginSeconds = 24LL * 3600;

// An ended session's tombstone (status and token_type only) lives this long
// from when it is written, and is written while the session ended less than
// this long ago. The module's JWT mode lets a signature-verified token
// through when the session hash is missing, so the tombstone must outlast
// every token issued before the end: Clerk's 60 s lifetime plus the
// module's leeway, at least 2 minutes.
inline constexpr std::int64_t kSessionTombstoneTtlSeconds = 10LL * 60;

// token_type of every session hash syncd writes: the identity provider's
// session id is named in its JWTs' sid claim, so it is no credential.
inline constexpr const char* kSessionTokenType = "jwt";

enum class UserStatus { unknown, active, banned, deleted };

const char* user_status_name(UserStatus s) noexcept;

struct UserState {
    std::string clerk_id;
    std::string db_id;
    std::optional<std::string> email;
    std::string role;
    UserStatus status = UserStatus::active;
    // (organization id, membership role) of every live membership. The id,
    // never the slug: a slug is renamed and then free for anyone to take.
    std::vector<std::pair<std::string, std::string>> memberships;
    std::int64_t latest_session_expiry_ms = 0;
};

struct SessionState {
    std::string id;
    std::string clerk_user_id;
    std::string status;
    std::int64_t expires_at_ms = 0;
    std::optional<std::int64_t> last_active_at_ms;
    std::optional<std::int64_t> abandon_at_ms;  // Clerk drops it then, silently
    std::int64_t updated_at_ms = 0;             // the row's last change (when it ended)
    UserStatus user_status = UserStatus::unknown;
    std::int64_t user_updated_at_ms = 0;  // the user row's (when banned or deleted)
    // The user's row, whose fields a live session hash carries (contract
    // version 2); nullopt while PostgreSQL has none.
    std::optional<UserState> user;
};

// One key's desired state: absent, or a hash with exactly these fields (a
// set with exactly these members) and either no expiry, an absolute expiry,
// or a relative TTL.
struct KeyState {
    std::string key;
    bool present = false;
    std::vector<std::pair<std::string, std::string>> fields;
    // A SET (user_sessions:) rather than a hash: `members`, not `fields`.
    bool is_set = false;
    std::vector<std::string> members;
    std::optional<std::int64_t> expire_at_ms;  // PEXPIREAT
    std::optional<std::int64_t> ttl_seconds;   // EXPIRE
    // A session key: the module moves last_active_at forward (sliding
    // expiry), so the greater of the stored and the projected value is kept.
    bool keep_newer_last_active = false;
    // Present, but only a status: a session that no token passes, or a
    // deleted user.
    bool tombstone = false;
};

std::string user_key(const std::string& prefix, const std::string& clerk_user_id);
std::string session_key(const std::string& prefix, const std::string& session_id);
std::string revocation_channel(const std::string& prefix);
// <prefix>user_sessions:<user id> (contract version 2).
std::string user_sessions_key(const std::string& prefix, const std::string& clerk_user_id);

// Contract version 2: the fields of the user's hash that every live session
// hash also carries, so that an opaque check reads one key. user_status is
// always there ("active" for a user without a row): its presence tells the
// reader that the copy is. role, roles, db_id and email when the user has
// them. `user` is nullptr when PostgreSQL has no row for the user.
using Fields = std::vector<std::pair<std::string, std::string>>;
Fields session_user_fields(const UserState* user);
// Every field name session_user_fields can write: a rewrite of the copy
// deletes them all first, so a field the user lost (email) goes too.
inline constexpr const char* kSessionUserFieldNames[] = {"user_status", "role", "roles", "db_id",
                                                         "email"};

// "<role> <organization id>/<membership role> ..." in membership order. A
// membership whose organization id or role is not a role word
// (is_valid_role_word), or whose id holds a '/', is left out.
std::string roles_field(const std::string& role,
                        const std::vector<std::pair<std::string, std::string>>& memberships);

KeyState project_user(const UserState& user, const std::string& prefix, std::int64_t now_ms);

// The full hash while the session is active, unexpired, not past abandon_at
// and its user neither banned nor deleted, with its user's fields
// (session_user_fields of `session.user`); with `idle_timeout_seconds` > 0
// (Clerk's inactivity timeout, SYNCD_SESSION_IDLE_TIMEOUT) it carries
// idle_timeout, and its expires_at and expiry are capped at abandon_at.
// Otherwise a tombstone (status, token_type) while tokens issued before the
// end may still verify: for kSessionTombstoneTtlSeconds after a final status,
// abandon_at (status abandoned) or the user's ban or deletion, until expiry
// for a status that may still become active (pending). Else absent.
KeyState project_session(const SessionState& session, const std::string& prefix,
                         std::int64_t now_ms, std::int64_t idle_timeout_seconds);

// The user's set (contract version 2): the ids of `sessions` (the user's
// rows) whose projection is a live hash, expiring with the latest of them;
// absent when there is none. Tombstones are not in it, nor sessions whose
// user has no row yet (see session_set_change).
KeyState project_session_set(const std::string& clerk_user_id,
                             const std::vector<SessionState>& sessions, const std::string& prefix,
                             std::int64_t now_ms, std::int64_t idle_timeout_seconds);

// What projecting one session (`projected`, from project_session) does to
// its user's set: adds it (live hash) or removes it. nullopt for a session
// whose user has no row yet: that user's projection writes the whole set
// when the row arrives.
struct SessionSetChange {
    std::string key;  // the user's set
    std::string session_id;
    bool add = false;
    std::int64_t expire_at_ms = 0;  // with add: the set lives at least this long
};
std::optional<SessionSetChange> session_set_change(const SessionState& session,
                                                   const KeyState& projected,
                                                   const std::string& prefix);

// The revocation message for the channel: "session <id>" or "user <id>".
std::string revocation_message(const char* kind, const std::string& id);

}  // namespace syncd
