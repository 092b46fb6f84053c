#include "core/rules.hpp"

#include <array>

namespace syncd {

const char* decision_name(Decision d) noexcept {
    switch (d) {
        case Decision::insert:
            return "insert";
        case Decision::update:
            return "update";
        case Decision::stale:
            return "stale";
        case Decision::final:
            return "final";
    }
    return "unknown";
}

UserVerdict decide_user(const std::optional<StoredUser>& stored, std::int64_t updated_at_ms,
                        std::string_view role, bool banned) {
    if (!stored) return {Decision::insert, banned, banned, banned};
    if (stored->deleted) return {Decision::final};
    // Two versions with the same updated_at cannot be ordered: a ban and an
    // unban that tie resolve to the ban, whichever arrives second.
    bool ban_wins_tie = updated_at_ms == stored->updated_at_ms && banned && !stored->banned;
    if (updated_at_ms <= stored->updated_at_ms && !ban_wins_tie) return {Decision::stale};
    bool banned_changed = stored->banned != banned;
    bool revoke = stored->role != role || (banned && banned_changed);
    return {Decision::update, revoke, banned_changed, banned && banned_changed};
}

bool is_final_session_status(std::string_view status) {
    static constexpr std::array<std::string_view, 6> final_statuses = {
        "ended", "expired", "removed", "replaced", "revoked", "abandoned"};
    for (auto s : final_statuses) {
        if (status == s) return true;
    }
    return false;
}

Decision decide_session(const std::optional<StoredSession>& stored, std::string_view status,
                        std::int64_t updated_at_ms) {
    if (!stored) return Decision::insert;
    if (is_final_session_status(stored->status)) return Decision::final;
    if (updated_at_ms > stored->updated_at_ms) return Decision::update;
    if (updated_at_ms == stored->updated_at_ms && is_final_session_status(status)) {
        return Decision::update;
    }
    return Decision::stale;
}

MembershipVerdict decide_membership(const std::optional<StoredMembership>& stored,
                                    std::string_view role, bool deleted,
                                    std::int64_t updated_at_ms) {
    if (!stored) return {Decision::insert, deleted};
    if (stored->deleted) return {Decision::final};
    // A deletion is final whatever its updated_at: the membership is gone.
    if (deleted) return {Decision::update, true};
    if (updated_at_ms <= stored->updated_at_ms) return {Decision::stale};
    return {Decision::update, stored->role != role};
}

Decision decide_organization(const std::optional<StoredOrganization>& stored,
                             std::int64_t updated_at_ms) {
    if (!stored) return Decision::insert;
    if (stored->deleted) return Decision::final;
    if (updated_at_ms <= stored->updated_at_ms) return Decision::stale;
    return Decision::update;
}

}  // namespace syncd
