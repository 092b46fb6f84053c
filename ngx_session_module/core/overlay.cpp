// SHA256_Init/Update/Final are deprecated in OpenSSL 3 in favour of EVP,
// and used here on purpose: token_digest runs on every cached request, and
// EVP_DigestInit_ex costs an allocation, a provider lookup and a cleanse
// each time (half again the digest itself, measured with
// bench/cache_hit_profile.sh). The low-level calls are the same SHA-256
// (with the CPU's SHA extensions where it has them), on the stack.
#define OPENSSL_SUPPRESS_DEPRECATED

#include "core/overlay.hpp"

#include <openssl/sha.h>

namespace session::core {
namespace {

constexpr std::string_view kOrgPrefix = "org:";

std::string_view without_org_prefix(std::string_view role) noexcept {
    if (role.substr(0, kOrgPrefix.size()) == kOrgPrefix) role.remove_prefix(kOrgPrefix.size());
    return role;
}

bool has_word(std::string_view words, std::string_view word) noexcept {
    if (word.empty()) return false;
    while (!words.empty()) {
        const std::size_t space = words.find(' ');
        if (words.substr(0, space) == word) return true;
        if (space == std::string_view::npos) break;
        words.remove_prefix(space + 1);
    }
    return false;
}

}  // namespace

bool session_hash_absent(const LookupRecord& record) noexcept {
    for (const auto& field : record.session) {
        if (field.has_value()) return false;
    }
    return true;
}

Outcome evaluate_overlay(const LookupRecord& overlay, std::string_view sub, JwtSessionMode mode,
                         std::int64_t now_ms) noexcept {
    // Values with control bytes would reach headers raw: the record is not
    // trusted at all (see evaluate in record.cpp).
    if (!find_control_byte_field(overlay).empty()) return Outcome::invalid;

    const auto user_status = overlay.get(UserField::status);
    // Anything but absent or active refuses: a status this code does not know
    // (suspended, a typo) must not let a user through.
    if (user_status.has_value() && *user_status != "active") return Outcome::revoked;

    if (session_hash_absent(overlay)) {
        // The session.created webhook may not have arrived yet (optional), or
        // every session must pass through a writer first (required).
        return mode == JwtSessionMode::required ? Outcome::invalid : Outcome::ok;
    }
    const auto status = overlay.get(SessionField::status);
    if (status.has_value() && *status != "active") return Outcome::revoked;
    // A tombstone has a status and nothing else; a live hash names its user.
    const auto user_id = overlay.get(SessionField::user_id);
    if (user_id.has_value() && *user_id != sub) return Outcome::revoked;

    const auto expires_at = overlay.get(SessionField::expires_at);
    if (!expires_at.has_value()) {
        return mode == JwtSessionMode::required ? Outcome::invalid : Outcome::ok;
    }
    const auto expires_ms = parse_int64(*expires_at);
    if (!expires_ms.has_value()) return Outcome::invalid;
    if (*expires_ms <= now_ms) return Outcome::expired;
    return Outcome::ok;
}

void fill_identity_from_claims(const SessionClaims& claims, LookupRecord& record) noexcept {
    if (!record.user_missing()) return;
    if (!claims.role.empty()) {
        record.user[static_cast<std::size_t>(UserField::role)] = claims.role;
    }
    if (!claims.roles.empty()) {
        record.user[static_cast<std::size_t>(UserField::roles)] = claims.roles;
    }
}

bool org_policy_allows(const SessionClaims& claims, const OrgPolicy& policy) noexcept {
    if (policy.role_count > 0) {
        const std::string_view held = without_org_prefix(claims.org_role);
        bool any = false;
        for (std::size_t i = 0; i < policy.role_count && !any; ++i) {
            any = !held.empty() && without_org_prefix(policy.roles[i]) == held;
        }
        if (!any) return false;
    }
    if (policy.permission_count > 0) {
        bool any = false;
        for (std::size_t i = 0; i < policy.permission_count && !any; ++i) {
            any = has_word(claims.org_permissions, policy.permissions[i]);
        }
        if (!any) return false;
    }
    return true;
}

bool token_digest(const std::array<unsigned char, 32>& verifier, std::string_view token,
                  std::array<unsigned char, 32>& out) noexcept {
    // Not cleansed afterwards: the key it absorbs stays in this process's
    // memory anyway (the zone's copy), and the token is in the request.
    SHA256_CTX ctx;
    return SHA256_Init(&ctx) == 1 && SHA256_Update(&ctx, verifier.data(), verifier.size()) == 1 &&
           SHA256_Update(&ctx, token.data(), token.size()) == 1 &&
           SHA256_Final(out.data(), &ctx) == 1;
}

}  // namespace session::core
