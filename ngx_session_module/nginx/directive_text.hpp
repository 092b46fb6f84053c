// Small helpers for directive handlers (module.cpp, redis_directive.cpp,
// jwt_directives.cpp, better_auth.cpp): argument prefixes, nginx-worded
// "invalid ..." errors, and reading a file a directive names.
#pragma once

#include "nginx/ngx.hpp"

#include <cstddef>
#include <string>
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

// `why`, when given, follows the directive's name (", it must be ...").
inline char* invalid_value(ngx_conf_t* cf, ngx_command_t* cmd, const ngx_str_t& value,
                           const char* why = "") noexcept {
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid value \"%V\" in \"%V\" directive%s", &value,
                       &cmd->name, why);
    return kConfError;
}

// Reads the file a directive names (`name`, made absolute from nginx's
// prefix) into `content`, while the configuration loads (the master, before
// any worker exists: blocking I/O is fine here). `what` names the file in
// errors ("key", "secret"); its content is never logged. A file larger than
// `max_size` is refused.
inline bool read_directive_file(ngx_conf_t* cf, ngx_command_t* cmd, ngx_str_t* name,
                                const char* what, off_t max_size, std::string& content) noexcept {
    if (ngx_conf_full_name(cf->cycle, name, 1) != NGX_OK) {
        return false;
    }
    ngx_file_t file;
    ngx_memzero(&file, sizeof(ngx_file_t));
    file.name = *name;
    file.log = cf->log;
    file.fd = ngx_open_file(name->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno, "\"%V\" cannot open %s file \"%V\"",
                           &cmd->name, what, name);
        return false;
    }
    bool ok = false;
    ngx_file_info_t info;
    if (ngx_fd_info(file.fd, &info) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno, "\"%V\" cannot stat %s file \"%V\"",
                           &cmd->name, what, name);
    } else if (ngx_file_size(&info) > max_size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\" %s file \"%V\" is larger than %O bytes",
                           &cmd->name, what, name, max_size);
    } else {
        try {
            content.resize(static_cast<std::size_t>(ngx_file_size(&info)));
            ssize_t n =
                ngx_read_file(&file, reinterpret_cast<u_char*>(content.data()), content.size(), 0);
            ok = n == static_cast<ssize_t>(content.size());
            if (!ok) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\" cannot read %s file \"%V\"",
                                   &cmd->name, what, name);
            }
        } catch (...) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\": out of memory reading \"%V\"",
                               &cmd->name, name);
        }
    }
    ngx_close_file(file.fd);
    return ok;
}

}  // namespace session::ngx
