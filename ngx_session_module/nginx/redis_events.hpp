// hiredis's async API driven by nginx's event loop: the adapter that
// hiredis's own adapters (libevent, libev, ...) are for other loops.
#pragma once

#include "nginx/ngx.hpp"

struct redisAsyncContext;

namespace session::ngx {

// Wraps the context's fd in an ngx_connection_t polled by nginx's event
// module and points hiredis's event hooks at it. Uses ac->ev.data; leaves
// ac->data to the caller. False when nginx has no free connection
// (worker_connections). The connection is released by hiredis's cleanup
// hook, before hiredis closes the fd itself.
bool attach_to_event_loop(redisAsyncContext* ac, ngx_log_t* log) noexcept;

}  // namespace session::ngx
