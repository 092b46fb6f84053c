#include "core/token.hpp"

#include <array>
#include <cstddef>
#include <cstring>

namespace session::core {
namespace {

// RFC 6265 allows only SP between pairs, but browsers and proxies also send
// HTAB; accepting both costs nothing and refuses nothing legitimate.
constexpr bool is_blank(char c) noexcept {
    return c == ' ' || c == '\t';
}

constexpr std::string_view trim_blanks(std::string_view text) noexcept {
    std::size_t begin = 0;
    while (begin < text.size() && is_blank(text[begin])) ++begin;
    std::size_t end = text.size();
    while (end > begin && is_blank(text[end - 1])) --end;
    return text.substr(begin, end - begin);
}

constexpr char ascii_lower(char c) noexcept {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// One table lookup per byte: this runs on every request's token.
constexpr std::array<bool, 256> make_token_charset() noexcept {
    std::array<bool, 256> allowed{};
    for (int c = 'A'; c <= 'Z'; ++c) allowed[static_cast<std::size_t>(c)] = true;
    for (int c = 'a'; c <= 'z'; ++c) allowed[static_cast<std::size_t>(c)] = true;
    for (int c = '0'; c <= '9'; ++c) allowed[static_cast<std::size_t>(c)] = true;
    for (char c : std::string_view("._~+/=-")) {
        allowed[static_cast<unsigned char>(c)] = true;
    }
    return allowed;
}
constexpr std::array<bool, 256> kTokenCharset = make_token_charset();

}  // namespace

std::optional<std::string_view> find_cookie(std::string_view header,
                                            std::string_view name) noexcept {
    // An empty name would match pairs like "=x", which no client means.
    if (name.empty()) return std::nullopt;

    std::size_t pos = 0;
    while (pos <= header.size()) {
        std::size_t semicolon = header.find(';', pos);
        if (semicolon == std::string_view::npos) semicolon = header.size();
        const std::string_view pair = header.substr(pos, semicolon - pos);
        pos = semicolon + 1;

        const std::size_t equals = pair.find('=');
        if (equals == std::string_view::npos) continue;  // not a name=value pair
        // Compare the whole trimmed name, so that "sessionId" neither matches
        // "xsessionId" nor "sessionIdx".
        if (trim_blanks(pair.substr(0, equals)) != name) continue;

        std::string_view value = trim_blanks(pair.substr(equals + 1));
        if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
            value = value.substr(1, value.size() - 2);
        }
        return value;  // the first one wins, as browsers send the most specific first
    }
    return std::nullopt;
}

std::optional<std::string_view> parse_bearer(std::string_view authorization) noexcept {
    constexpr std::string_view kScheme = "bearer";

    std::string_view rest = trim_blanks(authorization);
    if (rest.size() <= kScheme.size()) return std::nullopt;
    for (std::size_t i = 0; i < kScheme.size(); ++i) {
        if (ascii_lower(rest[i]) != kScheme[i]) return std::nullopt;
    }
    rest.remove_prefix(kScheme.size());
    // "Bearerx abc" is another scheme, not a Bearer token.
    if (!is_blank(rest.front())) return std::nullopt;

    const std::string_view token = trim_blanks(rest);
    if (token.empty()) return std::nullopt;
    // memchr is vectorised: a Clerk token is over a kilobyte.
    if (std::memchr(token.data(), ' ', token.size()) != nullptr ||
        std::memchr(token.data(), '\t', token.size()) != nullptr) {
        return std::nullopt;
    }
    return token;
}

bool is_valid_token(std::string_view token) noexcept {
    if (token.empty() || token.size() > kMaxTokenLength) return false;
    // No early exit: a branch-free loop over the whole token is faster for
    // the valid tokens that are the common case.
    bool valid = true;
    for (char c : token) valid &= kTokenCharset[static_cast<unsigned char>(c)];
    return valid;
}

}  // namespace session::core
