// JWT mode after the signature: Redis as the revocation and identity overlay
// (sess:<sid>, user:<sub>), the organization gates, and the cache key of a
// verified token. Pure logic: no nginx.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/jwt.hpp"
#include "core/record.hpp"

namespace session::core {

// session_jwt_session: how Redis is consulted for a verified token.
enum class JwtSessionMode {
    off,       // the token alone decides; Redis is not asked (no revocation)
    optional,  // a session or user that is not active refuses; none at all passes
    required,  // the session hash must exist and be active
};

// The verdict on the overlay read for a verified token whose subject is
// `sub` (mode optional or required), at `now_ms`:
// - invalid: a field of either hash holds a control byte
//   (find_control_byte_field);
// - revoked: the session hash has a status other than active, names another
//   user than `sub`, or the user hash has a status other than active;
// - expired: the session hash's expires_at has passed;
// - invalid: required mode and no session hash (or one without expires_at);
// - ok otherwise. Roles and organization gates are the caller's next step.
Outcome evaluate_overlay(const LookupRecord& overlay, std::string_view sub, JwtSessionMode mode,
                         std::int64_t now_ms) noexcept;

// True when the session hash is absent (none of its fields came back).
bool session_hash_absent(const LookupRecord& record) noexcept;

// Where the identity comes from when user:<sub> does not exist: the role
// claim. Sets record.user's role and roles to the claims' (views into the
// claims' buffer); leaves the record alone when the user hash exists.
void fill_identity_from_claims(const SessionClaims& claims, LookupRecord& record) noexcept;

// What a location asks of the active organization.
struct OrgPolicy {
    const std::string_view* roles = nullptr;  // any one passes; without "org:"
    std::size_t role_count = 0;
    const std::string_view* permissions = nullptr;  // any one passes
    std::size_t permission_count = 0;
};

// True when the claims satisfy both gates that are set (an empty gate
// passes). A role gate matches the organization role with or without the
// "org:" prefix on either side; a permission gate matches one of the words
// of org_permissions exactly.
bool org_policy_allows(const SessionClaims& claims, const OrgPolicy& policy) noexcept;

// The cache key of a verified token: SHA-256 over the verifier's
// fingerprint (its keys and role claim) and the token's signature segment
// (see jwt_access.cpp), so that the token is never stored and a verdict is
// reused only by the same verifier. False (do not cache) if OpenSSL fails.
bool token_digest(const std::array<unsigned char, 32>& verifier, std::string_view token,
                  std::array<unsigned char, 32>& out) noexcept;

}  // namespace session::core
