// Clerk's handshake for page navigations, as its backend SDK does it
// (packages/backend/src/tokens/handshake.ts and request.ts): when a browser
// loading a page carries a session cookie that cannot be trusted as it is,
// send it to the Frontend API, which sends it back with fresh cookies in a
// signed handshake token. Pure logic: no nginx.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/jwt.hpp"

namespace session::core {

inline constexpr std::string_view kSessionCookie = "__session";
inline constexpr std::string_view kClientUatCookie = "__client_uat";
inline constexpr std::string_view kHandshakeParam = "__clerk_handshake";  // cookie or query
inline constexpr std::string_view kHandshakeHelpParam = "__clerk_help";
inline constexpr std::string_view kRedirectCountCookie = "__clerk_redirect_count";
// At this many handshake redirects in a row the SDK stops redirecting.
inline constexpr int kMaxHandshakeRedirects = 3;

// A document load, which a handshake can help: Sec-Fetch-Dest `document` or
// `iframe`, or no Sec-Fetch-Dest and an Accept that starts with text/html.
// The caller also requires GET and a cookie-borne token source.
bool handshake_eligible(std::optional<std::string_view> sec_fetch_dest,
                        std::optional<std::string_view> accept) noexcept;

// What the request carries, for the decision.
struct HandshakeInput {
    bool has_session_cookie = false;             // __session present (any value)
    std::optional<std::string_view> client_uat;  // the __client_uat cookie, as sent
    // The session cookie's verification: none when it verified and passed
    // check_claims; its JwtError otherwise. Only meaningful with a cookie.
    JwtError token_error = JwtError::none;
    bool token_has_iat = false;
    std::int64_t token_iat = 0;  // seconds
};

// The SDK's reason (its __clerk_hs_reason value) for a handshake, or nullopt
// when none is due, checked in the order of the SDK's request.ts: no
// __session but a non-zero __client_uat; __session but __client_uat missing
// or 0 (a __client_uat that is not plain digits counts as 0); a verified
// token (none, expired, not_yet_valid, issued_in_future or pending) issued
// before __client_uat; the token expired, not yet valid, or issued in the
// future. Any other refusal (bad signature, wrong issuer...) is not a
// handshake case. The view points to a static string.
std::optional<std::string_view> handshake_reason(const HandshakeInput& input) noexcept;

// <frontend_api>/v1/client/handshake?redirect_url=...&... with every value
// percent-encoded: redirect_url, __clerk_api_version, suffixed_cookies=false,
// __clerk_hs_reason, format=token (the token format: the result comes back
// signed, so nginx needs no network call to read it). `frontend_api` is an
// absolute http(s) URL without a trailing slash.
std::string handshake_url(std::string_view frontend_api, std::string_view redirect_url,
                          std::string_view reason);

// The redirect-loop counter as sent (absent or garbage: 0).
int redirect_count(std::optional<std::string_view> cookie_value) noexcept;

// The Set-Cookie value that records one more handshake redirect (short-lived,
// HttpOnly, SameSite=Lax, Max-Age=2, as the SDK sets it). `count` is the
// value the cookie will hold, i.e. redirect_count(...) + 1; kept in 0..99.
std::string redirect_count_cookie(int count);

// The cookie name a Set-Cookie directive sets ("name=value; attrs"): before
// the first '=' of the part before the first ';', without surrounding spaces
// and tabs. Empty when that part has no '='.
std::string_view set_cookie_name(std::string_view directive) noexcept;

// A directive a handshake may set: one of the cookies Clerk's SDK names
// (__session, __client_uat, __refresh, __clerk_db_jwt, __clerk_handshake,
// __clerk_handshake_nonce, __clerk_redirect_count) or its suffixed variant
// `<name>_<suffix>` (suffix of base64url characters), in a directive free of
// control characters (CR, LF, NUL, TAB...). Anything else makes the module
// refuse the whole handshake.
bool is_clerk_cookie_directive(std::string_view directive) noexcept;

// `uri` (path and query, as requested) without the __clerk_handshake,
// __clerk_help and __clerk_handshake_nonce query parameters (with or without
// a value; names compared as sent, not percent-decoded); the rest keeps its
// order and encoding, and the '?' goes when nothing is left.
std::string without_handshake_params(std::string_view uri);

}  // namespace session::core
