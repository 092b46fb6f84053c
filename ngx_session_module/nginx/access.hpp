// The access-phase check and the per-request state it leaves for the
// variables.
#pragma once

#include "nginx/ngx.hpp"

#include "core/record.hpp"
#include "nginx/conf.hpp"

namespace session::ngx {

struct Lookup;

// Per-request state: trivially destructible (it lives in the request pool
// and is never destroyed explicitly).
struct RequestCtx {
    ngx_http_request_t* request;
    core::Outcome outcome;
    bool done;  // the verdict is known; `rc` is final
    bool cleanup_added;
    bool has_record;                  // `record` holds a valid session's identity
    ngx_int_t rc;                     // what the access handler answers on re-entry
    ngx_str_t token;                  // request pool copy
    ngx_str_t session_key;            // <prefix>sess:<token>, request pool
    core::LookupRecord record;        // views into `flat`
    const unsigned char* stale_flat;  // an expired cache entry, if any
    std::size_t stale_flat_len;
    Lookup* lookup;                      // in flight, or nullptr
    ngx_atomic_uint_t cache_generation;  // the cache zone's, when the check started
};

ngx_int_t access_handler(ngx_http_request_t* r) noexcept;

inline RequestCtx* request_ctx(ngx_http_request_t* r) noexcept {
    return static_cast<RequestCtx*>(ngx_http_get_module_ctx(r, ngx_session_module));
}

}  // namespace session::ngx
