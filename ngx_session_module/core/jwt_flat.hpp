// Internal to the JWT code (jwt.cpp, clerk_claims.cpp); the module uses
// jwt.hpp (decode_claims, SessionClaims::find_scalar). The flat claims: the
// one buffer a verified session token becomes, which the cache and the
// request pool hold and decode_claims reads back without copying.
#pragma once

#include <string>
#include <string_view>

#include "core/jwt.hpp"

namespace session::core::jwt_detail {

// Writes `claims` to `flat` (cleared first; no allocation once its capacity
// suffices). No view of `claims` may point into `flat`.
void encode_claims(const SessionClaims& claims, std::string& flat);

// Appends one entry to a scalars blob (SessionClaims::scalars): `name` is
// a claim name (is_claim_name), `value` free of control characters.
void put_scalar(std::string& blob, std::string_view name, std::string_view value);

}  // namespace session::core::jwt_detail
