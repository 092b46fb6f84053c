// session_strip_headers: request headers a client must never be able to
// send to the upstream (the identity headers nginx sets from the session).
#pragma once

#include "nginx/ngx.hpp"

#include "nginx/conf.hpp"

namespace session::ngx {

// One configured name: lowercase, '_' folded to '-'; `prefix` for a
// trailing '*'.
struct StripName {
    ngx_str_t name;
    ngx_flag_t prefix;
};

// session_strip_headers NAME ... (loc conf, LocConf::strip_headers).
char* strip_headers_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept;

// Inherits the list and refuses a token source (session_token header=) that
// the list would strip before the check could read it.
char* merge_strip_headers(ngx_conf_t* cf, const LocConf* prev, LocConf* conf) noexcept;

// NGX_HTTP_PREACCESS_PHASE handler, for main requests and subrequests;
// always NGX_DECLINED unless out of memory.
ngx_int_t strip_headers_handler(ngx_http_request_t* r) noexcept;

}  // namespace session::ngx
