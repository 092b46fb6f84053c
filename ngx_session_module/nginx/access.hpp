// The access-phase check and the per-request state it leaves for the
// variables.
#pragma once

#include "nginx/ngx.hpp"

#include <optional>
#include <string_view>

#include "core/jwt.hpp"
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
    bool counted;               // in nginx_session_checks_total (once per request)
    bool touched;               // session_touch sent (once per request)
    bool has_record;            // `record` holds a valid session's identity
    bool record_from_stale;     // `flat` is an expired cache entry
    ngx_int_t rc;               // what the access handler answers on re-entry
    ngx_str_t token;            // request pool copy
    ngx_str_t session_key;      // <prefix>sess:<token>, request pool; made when needed
    const unsigned char* flat;  // the record read, request pool
    std::size_t flat_len;
    core::LookupRecord record;        // views into `flat`
    const unsigned char* stale_flat;  // an expired cache entry, if any
    std::size_t stale_flat_len;
    Lookup* lookup;  // in flight, or nullptr
    // The session hash, while its user hash is read (a session without the
    // user's copies; request pool). Never judged on its own.
    const unsigned char* session_flat;
    std::size_t session_flat_len;
    ngx_atomic_uint_t cache_generation;  // the cache zone's, when the check started
    // JWT mode (jwt_access.cpp): the token verified as a JWT; `claims` view
    // into `claims_flat`; `flat` then holds the overlay entry
    // (core::overlay_flat_*), or nullptr under session_jwt_session off.
    bool jwt;
    bool jwt_verified;  // signature and claims passed: `claims` is valid
    const unsigned char* claims_flat;
    std::size_t claims_flat_len;
    core::SessionClaims claims;
    ngx_str_t overlay_key;  // cache key of the overlay entry, or of the better-auth entry
    // better-auth mode (better_auth_access.cpp): `token` is the verified
    // session token, `session_key` its Redis key, `flat` a
    // core::overlay_flat_* of better-auth's session id (a view into it here)
    // and the record.
    bool better_auth;
    ngx_str_t better_auth_session_id;
};

ngx_int_t access_handler(ngx_http_request_t* r) noexcept;

// --- for the JWT path (jwt_access.cpp) and the handshake (handshake.cpp) ---

// Records the outcome and computes what the access handler answers (401,
// 302 to session_redirect, 403, 503, or NGX_OK / NGX_DECLINED).
ngx_int_t conclude(ngx_http_request_t* r, RequestCtx* ctx, core::Outcome outcome) noexcept;
// The same with a response of the caller's (the handshake's 307s).
ngx_int_t conclude_with(ngx_http_request_t* r, RequestCtx* ctx, core::Outcome outcome,
                        ngx_int_t rc) noexcept;

// An allocation failed: conclude `error` with a 500, so that a request that
// re-enters the access phase (error_page) finds a verdict instead of
// waiting, with no lookup in flight, for one that never comes.
ngx_int_t fail_internal(ngx_http_request_t* r, RequestCtx* ctx) noexcept;

// When `record` (judged invalid) holds a control byte, says which field, once
// per worker.
void log_if_control_bytes(ngx_http_request_t* r, const core::LookupRecord& record) noexcept;

// <prefix><kind><id> (kind "sess:" or "user:") in the request pool;
// {0, nullptr} when out of memory.
ngx_str_t redis_key(ngx_http_request_t* r, std::string_view kind, std::string_view id) noexcept;

// Redis could not answer: judge a stale cache entry if there is one, else
// conclude `error`.
ngx_int_t redis_unavailable(ngx_http_request_t* r, RequestCtx* ctx) noexcept;

// After a lookup was sent (ctx->lookup) or could not be (nullptr: fail
// fast as Redis unavailable): wait for it, watching the client.
ngx_int_t await_lookup(ngx_http_request_t* r, RequestCtx* ctx) noexcept;

// A lookup finished (from the link's callback): run the access phase again
// from the event loop, outside hiredis's frames.
void resume_request(ngx_http_request_t* r) noexcept;

// True when the location's session_require_role is satisfied (or unset).
bool roles_allow(const LocConf* lcf, const core::LookupRecord& record) noexcept;
// True when session_require_org_role / session_require_permission are set.
bool has_org_gates(const LocConf* lcf) noexcept;

const ngx_table_elt_t* find_request_header(ngx_http_request_t* r, std::string_view name) noexcept;
std::optional<std::string_view> find_cookie_in_request(ngx_http_request_t* r,
                                                       std::string_view name) noexcept;
ngx_table_elt_t* push_response_header(ngx_http_request_t* r, ngx_str_t key,
                                      ngx_str_t value) noexcept;
bool satisfy_any(ngx_http_request_t* r) noexcept;

// The request's check, also after an internal redirect (try_files, error_page,
// named locations), which clears every module's ctx: then it is found again
// through the request pool's cleanup, as the realip module does.
RequestCtx* request_ctx(ngx_http_request_t* r) noexcept;

}  // namespace session::ngx
