// Internal to the JWT code (jwt.cpp, jwt_json.cpp, jwt_flat.cpp,
// clerk_claims.cpp); the module uses jwt.hpp. What claim text may be: a
// value that may reach a header, a name that may become a variable, a time.
// Inline: decode_claims runs these on every cached verdict.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace session::core::jwt_detail {

// 9999-12-31T23:59:59Z: a time claim beyond it is not a time. Keeps
// exp + leeway far from overflow.
inline constexpr std::int64_t kMaxTimestamp = 253402300799;

// Eight bytes at a time (every cached verdict is checked again when read):
// a byte below 0x20, or one equal to 0x7f, sets its high bit in `found`.
// For the bytes that matter the borrow trick is exact: a set high bit marks
// the first such byte, and any is enough.
inline bool has_control_character(std::string_view text) noexcept {
    constexpr std::uint64_t kOnes = 0x0101010101010101ull;
    constexpr std::uint64_t kHighs = 0x8080808080808080ull;
    std::size_t i = 0;
    for (; i + 8 <= text.size(); i += 8) {
        std::uint64_t word;
        std::memcpy(&word, text.data() + i, sizeof(word));
        const std::uint64_t below_space = (word - 0x20 * kOnes) & ~word & kHighs;
        const std::uint64_t del = word ^ (0x7f * kOnes);
        const std::uint64_t is_del = (del - kOnes) & ~del & kHighs;
        if ((below_space | is_del) != 0) return true;
    }
    for (; i < text.size(); ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c < 0x20 || c == 0x7f) return true;
    }
    return false;
}

// [A-Za-z0-9_]{1,255}: a claim that can be $session_claim_<name>.
inline bool is_claim_name(std::string_view name) noexcept {
    if (name.empty() || name.size() > 255) return false;
    for (unsigned char c : name) {
        const bool ok =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
        if (!ok) return false;
    }
    return true;
}

}  // namespace session::core::jwt_detail
