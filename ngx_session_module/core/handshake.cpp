// Facts from Clerk's backend SDK (clerk/javascript, packages/backend/src/),
// as of SUPPORTED_BAPI_VERSION 2025-11-10: tokens/handshake.ts,
// tokens/request.ts, tokens/authenticateContext.ts, tokens/authStatus.ts,
// tokens/cookie.ts, constants.ts. Where the module departs from it, the
// comment at the spot says so and why.
#include "core/handshake.hpp"

#include <array>

namespace session::core {
namespace {

// authStatus.ts AuthErrorReason values, sent as __clerk_hs_reason.
constexpr std::string_view kReasonClientUatWithoutSession = "client-uat-but-no-session-token";
constexpr std::string_view kReasonSessionWithoutClientUat = "session-token-but-no-client-uat";
constexpr std::string_view kReasonIatBeforeClientUat = "session-token-iat-before-client-uat";
constexpr std::string_view kReasonNotBefore = "session-token-nbf";
constexpr std::string_view kReasonIatInFuture = "session-token-iat-in-the-future";
// request.ts appends "-refresh-<why no refresh>" to session-token-expired.
// The SDK refreshes only with a suffixed __refresh_<suffix> cookie; the
// module reads unsuffixed cookies and never refreshes (a Backend API call),
// so its value is the SDK's for a GET without that cookie.
constexpr std::string_view kReasonExpired =
    "session-token-expired-refresh-non-eligible-no-refresh-cookie";

// constants.ts SUPPORTED_BAPI_VERSION: the handshake payload's format.
constexpr std::string_view kClerkApiVersion = "2025-11-10";

// The redirect-count cookie lives just long enough to span one handshake
// round trip (handshake.ts checkAndTrackRedirectLoop).
constexpr std::string_view kRedirectCountAttributes = "; SameSite=Lax; HttpOnly; Max-Age=2";

// Every cookie constants.ts names. A handshake that sets anything else was
// not written by Clerk's Frontend API for this module.
constexpr std::array<std::string_view, 7> kClerkCookieNames = {
    "__session",
    "__client_uat",
    "__refresh",
    "__clerk_db_jwt",
    "__clerk_handshake",
    "__clerk_handshake_nonce",
    "__clerk_redirect_count",
};

// Query parameters a handshake leaves on the returning URL. The nonce is
// dropped too: redeeming it needs the Backend API, which a worker never calls.
constexpr std::array<std::string_view, 3> kHandshakeQueryParams = {
    kHandshakeParam,
    kHandshakeHelpParam,
    "__clerk_handshake_nonce",
};

constexpr bool is_ascii_digit(char c) noexcept {
    return c >= '0' && c <= '9';
}

constexpr bool is_control(char c) noexcept {
    const auto byte = static_cast<unsigned char>(c);
    return byte < 0x20 || byte == 0x7f;
}

// RFC 3986 section 2.3.
constexpr bool is_unreserved(char c) noexcept {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_ascii_digit(c) || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

// getCookieSuffix (util/shared.ts) makes the suffix from base64url
// characters.
constexpr bool is_cookie_suffix_char(char c) noexcept {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_ascii_digit(c) || c == '-' ||
           c == '_';
}

// __client_uat as Unix seconds. Only plain digits count: the SDK's parseInt
// would also take "12abc" or "-5", which no Clerk cookie holds.
std::int64_t parse_client_uat(std::optional<std::string_view> value) noexcept {
    // 18 digits stay below INT64_MAX; a longer value is not a time anyway.
    if (!value || value->empty() || value->size() > 18) return 0;
    std::int64_t seconds = 0;
    for (char c : *value) {
        if (!is_ascii_digit(c)) return 0;
        seconds = seconds * 10 + (c - '0');
    }
    return seconds;
}

// A verified token whose iat can be trusted. The SDK compares iat with
// __client_uat on the decoded, unverified payload before verifying; the
// module trusts iat only once the signature (and the issuer and azp)
// verified, so a forged token cannot buy a redirect.
bool iat_is_trusted(JwtError error) noexcept {
    switch (error) {
        case JwtError::none:
        case JwtError::expired:
        case JwtError::not_yet_valid:
        case JwtError::issued_in_future:
        case JwtError::pending:
            return true;
        default:
            return false;
    }
}

std::string_view trim_cookie_whitespace(std::string_view text) noexcept {
    while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
    while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
    return text;
}

bool is_clerk_cookie_name(std::string_view name) noexcept {
    for (std::string_view base : kClerkCookieNames) {
        if (name.substr(0, base.size()) != base) continue;
        if (name.size() == base.size()) return true;
        // Suffixed variant (getSuffixedCookieName): <base>_<suffix>.
        std::string_view suffix = name.substr(base.size());
        if (suffix.size() < 2 || suffix.front() != '_') continue;
        suffix.remove_prefix(1);
        bool suffix_ok = true;
        for (char c : suffix) suffix_ok = suffix_ok && is_cookie_suffix_char(c);
        if (suffix_ok) return true;
    }
    return false;
}

bool is_handshake_query_param(std::string_view param) noexcept {
    const std::string_view name = param.substr(0, param.find('='));
    for (std::string_view removed : kHandshakeQueryParams) {
        if (name == removed) return true;
    }
    return false;
}

void append_percent_encoded(std::string& out, std::string_view value) {
    static constexpr char kHexDigits[] = "0123456789ABCDEF";
    for (char c : value) {
        if (is_unreserved(c)) {
            out += c;
        } else {
            const auto byte = static_cast<unsigned char>(c);
            out += '%';
            out += kHexDigits[byte >> 4];
            out += kHexDigits[byte & 0x0f];
        }
    }
}

void append_query_param(std::string& out, std::string_view name, std::string_view value) {
    out += out.back() == '?' ? "" : "&";
    out += name;
    out += '=';
    append_percent_encoded(out, value);
}

}  // namespace

bool handshake_eligible(std::optional<std::string_view> sec_fetch_dest,
                        std::optional<std::string_view> accept) noexcept {
    // The SDK reads an empty header as absent (`getHeader(...) || undefined`).
    const bool has_fetch_dest = sec_fetch_dest && !sec_fetch_dest->empty();
    if (has_fetch_dest) return *sec_fetch_dest == "document" || *sec_fetch_dest == "iframe";
    return accept && accept->substr(0, 9) == "text/html";
}

std::optional<std::string_view> handshake_reason(const HandshakeInput& input) noexcept {
    const std::int64_t client_uat = parse_client_uat(input.client_uat);
    const bool has_active_client = client_uat != 0;

    // request.ts authenticateRequestWithTokenInCookie, in its order.
    if (!has_active_client && !input.has_session_cookie) return std::nullopt;  // signed out
    if (!has_active_client) return kReasonSessionWithoutClientUat;
    if (!input.has_session_cookie) return kReasonClientUatWithoutSession;

    if (iat_is_trusted(input.token_error) && input.token_has_iat && input.token_iat < client_uat) {
        return kReasonIatBeforeClientUat;
    }
    switch (input.token_error) {
        case JwtError::expired:
            return kReasonExpired;
        case JwtError::not_yet_valid:
            return kReasonNotBefore;
        case JwtError::issued_in_future:
            return kReasonIatInFuture;
        default:
            return std::nullopt;
    }
}

std::string handshake_url(std::string_view frontend_api, std::string_view redirect_url,
                          std::string_view reason) {
    // As the SDK does: no trailing slash doubles the path separator.
    while (!frontend_api.empty() && frontend_api.back() == '/') frontend_api.remove_suffix(1);

    std::string url;
    url.reserve(frontend_api.size() + redirect_url.size() * 3 + 160);
    url += frontend_api;
    url += "/v1/client/handshake?";
    append_query_param(url, "redirect_url", redirect_url);
    append_query_param(url, "__clerk_api_version", kClerkApiVersion);
    // Only the unsuffixed cookies are read, so only they are asked for.
    append_query_param(url, "suffixed_cookies", "false");
    append_query_param(url, "__clerk_hs_reason", reason);
    // The SDK asks for format=nonce and appends __session=<token>. A nonce
    // needs the Backend API to redeem; a token in a URL lands in access logs.
    append_query_param(url, "format", "token");
    return url;
}

int redirect_count(std::optional<std::string_view> cookie_value) noexcept {
    if (!cookie_value || cookie_value->empty()) return 0;
    int count = 0;
    for (char c : *cookie_value) {
        if (!is_ascii_digit(c)) return 0;
        count = count * 10 + (c - '0');
        if (count > 99) return 0;
    }
    return count;
}

std::string redirect_count_cookie(int count) {
    // Kept in the range redirect_count reads back.
    if (count < 0) count = 0;
    if (count > 99) count = 99;
    std::string cookie(kRedirectCountCookie);
    cookie += '=';
    cookie += std::to_string(count);
    cookie += kRedirectCountAttributes;
    return cookie;
}

std::string_view set_cookie_name(std::string_view directive) noexcept {
    const std::string_view name_value = directive.substr(0, directive.find(';'));
    const std::size_t equals = name_value.find('=');
    // RFC 6265 section 5.2: a pair without '=' sets nothing the module knows.
    if (equals == std::string_view::npos) return {};
    return trim_cookie_whitespace(name_value.substr(0, equals));
}

bool is_clerk_cookie_directive(std::string_view directive) noexcept {
    for (char c : directive) {
        if (is_control(c)) return false;
    }
    return is_clerk_cookie_name(set_cookie_name(directive));
}

std::string without_handshake_params(std::string_view uri) {
    const std::size_t question = uri.find('?');
    if (question == std::string_view::npos) return std::string(uri);

    const std::string_view query = uri.substr(question + 1);
    std::string kept_query;
    bool kept_any = false;
    bool removed_any = false;
    std::size_t start = 0;
    while (start <= query.size()) {
        std::size_t end = query.find('&', start);
        if (end == std::string_view::npos) end = query.size();
        const std::string_view param = query.substr(start, end - start);
        if (is_handshake_query_param(param)) {
            removed_any = true;
        } else {
            if (kept_any) kept_query += '&';
            kept_query += param;
            kept_any = true;
        }
        start = end + 1;
    }
    if (!removed_any) return std::string(uri);

    std::string result(uri.substr(0, question));
    if (!kept_query.empty()) {
        result += '?';
        result += kept_query;
    }
    return result;
}

}  // namespace session::core
