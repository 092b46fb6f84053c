// Reading a token's JSON: see jwt_json.hpp.
#include "core/jwt_json.hpp"

#include <charconv>
#include <cmath>

namespace session::core::jwt_detail {

bool has_unique_names(object obj) noexcept {
    std::string_view seen[64];
    std::size_t count = 0;
    for (auto field : obj) {
        if (count == 64) {
            // Rare (tokens carry a dozen claims): compare with every other.
            std::size_t occurrences = 0;
            for (auto other : obj) occurrences += other.key == field.key;
            if (occurrences > 1) return false;
            continue;
        }
        for (std::size_t i = 0; i < count; ++i) {
            if (seen[i] == field.key) return false;
        }
        seen[count++] = field.key;
    }
    return true;
}

Member find_member(object obj, std::string_view name, element& out) noexcept {
    Member result = Member::absent;
    for (auto field : obj) {
        if (field.key != name) continue;
        if (result == Member::found) return Member::duplicate;
        out = field.value;
        result = Member::found;
    }
    return result;
}

bool read_time(element value, std::int64_t& out) noexcept {
    switch (value.type()) {
        case element_type::INT64: {
            std::int64_t seconds = 0;
            if (value.get(seconds) != simdjson::SUCCESS) return false;
            out = seconds;
            break;
        }
        case element_type::DOUBLE: {
            double seconds = 0;
            if (value.get(seconds) != simdjson::SUCCESS || !std::isfinite(seconds)) return false;
            seconds = std::floor(seconds);
            if (seconds < 0 || seconds > static_cast<double>(kMaxTimestamp)) return false;
            out = static_cast<std::int64_t>(seconds);
            break;
        }
        default:  // UINT64 is above INT64_MAX: absurd as well
            return false;
    }
    return out >= 0 && out <= kMaxTimestamp;
}

std::string_view format_number(element value, char (&buffer)[32]) noexcept {
    std::to_chars_result result{buffer, std::errc()};
    switch (value.type()) {
        case element_type::INT64: {
            std::int64_t number = 0;
            if (value.get(number) != simdjson::SUCCESS) return {};
            result = std::to_chars(buffer, buffer + sizeof(buffer), number);
            break;
        }
        case element_type::UINT64: {
            std::uint64_t number = 0;
            if (value.get(number) != simdjson::SUCCESS) return {};
            result = std::to_chars(buffer, buffer + sizeof(buffer), number);
            break;
        }
        default: {
            double number = 0;
            if (value.get(number) != simdjson::SUCCESS) return {};
            result = std::to_chars(buffer, buffer + sizeof(buffer), number);
            break;
        }
    }
    if (result.ec != std::errc()) return {};
    return std::string_view(buffer, static_cast<std::size_t>(result.ptr - buffer));
}

}  // namespace session::core::jwt_detail
