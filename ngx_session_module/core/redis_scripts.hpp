// The Lua script the module runs in Redis (sliding expiry), and its SHA1 for
// EVALSHA. The check itself reads with plain HMGETs (record.hpp): no script.
#pragma once

#include <string>
#include <string_view>

namespace session::core {

// KEYS[1] = <prefix>sess:<id>, ARGV[1] = now (Unix ms), ARGV[2] = touch
// interval (ms). Sets last_active_at = now when the session exists and its
// last_active_at is older than the interval (so concurrent touches from any
// worker or server write at most once per interval); with idle_timeout, also
// sets the key's TTL to min(idle_timeout, expires_at - now). Returns 1 when it
// wrote, else 0.
extern const std::string_view kTouchScript;

// Lower-case hex SHA1 of a script, as Redis names it for EVALSHA.
std::string script_sha1(std::string_view script);

}  // namespace session::core
