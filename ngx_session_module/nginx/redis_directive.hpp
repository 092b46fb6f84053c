// The `session_redis` directive (redis_directive.cpp).
#pragma once

#include "nginx/ngx.hpp"

namespace session::ngx {

// session_redis ADDRESS [options]: fills MainConf::redis.
char* redis_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept;

}  // namespace session::ngx
