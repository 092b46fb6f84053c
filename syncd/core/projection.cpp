#include "core/projection.hpp"

#include <algorithm>

#include "core/event.hpp"
#include "core/rules.hpp"

namespace syncd {

const char* user_status_name(UserStatus s) noexcept {
    switch (s) {
        case UserStatus::unknown:
            return "unknown";
        case UserStatus::active:
            return "active";
        case UserStatus::banned:
            return "banned";
        case UserStatus::deleted:
            return "deleted";
    }
    return "unknown";
}

std::string user_key(const std::string& prefix, const std::string& clerk_user_id) {
    return prefix + "user:" + clerk_user_id;
}

std::string session_key(const std::string& prefix, const std::string& session_id) {
    return prefix + "sess:" + session_id;
}

std::string revocation_channel(const std::string& prefix) {
    return prefix + "session:revocations";
}

std::string user_sessions_key(const std::string& prefix, const std::string& clerk_user_id) {
    return prefix + "user_sessions:" + clerk_user_id;
}

std::string roles_field(const std::string& role,
                        const std::vector<std::pair<std::string, std::string>>& memberships) {
    std::string out = role;
    for (const auto& [organization_id, member_role] : memberships) {
        // A space would split the entry into extra words (a bare "admin");
        // a '/' in the id would shift the boundary. Such a membership is
        // left out of the projection, never mangled into it.
        if (!is_valid_role_word(organization_id) ||
            organization_id.find('/') != std::string::npos || !is_valid_role_word(member_role)) {
            continue;
        }
        out += ' ';
        out += organization_id;
        out += '/';
        out += member_role;
    }
    return out;
}

KeyState project_user(const UserState& user, const std::string& prefix, std::int64_t now_ms) {
    KeyState k;
    k.key = user_key(prefix, user.clerk_id);
    k.present = true;
    if (user.status == UserStatus::deleted) {
        // A tombstone: the status only, no personal data.
        k.fields = {{"status", "deleted"}};
        k.tombstone = true;
        std::int64_t until_latest = (user.latest_session_expiry_ms - now_ms) / 1000;
        k.ttl_seconds = std::max(kTombstoneMinTtlSeconds, until_latest + kTombstoneMarginSeconds);
        return k;
    }
    k.fields.emplace_back("db_id", user.db_id);
    k.fields.emplace_back("role", user.role);
    k.fields.emplace_back("roles", roles_field(user.role, user.memberships));
    if (user.email) k.fields.emplace_back("email", *user.email);
    k.fields.emplace_back("status", user.status == UserStatus::banned ? "banned" : "active");
    return k;
}

Fields session_user_fields(const UserState* user) {
    Fields out;
    // A session hash exists only while its user is neither banned nor
    // deleted, so this is "active" in practice; the user hash's value is
    // copied all the same, so that the reader never sees two statuses.
    const bool known = user && user->status != UserStatus::unknown;
    out.emplace_back("user_status", known ? user_status_name(user->status) : "active");
    if (!known || user->status == UserStatus::deleted) return out;  // no personal data
    // The same fields, values and absences as project_user's hash.
    for (auto& f : project_user(*user, "", 0).fields) {
        if (f.first != "status") out.push_back(std::move(f));
    }
    return out;
}

KeyState project_session(const SessionState& session, const std::string& prefix,
                         std::int64_t now_ms, std::int64_t idle_timeout_seconds) {
    KeyState k;
    k.key = session_key(prefix, session.id);
    const bool user_ok =
        session.user_status != UserStatus::banned && session.user_status != UserStatus::deleted;
    const bool active = session.status == "active";
    // Clerk sends no webhook when it abandons an inactive session.
    const bool abandoned = active && session.abandon_at_ms && *session.abandon_at_ms <= now_ms;
    if (active && user_ok && !abandoned) {
        // Expired: nothing was revoked, and the key expired on its own.
        if (session.expires_at_ms <= now_ms) return k;
        // The module's sliding expiry sets the TTL from expires_at, so the
        // cap must be in the field too, not only in PEXPIREAT.
        std::int64_t until_ms = session.expires_at_ms;
        if (session.abandon_at_ms) until_ms = std::min(until_ms, *session.abandon_at_ms);
        k.present = true;
        k.fields.emplace_back("user_id", session.clerk_user_id);
        k.fields.emplace_back("expires_at", std::to_string(until_ms));
        if (session.last_active_at_ms) {
            k.fields.emplace_back("last_active_at", std::to_string(*session.last_active_at_ms));
        }
        if (idle_timeout_seconds > 0) {
            k.fields.emplace_back("idle_timeout", std::to_string(idle_timeout_seconds));
        }
        k.fields.emplace_back("token_type", kSessionTokenType);
        for (auto& f : session_user_fields(session.user ? &*session.user : nullptr)) {
            k.fields.push_back(std::move(f));
        }
        k.expire_at_ms = until_ms;
        k.keep_newer_last_active = true;
        return k;
    }

    constexpr std::int64_t kTombstoneMs = kSessionTombstoneTtlSeconds * 1000;
    if (!user_ok || abandoned || is_final_session_status(session.status)) {
        // Ended for good: when the session or (banned, deleted) its user last
        // changed, or when it was abandoned. Long enough ago, no token for it
        // verifies any more.
        std::int64_t ended_at_ms = abandoned ? *session.abandon_at_ms : session.updated_at_ms;
        if (!user_ok) ended_at_ms = std::max(ended_at_ms, session.user_updated_at_ms);
        if (now_ms - ended_at_ms >= kTombstoneMs) return k;
        k.ttl_seconds = kSessionTombstoneTtlSeconds;
    } else {
        // Not active yet (pending): it may still get tokens until it expires.
        if (session.expires_at_ms <= now_ms) return k;
        k.expire_at_ms = std::max(session.expires_at_ms, now_ms + kTombstoneMs);
    }
    k.present = true;
    k.tombstone = true;
    const char* status = !user_ok ? "revoked" : abandoned ? "abandoned" : nullptr;
    k.fields.emplace_back("status", !active ? session.status : status);
    k.fields.emplace_back("token_type", kSessionTokenType);
    return k;
}

KeyState project_session_set(const std::string& clerk_user_id,
                             const std::vector<SessionState>& sessions, const std::string& prefix,
                             std::int64_t now_ms, std::int64_t idle_timeout_seconds) {
    KeyState k;
    k.key = user_sessions_key(prefix, clerk_user_id);
    k.is_set = true;
    for (const auto& s : sessions) {
        // As session_set_change: the set is for users with a row.
        if (s.user_status == UserStatus::unknown) continue;
        KeyState projected = project_session(s, prefix, now_ms, idle_timeout_seconds);
        if (!projected.present || projected.tombstone || !projected.expire_at_ms) continue;
        k.members.push_back(s.id);
        // No shorter than the longest session: a user change must reach it.
        k.expire_at_ms = std::max(k.expire_at_ms.value_or(0), *projected.expire_at_ms);
    }
    std::sort(k.members.begin(), k.members.end());
    k.present = !k.members.empty();
    if (!k.present) k.expire_at_ms.reset();
    return k;
}

std::optional<SessionSetChange> session_set_change(const SessionState& session,
                                                   const KeyState& projected,
                                                   const std::string& prefix) {
    if (session.user_status == UserStatus::unknown) return std::nullopt;
    SessionSetChange c;
    c.key = user_sessions_key(prefix, session.clerk_user_id);
    c.session_id = session.id;
    c.add = projected.present && !projected.tombstone && projected.expire_at_ms.has_value();
    if (c.add) c.expire_at_ms = *projected.expire_at_ms;
    return c;
}

std::string revocation_message(const char* kind, const std::string& id) {
    return std::string(kind) + " " + id;
}

}  // namespace syncd
