// Internal to the JWT code (jwt.cpp); the module uses jwt.hpp. The claims of
// a verified session token that need more than a lookup: the role at the
// configured path, the active organization as Clerk's SDK presents it (v2
// `o` and `fea`, or v1 org_* claims), and the scalars for
// $session_claim_<name>.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/jwt_json.hpp"

namespace session::core::jwt_detail {

// Buffers the results are built in, reused from one token to the next (a
// part of the per-thread workspace): no allocation once warm.
struct ClaimsScratch {
    std::string scalars;
    std::string roles;
    std::string org_role;
    std::string org_permissions;
    std::string binary;  // scratch for the fpm bit strings
    std::vector<std::string_view> permission_names;
    std::string permission;

    // Empties what the results are read from.
    void clear() noexcept {
        scalars.clear();
        roles.clear();
        org_role.clear();
        org_permissions.clear();
    }
};

// The payload members the organization is read from.
struct OrgMembers {
    std::optional<element> v, o, fea, org_id, org_role, org_slug, org_permissions;
};

// The active organization; views into the payload or the scratch.
struct OrgClaims {
    std::string_view id;
    std::string_view slug;
    std::string_view role;
    std::string_view permissions;
};

// The role at `role_claim` (a dotted path, e.g. metadata.role), as
// SessionClaims describes role and roles; untouched when absent.
void read_role(object root, std::string_view role_claim, ClaimsScratch& scratch,
               std::string_view& role, std::string_view& roles);

OrgClaims read_org(const OrgMembers& members, ClaimsScratch& scratch);

// Every top-level scalar claim of `root`, appended to `blob` (see
// SessionClaims::scalars).
void collect_scalars(object root, std::string& blob);

}  // namespace session::core::jwt_detail
