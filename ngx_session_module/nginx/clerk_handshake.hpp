// Clerk's handshake in nginx (see core/handshake.hpp): a page load whose
// session cookie cannot be trusted as it is goes to the Frontend API with a
// 307; it comes back with a handshake token whose cookies are set before a
// 307 to the same page.
#pragma once

#include "nginx/ngx.hpp"

#include "core/handshake.hpp"
#include "nginx/access.hpp"

namespace session::ngx {

// A request back from the Frontend API with a handshake token (query
// parameter or cookie __clerk_handshake): verified with the location's keys,
// each of its cookie directives set, and a 307 to the URL without the
// parameter. NGX_DECLINED when the request carries no handshake token.
ngx_int_t resolve_handshake(ngx_http_request_t* r, RequestCtx* ctx, const LocConf* lcf) noexcept;

// A 307 to the Frontend API when the request may have one (a GET document
// load, cookie-borne or no token, under the loop guard, not `satisfy any`)
// and `input` (completed here with __client_uat) calls for it; `outcome` is
// what $session_status says for it. NGX_DECLINED otherwise.
ngx_int_t handshake_if_due(ngx_http_request_t* r, RequestCtx* ctx, const LocConf* lcf,
                           core::HandshakeInput input, core::Outcome outcome) noexcept;

}  // namespace session::ngx
