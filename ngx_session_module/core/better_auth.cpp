// better-auth's cookie and stored session: see better_auth.hpp.
#include "core/better_auth.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <simdjson.h>

#include "core/jwt_text.hpp"
#include "core/token.hpp"

namespace session::core {
namespace {

using simdjson::dom::element;
using simdjson::dom::object;

constexpr std::size_t kHmacLength = 32;

// The base64 of HMAC-SHA256(secret, token) into `out` (45 bytes with the
// NUL EVP_EncodeBlock writes); false if OpenSSL fails.
bool encoded_hmac(std::string_view token, std::string_view secret,
                  unsigned char (&out)[kBetterAuthSignatureLength + 1]) noexcept {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    if (HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
             reinterpret_cast<const unsigned char*>(token.data()), token.size(), mac,
             &mac_len) == nullptr ||
        mac_len != kHmacLength) {
        return false;
    }
    return EVP_EncodeBlock(out, mac, static_cast<int>(mac_len)) ==
           static_cast<int>(kBetterAuthSignatureLength);
}

// Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar
// (H. Hinnant's days_from_civil): no timegm, no time zone, no locale.
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) noexcept {
    y -= m <= 2;
    const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
    const auto yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

bool is_leap(std::int64_t y) noexcept {
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

// `n` decimal digits at `text[pos]`.
bool read_digits(std::string_view text, std::size_t pos, std::size_t n, unsigned& out) noexcept {
    if (pos + n > text.size()) return false;
    out = 0;
    for (std::size_t i = pos; i < pos + n; ++i) {
        if (text[i] < '0' || text[i] > '9') return false;
        out = out * 10 + static_cast<unsigned>(text[i] - '0');
    }
    return true;
}

// A member that must be a string: false when absent or another type.
bool string_member(object obj, std::string_view name, std::string_view& out) noexcept {
    return obj[name].get(out) == simdjson::SUCCESS;
}

// A member that may be absent or null, else must be a string.
bool optional_string(object obj, std::string_view name, std::string_view& out) noexcept {
    element value;
    auto error = obj[name].get(value);
    if (error == simdjson::NO_SUCH_FIELD) return true;
    if (error != simdjson::SUCCESS) return false;
    if (value.is_null()) return true;
    return value.get(out) == simdjson::SUCCESS;
}

// better-auth's admin plugin keeps several roles as "admin,user"; an
// additional field may use spaces. Empty words are dropped.
void split_roles(std::string_view role, std::string& out) {
    std::size_t i = 0;
    while (i < role.size()) {
        std::size_t end = role.find_first_of(", ", i);
        if (end == std::string_view::npos) end = role.size();
        if (end > i) {
            if (!out.empty()) out.push_back(' ');
            out.append(role.substr(i, end - i));
        }
        i = end + 1;
    }
}

}  // namespace

std::optional<SignedCookie> split_signed_cookie(std::string_view value) noexcept {
    std::size_t dot = value.rfind('.');
    if (dot == std::string_view::npos || dot == 0) return std::nullopt;
    SignedCookie cookie{value.substr(0, dot), value.substr(dot + 1)};
    if (cookie.signature.size() != kBetterAuthSignatureLength || cookie.signature.back() != '=' ||
        !is_valid_token(cookie.token)) {
        return std::nullopt;
    }
    return cookie;
}

bool signature_matches(std::string_view token, std::string_view signature,
                       std::string_view secret) noexcept {
    unsigned char expected[kBetterAuthSignatureLength + 1];
    if (signature.size() != kBetterAuthSignatureLength || !encoded_hmac(token, secret, expected)) {
        return false;
    }
    return CRYPTO_memcmp(expected, signature.data(), kBetterAuthSignatureLength) == 0;
}

std::string sign_token(std::string_view token, std::string_view secret) {
    unsigned char encoded[kBetterAuthSignatureLength + 1];
    if (!encoded_hmac(token, secret, encoded)) return {};
    return std::string(reinterpret_cast<char*>(encoded), kBetterAuthSignatureLength);
}

std::optional<std::int64_t> parse_iso8601_ms(std::string_view text) noexcept {
    // YYYY-MM-DDTHH:MM:SS[.f+]Z
    unsigned year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
    if (text.size() < 20 || !read_digits(text, 0, 4, year) || text[4] != '-' ||
        !read_digits(text, 5, 2, month) || text[7] != '-' || !read_digits(text, 8, 2, day) ||
        text[10] != 'T' || !read_digits(text, 11, 2, hour) || text[13] != ':' ||
        !read_digits(text, 14, 2, minute) || text[16] != ':' || !read_digits(text, 17, 2, second)) {
        return std::nullopt;
    }
    std::size_t pos = 19;
    unsigned millis = 0;
    if (text[pos] == '.') {
        std::size_t digits = 0;
        for (++pos; pos < text.size() && text[pos] >= '0' && text[pos] <= '9'; ++pos, ++digits) {
            if (digits < 3) millis = millis * 10 + static_cast<unsigned>(text[pos] - '0');
        }
        if (digits == 0) return std::nullopt;
        for (; digits < 3; ++digits) millis *= 10;
    }
    if (pos + 1 != text.size() || text[pos] != 'Z') return std::nullopt;
    static constexpr unsigned kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (year < 1970 || month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 ||
        second > 59) {
        return std::nullopt;
    }
    unsigned month_days = kDays[month - 1] + (month == 2 && is_leap(year) ? 1 : 0);
    if (day > month_days) return std::nullopt;
    std::int64_t days = days_from_civil(year, month, day);
    std::int64_t seconds = days * 86400 + hour * 3600 + minute * 60 + second;
    return seconds * 1000 + millis;
}

BetterAuthDecode decode_better_auth(std::string_view json, std::string_view token,
                                    BetterAuthSession& out) noexcept {
    if (json.size() > kMaxBetterAuthRecordSize) return BetterAuthDecode::malformed;
    // One parser per process (a worker is single-threaded), its buffers
    // reused from one lookup to the next.
    static simdjson::dom::parser parser;
    element root;
    object session_obj, user_obj;
    if (parser.parse(json.data(), json.size()).get(root) != simdjson::SUCCESS ||
        root["session"].get(session_obj) != simdjson::SUCCESS ||
        root["user"].get(user_obj) != simdjson::SUCCESS) {
        return BetterAuthDecode::malformed;
    }
    std::string_view session_id, session_user, user_id, expires_at, stored_token;
    std::string_view email, role;
    // The session id reaches $session_id (and a header) as it is: no
    // control byte. The other strings are judged by evaluate(), which
    // names the field when it refuses one.
    if (!string_member(session_obj, "id", session_id) || session_id.empty() ||
        jwt_detail::has_control_character(session_id) ||
        !string_member(session_obj, "userId", session_user) ||
        !string_member(user_obj, "id", user_id) || user_id.empty() || user_id != session_user ||
        !string_member(session_obj, "expiresAt", expires_at) ||
        !optional_string(session_obj, "token", stored_token) ||
        (!stored_token.empty() && stored_token != token) ||
        !optional_string(user_obj, "email", email) || !optional_string(user_obj, "role", role)) {
        return BetterAuthDecode::malformed;
    }
    bool banned = false;
    element banned_value;
    if (auto error = user_obj["banned"].get(banned_value); error == simdjson::SUCCESS) {
        if (!banned_value.is_null() && banned_value.get(banned) != simdjson::SUCCESS) {
            return BetterAuthDecode::malformed;
        }
    } else if (error != simdjson::NO_SUCH_FIELD) {
        return BetterAuthDecode::malformed;
    }
    std::optional<std::int64_t> expires_ms = parse_iso8601_ms(expires_at);
    if (!expires_ms) return BetterAuthDecode::malformed;
    try {
        out.session_id.assign(session_id);
        out.user_id.assign(user_id);
        out.email.assign(email);
        out.roles.clear();
        split_roles(role, out.roles);
        out.expires_at_ms = std::to_string(*expires_ms);
        out.banned = banned;
    } catch (...) {
        return BetterAuthDecode::malformed;
    }
    return BetterAuthDecode::ok;
}

LookupRecord to_lookup_record(const BetterAuthSession& session) noexcept {
    LookupRecord record;
    auto set_session = [&](SessionField f, std::string_view v) {
        record.session[static_cast<std::size_t>(f)] = v;
    };
    auto set_user = [&](UserField f, std::string_view v) {
        record.user[static_cast<std::size_t>(f)] = v;
    };
    set_session(SessionField::user_id, session.user_id);
    set_session(SessionField::expires_at, session.expires_at_ms);
    std::string_view roles = session.roles;
    if (!roles.empty()) {
        set_user(UserField::role, roles.substr(0, roles.find(' ')));
        set_user(UserField::roles, roles);
    }
    set_user(UserField::db_id, session.user_id);
    if (!session.email.empty()) set_user(UserField::email, session.email);
    set_user(UserField::status, session.banned ? "banned" : "active");
    return record;
}

}  // namespace session::core
