// find_cookie, parse_bearer and is_valid_token on arbitrary bytes: no crash,
// no read outside the input, and the documented invariants hold.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <string_view>

#include "core/token.hpp"

namespace {

using session::core::find_cookie;
using session::core::is_valid_token;
using session::core::kMaxTokenLength;
using session::core::parse_bearer;

void require(bool condition) {
    if (!condition) std::abort();
}

bool lies_inside(std::string_view part, std::string_view whole) {
    // std::less_equal: a total order even for pointers into different objects.
    return std::less_equal<const char*>()(whole.data(), part.data()) &&
           std::less_equal<const char*>()(part.data() + part.size(), whole.data() + whole.size());
}

bool is_blank(char c) {
    return c == ' ' || c == '\t';
}

// The same rule as is_valid_token, written the slow, obvious way.
bool reference_valid(std::string_view token) {
    if (token.empty() || token.size() > kMaxTokenLength) return false;
    for (char c : token) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') ||
                        std::string_view("._~+/=-").find(c) != std::string_view::npos;
        if (!ok) return false;
    }
    return true;
}

void check_cookie(std::string_view header, std::string_view name) {
    const auto value = find_cookie(header, name);
    if (!value) return;
    require(!name.empty());
    require(lies_inside(*value, header));
    // A value never spans pairs, and its name appears right before it.
    require(value->find(';') == std::string_view::npos);
    require(header.find(name) != std::string_view::npos);
    if (!value->empty()) {
        // Surrounding blanks are trimmed unless quotes kept them inside.
        const bool quoted = value->data() > header.data() && value->data()[-1] == '"';
        if (!quoted) {
            require(!is_blank(value->front()));
            require(!is_blank(value->back()));
        }
    }
    require(is_valid_token(*value) == reference_valid(*value));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);

    for (std::string_view name : {"sessionId", "__session", "a", "", "sess"}) {
        check_cookie(input, name);
    }
    // The first line (up to '\n') as the cookie name, the rest as the header:
    // lets the fuzzer pick names that occur in its header.
    const std::size_t newline = input.find('\n');
    if (newline != std::string_view::npos) {
        check_cookie(input.substr(newline + 1), input.substr(0, newline));
    }

    if (const auto token = parse_bearer(input)) {
        require(!token->empty());
        require(lies_inside(*token, input));
        for (char c : *token) require(!is_blank(c));
        // The scheme precedes the token.
        require(token->data() - input.data() >= 7);
    }

    require(is_valid_token(input) == reference_valid(input));
    return 0;
}
