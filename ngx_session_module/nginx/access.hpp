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
    const struct LocConf* judged_for;  // the location whose settings made `rc`
    core::Outcome outcome;
    bool done;                  // the verdict is known; `rc` is final for `judged_for`
    bool has_record;            // `record` holds a valid session's identity
    bool record_from_stale;     // `flat` is an expired cache entry
    ngx_int_t rc;               // what the access handler answers on re-entry
    ngx_str_t token;            // request pool copy
    ngx_str_t session_key;      // <prefix>sess:<token>, request pool
    const unsigned char* flat;  // the record read, request pool
    std::size_t flat_len;
    core::LookupRecord record;        // views into `flat`
    const unsigned char* stale_flat;  // an expired cache entry, if any
    std::size_t stale_flat_len;
    Lookup* lookup;                      // in flight, or nullptr
    ngx_atomic_uint_t cache_generation;  // the cache zone's, when the check started
};

ngx_int_t access_handler(ngx_http_request_t* r) noexcept;

// The request's check, also after an internal redirect (try_files, error_page,
// named locations), which clears every module's ctx: then it is found again
// through the request pool's cleanup, as the realip module does.
RequestCtx* request_ctx(ngx_http_request_t* r) noexcept;

}  // namespace session::ngx
