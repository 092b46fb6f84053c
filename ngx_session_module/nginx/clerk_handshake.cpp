#include "nginx/clerk_handshake.hpp"

#include <string>
#include <vector>

#include "core/token.hpp"
#include "nginx/jwt_key_store.hpp"

namespace session::ngx {
namespace {

using core::Outcome;

std::optional<std::string_view> header_value(ngx_http_request_t* r,
                                             std::string_view name) noexcept {
    if (const ngx_table_elt_t* h = find_request_header(r, name)) {
        return to_view(h->value);
    }
    return std::nullopt;
}

// A page load that a handshake can help: never an API call (Bearer), a
// POST, or a request under `satisfy any` (which may answer only 401/403).
bool may_handshake(ngx_http_request_t* r, const LocConf* lcf) noexcept {
    if (!(r->method & NGX_HTTP_GET) || satisfy_any(r) || lcf->session_cookie.len == 0) {
        return false;
    }
    if (r->headers_in.authorization != nullptr &&
        core::parse_bearer(to_view(r->headers_in.authorization->value))) {
        return false;
    }
    return core::handshake_eligible(header_value(r, "Sec-Fetch-Dest"), header_value(r, "Accept"));
}

// The absolute URL of this request, for the Frontend API to come back to:
// the scheme nginx received it with, the Host header and the URI as sent.
std::string current_url(ngx_http_request_t* r) {
    std::string url;
#if (NGX_HTTP_SSL)
    url = r->connection->ssl != nullptr ? "https://" : "http://";
#else
    url = "http://";
#endif
    if (r->headers_in.host != nullptr) {
        url += to_view(r->headers_in.host->value);
    } else {
        url += to_view(r->headers_in.server);
    }
    url += to_view(r->unparsed_uri);
    return url;
}

bool push_copy(ngx_http_request_t* r, ngx_str_t name, std::string_view value,
               ngx_table_elt_t** out = nullptr) noexcept {
    ngx_str_t copy = copy_to_pool(r->pool, value);
    if (copy.data == nullptr) {
        return false;
    }
    ngx_table_elt_t* h = push_response_header(r, name, copy);
    if (out != nullptr) *out = h;
    return h != nullptr;
}

// Location, Cache-Control: no-store and the cookies, on a 307.
ngx_int_t redirect_307(ngx_http_request_t* r, RequestCtx* ctx, Outcome outcome,
                       std::string_view location, const std::vector<std::string>& cookies) {
    ngx_http_clear_location(r);
    if (!push_copy(r, literal("Location"), location, &r->headers_out.location) ||
        !push_copy(r, literal("Cache-Control"), "no-store")) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    for (const std::string& cookie : cookies) {
        if (!push_copy(r, literal("Set-Cookie"), cookie)) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    return conclude_with(r, ctx, outcome, NGX_HTTP_TEMPORARY_REDIRECT);
}

std::optional<std::string_view> handshake_token(ngx_http_request_t* r) noexcept {
    ngx_str_t value;
    if (ngx_http_arg(r, reinterpret_cast<u_char*>(const_cast<char*>(core::kHandshakeParam.data())),
                     core::kHandshakeParam.size(), &value) == NGX_OK &&
        value.len > 0) {
        return to_view(value);
    }
    auto cookie = find_cookie_in_request(r, core::kHandshakeParam);
    if (cookie && !cookie->empty()) return cookie;
    return std::nullopt;
}

// The request's own log would append the request line, and a development
// instance's handshake token (which carries the session token) is in the
// query string: log through the cycle's log, with the client's address only.
ngx_int_t refuse_handshake(ngx_http_request_t* r, RequestCtx* ctx, const char* why) noexcept {
    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0, "session_jwt_handshake: refused: %s, client: %V",
                  why, &r->connection->addr_text);
    return conclude(r, ctx, Outcome::invalid);
}

ngx_int_t resolve(ngx_http_request_t* r, RequestCtx* ctx, const LocConf* lcf,
                  std::string_view token) {
    std::vector<std::string> directives;
    core::JwtError error = core::verify_handshake_token(
        token, *jwt_verify_keys(lcf).keys, static_cast<std::int64_t>(ngx_time()),
        static_cast<std::int64_t>(lcf->jwt.leeway), directives);
    if (error != core::JwtError::none) {
        std::string why = "handshake token ";
        why += core::jwt_error_name(error);
        return refuse_handshake(r, ctx, why.c_str());
    }
    for (const std::string& directive : directives) {
        if (!core::is_clerk_cookie_directive(directive)) {
            // All or nothing: a handshake that sets a foreign cookie is not
            // Clerk's, whatever key signed it.
            return refuse_handshake(r, ctx, "a directive sets a cookie that is not Clerk's");
        }
    }
    std::string back = core::without_handshake_params(to_view(r->unparsed_uri));
    return redirect_307(r, ctx, Outcome::missing, back, directives);
}

ngx_int_t redirect_to_frontend_api(ngx_http_request_t* r, RequestCtx* ctx, const LocConf* lcf,
                                   std::string_view reason, int count, Outcome outcome) {
    std::string location = core::handshake_url(to_view(lcf->jwt.handshake), current_url(r), reason);
    std::vector<std::string> cookies{core::redirect_count_cookie(count + 1)};
    return redirect_307(r, ctx, outcome, location, cookies);
}

}  // namespace

ngx_int_t resolve_handshake(ngx_http_request_t* r, RequestCtx* ctx, const LocConf* lcf) noexcept {
    // Under `satisfy any` an access module may answer only 401 or 403.
    if (!(r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD)) || satisfy_any(r)) {
        return NGX_DECLINED;
    }
    std::optional<std::string_view> token = handshake_token(r);
    if (!token) {
        return NGX_DECLINED;
    }
    if (!core::is_valid_token(*token)) {
        return refuse_handshake(r, ctx, "malformed handshake token");
    }
    try {
        return resolve(r, ctx, lcf, *token);
    } catch (...) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
}

ngx_int_t handshake_if_due(ngx_http_request_t* r, RequestCtx* ctx, const LocConf* lcf,
                           core::HandshakeInput input, Outcome outcome) noexcept {
    if (!may_handshake(r, lcf)) {
        return NGX_DECLINED;
    }
    input.client_uat = find_cookie_in_request(r, core::kClientUatCookie);
    std::optional<std::string_view> reason = core::handshake_reason(input);
    if (!reason) {
        return NGX_DECLINED;
    }
    int count = core::redirect_count(find_cookie_in_request(r, core::kRedirectCountCookie));
    if (count >= core::kMaxHandshakeRedirects) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "session_jwt_handshake: %d redirects in a row, answering without one", count);
        return NGX_DECLINED;
    }
    try {
        return redirect_to_frontend_api(r, ctx, lcf, *reason, count, outcome);
    } catch (...) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
}

}  // namespace session::ngx
