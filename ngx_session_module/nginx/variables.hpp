#pragma once

#include "nginx/ngx.hpp"

namespace session::ngx {

// Registers $session_id, $session_status and $session_user_* (preconfiguration).
ngx_int_t add_variables(ngx_conf_t* cf) noexcept;

}  // namespace session::ngx
