// Finding the session token in a request: pure string logic, no nginx.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

namespace session::core {

// Longest token accepted. Opaque ids are far shorter; a Clerk JWT is 1-2 KiB.
inline constexpr std::size_t kMaxTokenLength = 4096;

// The value of the first cookie named `name` in one Cookie header value
// ("a=1; b=2"), per RFC 6265: names match exactly (case-sensitive), white
// space around pairs is ignored, and a value wrapped in double quotes is
// returned without them. Pairs without '=' are skipped. nullopt when absent.
std::optional<std::string_view> find_cookie(std::string_view header,
                                            std::string_view name) noexcept;

// The token of an Authorization header value "Bearer <token>" (RFC 6750):
// the scheme is case-insensitive, one or more spaces follow it, trailing
// white space is ignored. nullopt for another scheme, an empty token, or a
// token with inner white space.
std::optional<std::string_view> parse_bearer(std::string_view authorization) noexcept;

// Session tokens are opaque ids (sess_...) or JWTs: 1 to kMaxTokenLength
// characters from [A-Za-z0-9._~+/=-]. Anything else never reaches Redis.
bool is_valid_token(std::string_view token) noexcept;

}  // namespace session::core
