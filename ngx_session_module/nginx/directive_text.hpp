// Small helpers for directive handlers (module.cpp, redis_directive.cpp):
// argument prefixes and nginx-worded "invalid ..." errors.
#pragma once

#include "nginx/ngx.hpp"

#include <cstddef>
#include <string_view>

namespace session::ngx {

inline char* const kConfError = static_cast<char*>(NGX_CONF_ERROR);

inline bool starts_with(const ngx_str_t& s, std::string_view prefix) noexcept {
    return to_view(s).substr(0, prefix.size()) == prefix;
}

// The argument after its first `n` bytes (a "name=" prefix).
inline ngx_str_t after(const ngx_str_t& s, std::size_t n) noexcept {
    return {s.len - n, s.data + n};
}

inline char* invalid_parameter(ngx_conf_t* cf, ngx_command_t* cmd,
                               const ngx_str_t& value) noexcept {
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\" in \"%V\" directive", &value,
                       &cmd->name);
    return kConfError;
}

inline char* invalid_value(ngx_conf_t* cf, ngx_command_t* cmd, const ngx_str_t& value) noexcept {
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid value \"%V\" in \"%V\" directive", &value,
                       &cmd->name);
    return kConfError;
}

}  // namespace session::ngx
