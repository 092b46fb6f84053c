// JWT mode of the check: the token verified (or its verdict found in the
// cache), then Redis as the revocation and identity overlay.
#pragma once

#include "nginx/ngx.hpp"

#include <string_view>

#include "nginx/access.hpp"

namespace session::ngx {

// The check of a token with two dots, in a location with session_jwt_keys.
// `from_cookie`: the token came from a cookie source (only those may be sent
// for a handshake). Sets *not_jwt (and does nothing else) when the token is
// not three base64url parts after all: it is then an opaque token. (A token
// found in the cache verified before: the shape is checked only on a miss.)
ngx_int_t jwt_check(ngx_http_request_t* r, RequestCtx* ctx, const LocConf* lcf,
                    std::string_view token, bool from_cookie, bool* not_jwt) noexcept;

// Judges the verified token in ctx against an overlay entry `flat`
// (core::overlay_flat_*; nullptr: session_jwt_session off) with the current
// location's gates. `from_stale`: an expired cache entry honoured because
// Redis could not answer.
ngx_int_t jwt_judge(ngx_http_request_t* r, RequestCtx* ctx, const unsigned char* flat,
                    std::size_t flat_len, bool from_stale) noexcept;

}  // namespace session::ngx
