// Internal to the JWT code (jwt.cpp, clerk_claims.cpp); the module uses
// jwt.hpp. Reading a token's JSON (simdjson's DOM) with the rules of Clerk's
// SDK where they differ from simdjson's: no duplicate member names, times
// as whole seconds, numbers as JavaScript would print them.
#pragma once

#include <simdjson.h>

#include <cstdint>
#include <optional>
#include <string_view>

#include "core/jwt_text.hpp"

namespace session::core::jwt_detail {

using simdjson::dom::array;
using simdjson::dom::element;
using simdjson::dom::element_type;
using simdjson::dom::object;

// Every member name of `obj` differs from the others. JSON.parse keeps the
// last duplicate, simdjson finds the first: refusing them (RFC 7515 5.2
// allows it) means no claim can mean two things.
bool has_unique_names(object obj) noexcept;

enum class Member { absent, found, duplicate };

Member find_member(object obj, std::string_view name, element& out) noexcept;

inline bool get_string(const std::optional<element>& value, std::string_view& out) noexcept {
    return value && value->get(out) == simdjson::SUCCESS;
}

// A string claim that may reach a header: empty unless a string free of
// control characters.
inline std::string_view header_safe_string(const std::optional<element>& value) noexcept {
    std::string_view text;
    if (!get_string(value, text) || has_control_character(text)) return {};
    return text;
}

// exp / nbf / iat: a number of seconds; a fraction is dropped (floor).
bool read_time(element value, std::int64_t& out) noexcept;

// A JSON number as text: integers in decimal, other numbers in the
// shortest form that reads back as the same double (1.5, 1e+21). Empty when
// it cannot be written.
std::string_view format_number(element value, char (&buffer)[32]) noexcept;

}  // namespace session::core::jwt_detail
