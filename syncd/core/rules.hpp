// The ordering rules: which incoming row version may overwrite the stored
// one. Delivery is unordered, so every decision compares the source's own
// updated_at (ms), and the irreversible states (a deleted user, an ended
// session, a deleted membership) are never undone.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace syncd {

enum class Decision {
    insert,  // no row yet
    update,  // the incoming version is newer
    stale,   // the stored version is as new or newer: nothing to do
    final,   // the stored row is in a final state (deleted, ended): nothing to do
};

const char* decision_name(Decision d) noexcept;

struct StoredUser {
    bool deleted = false;
    std::int64_t updated_at_ms = 0;
    std::string role;
    bool banned = false;
};

struct UserVerdict {
    Decision decision;
    bool revoke = false;   // role changed or user banned: readers must drop caches
    bool cascade = false;  // banned flag changed: the user's session keys change too
    // Banned by this version: the user's non-final sessions become revoked,
    // so that an unban later revives none of them (Clerk revokes them too).
    bool end_sessions = false;
};

// A newer version wins; on an equal updated_at the more restrictive state
// wins (a ban over an unban), so that the order of arrival of two versions
// that tie cannot unban a user.
UserVerdict decide_user(const std::optional<StoredUser>& stored, std::int64_t updated_at_ms,
                        std::string_view role, bool banned);

// Session statuses after which a session never becomes valid again.
bool is_final_session_status(std::string_view status);

struct StoredSession {
    std::string status;
    std::int64_t updated_at_ms = 0;
};

// A newer version wins; an equal one wins only when it ends the session; a
// final status is never replaced.
Decision decide_session(const std::optional<StoredSession>& stored, std::string_view status,
                        std::int64_t updated_at_ms);

struct StoredMembership {
    bool deleted = false;
    std::int64_t updated_at_ms = 0;
    std::string role;
};

struct MembershipVerdict {
    Decision decision;
    bool revoke = false;  // role changed or membership removed
};

MembershipVerdict decide_membership(const std::optional<StoredMembership>& stored,
                                    std::string_view role, bool deleted,
                                    std::int64_t updated_at_ms);

struct StoredOrganization {
    bool deleted = false;
    std::int64_t updated_at_ms = 0;
};

// A newer version wins; a deleted organization is final (a late create or
// update changes nothing).
Decision decide_organization(const std::optional<StoredOrganization>& stored,
                             std::int64_t updated_at_ms);

}  // namespace syncd
