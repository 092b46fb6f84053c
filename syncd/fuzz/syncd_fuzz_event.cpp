// Fuzzes the event decoding (JSON envelope to rows) and the configuration
// parsers. Any input must either decode or raise the documented error.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "core/config.hpp"
#include "core/event.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view in(reinterpret_cast<const char*>(data), size);
    try {
        syncd::Event ev = syncd::decode_event(in);
        if (ev.type.empty()) __builtin_trap();
        if (auto* u = std::get_if<syncd::UserRow>(&ev.change)) {
            if (u->clerk_id.empty() || !syncd::is_valid_role_word(u->role)) __builtin_trap();
        }
    } catch (const syncd::DecodeError&) {
    }
    std::string text(in);
    try {
        syncd::load_config({}, syncd::parse_env_file(text, "fuzz"));
    } catch (const syncd::ConfigError&) {
    }
    try {
        syncd::parse_redis_url("FUZZ", text);
    } catch (const syncd::ConfigError&) {
    }
    return 0;
}
