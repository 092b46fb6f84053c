#include "nginx/access.hpp"

#include <hiredis/hiredis.h>

#include <new>

#include "core/flat_record.hpp"
#include "core/overlay.hpp"
#include "core/token.hpp"
#include "nginx/better_auth.hpp"
#include "nginx/cache_zone.hpp"
#include "nginx/clerk_handshake.hpp"
#include "nginx/jwt_access.hpp"
#include "nginx/metrics_zone.hpp"
#include "nginx/redis_link.hpp"

namespace session::ngx {

using core::Outcome;

namespace {

bool header_name_is(const ngx_table_elt_t& h, std::string_view name) noexcept {
    return h.key.len == name.size() &&
           ngx_strncasecmp(h.key.data, reinterpret_cast<u_char*>(const_cast<char*>(name.data())),
                           name.size()) == 0;
}

}  // namespace

const ngx_table_elt_t* find_request_header(ngx_http_request_t* r, std::string_view name) noexcept {
    for (ngx_list_part_t* part = &r->headers_in.headers.part; part != nullptr; part = part->next) {
        auto* h = static_cast<ngx_table_elt_t*>(part->elts);
        for (ngx_uint_t i = 0; i < part->nelts; ++i) {
            if (h[i].hash != 0 && header_name_is(h[i], name)) {
                return &h[i];
            }
        }
    }
    return nullptr;
}

std::optional<std::string_view> find_cookie_in_request(ngx_http_request_t* r,
                                                       std::string_view name) noexcept {
#if defined(nginx_version) && nginx_version >= 1023000
    // nginx 1.23 keeps every Cookie header in one linked list.
    for (ngx_table_elt_t* h = r->headers_in.cookie; h != nullptr; h = h->next) {
        if (auto v = core::find_cookie(to_view(h->value), name)) return v;
    }
#else
    auto** h = static_cast<ngx_table_elt_t**>(r->headers_in.cookies.elts);
    for (ngx_uint_t i = 0; i < r->headers_in.cookies.nelts; ++i) {
        if (auto v = core::find_cookie(to_view(h[i]->value), name)) return v;
    }
#endif
    return std::nullopt;
}

namespace {

// The first configured source present in the request wins, valid or not;
// `which` says which it was. An empty value is absent: a stale `__session=`
// left by a sign-out must not shadow a valid Bearer token behind it.
std::optional<std::string_view> extract_token(ngx_http_request_t* r, const LocConf* lcf,
                                              const TokenSource** which) noexcept {
    auto* sources = static_cast<TokenSource*>(lcf->token_sources->elts);
    for (ngx_uint_t i = 0; i < lcf->token_sources->nelts; ++i) {
        const TokenSource& source = sources[i];
        *which = &source;
        switch (source.kind) {
            case TokenSourceKind::cookie:
                if (auto v = find_cookie_in_request(r, to_view(source.name)); v && !v->empty()) {
                    return v;
                }
                break;
            case TokenSourceKind::header:
                if (auto* h = find_request_header(r, to_view(source.name));
                    h != nullptr && h->value.len > 0) {
                    return to_view(h->value);
                }
                break;
            case TokenSourceKind::bearer:
                if (r->headers_in.authorization != nullptr) {
                    if (auto v = core::parse_bearer(to_view(r->headers_in.authorization->value))) {
                        return v;
                    }
                    // An Authorization header of another scheme is not ours.
                }
                break;
        }
    }
    return std::nullopt;
}

// A browser loading a page (which a redirect helps), as opposed to a script
// calling an API (which needs the 401): the browser says so with
// Sec-Fetch-Mode; older ones are recognised by accepting HTML. Only GET and
// HEAD: a form POST is a navigation too, but a 302 would turn it into a GET
// of the sign-in page and lose the body; the README promises POSTs a 401.
bool is_navigation(ngx_http_request_t* r) noexcept {
    if (!(r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD))) {
        return false;
    }
    if (auto* mode = find_request_header(r, "Sec-Fetch-Mode")) {
        if (to_view(mode->value) == "navigate") return true;
    }
    if (auto* accept = find_request_header(r, "Accept")) {
        return to_view(accept->value).find("text/html") != std::string_view::npos;
    }
    return false;
}

}  // namespace

ngx_table_elt_t* push_response_header(ngx_http_request_t* r, ngx_str_t key,
                                      ngx_str_t value) noexcept {
    auto* h = static_cast<ngx_table_elt_t*>(ngx_list_push(&r->headers_out.headers));
    if (h == nullptr) {
        return nullptr;
    }
    h->hash = 1;
    h->key = key;
    h->value = value;
    h->lowcase_key = nullptr;
#if defined(nginx_version) && nginx_version >= 1023000
    h->next = nullptr;
#endif
    return h;
}

// Under `satisfy any`, only 401 and 403 let another access module still
// grant the request: any other status would end it at once.
bool satisfy_any(ngx_http_request_t* r) noexcept {
    auto* clcf = static_cast<ngx_http_core_loc_conf_t*>(
        ngx_http_get_module_loc_conf(r, ngx_http_core_module));
    return clcf->satisfy == NGX_HTTP_SATISFY_ANY;
}

namespace {

ngx_int_t unauthenticated(ngx_http_request_t* r, const LocConf* lcf, Outcome outcome) noexcept {
    if (lcf->redirect != nullptr && !satisfy_any(r) && is_navigation(r)) {
        ngx_str_t url;
        if (ngx_http_complex_value(r, lcf->redirect, &url) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        ngx_http_clear_location(r);
        r->headers_out.location = push_response_header(r, literal("Location"), url);
        if (r->headers_out.location == nullptr) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        return NGX_HTTP_MOVED_TEMPORARILY;
    }
    if (lcf->bearer_configured && r->headers_out.www_authenticate == nullptr) {
        // RFC 6750: no error code when no credentials were sent.
        ngx_str_t challenge = outcome == Outcome::missing
                                  ? literal("Bearer")
                                  : literal("Bearer error=\"invalid_token\"");
        r->headers_out.www_authenticate =
            push_response_header(r, literal("WWW-Authenticate"), challenge);
        if (r->headers_out.www_authenticate == nullptr) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    return NGX_HTTP_UNAUTHORIZED;
}

// The check is counted once per request, with its first verdict: an
// internal redirect to another checked location judges the same session
// again (its own roles, fail mode) but reads nothing new.
void count_once(RequestCtx* ctx, Outcome outcome) noexcept {
    if (!ctx->counted) {
        ctx->counted = true;
        count_check(outcome);
    }
}

// A gated location's upstream trusts nginx to have checked the role or the
// organization: letting it through anonymous would skip that check.
bool is_gated(const LocConf* lcf) noexcept {
    return (lcf->required_roles != nullptr && lcf->required_roles->nelts > 0) || has_org_gates(lcf);
}

void touch_session(ngx_http_request_t* r, RequestCtx* ctx, const LocConf* lcf,
                   std::int64_t now) noexcept {
    if (ctx->session_key.data == nullptr) {  // judged from the cache
        ctx->session_key = redis_key(r, "sess:", to_view(ctx->token));
        if (ctx->session_key.data == nullptr) {
            return;  // the touch is an optimisation; the verdict stands
        }
    }
    redis_touch(to_view(ctx->session_key), now, static_cast<std::int64_t>(lcf->touch));
    if (lcf->cache_zone == nullptr) {
        return;
    }
    // Record the touch in the cache too, so that cache hits do not touch
    // again within the interval.
    u_char digits[NGX_INT64_LEN];
    u_char* end = ngx_sprintf(digits, "%L", now);
    core::LookupRecord touched = ctx->record;
    touched.session[static_cast<std::size_t>(core::SessionField::last_active_at)] =
        std::string_view(reinterpret_cast<char*>(digits), end - digits);
    std::size_t len = core::flat_size(touched);
    auto* flat = static_cast<unsigned char*>(ngx_pnalloc(r->pool, len));
    if (flat != nullptr) {
        core::flat_encode(touched, flat);
        cache_replace_keep_expiry(lcf->cache_zone, to_view(ctx->token), flat, len,
                                  ctx->cache_generation);
    }
}

}  // namespace

ngx_int_t conclude_with(ngx_http_request_t* r, RequestCtx* ctx, Outcome outcome,
                        ngx_int_t rc) noexcept {
    ctx->judged_for = loc_conf(r);
    ctx->outcome = outcome;
    ctx->done = true;
    ctx->has_record = false;
    ctx->rc = rc;
    count_once(ctx, outcome);
    return rc;
}

// Turns an outcome into the access handler's answer; also what $session_*
// will say.
ngx_int_t conclude(ngx_http_request_t* r, RequestCtx* ctx, Outcome outcome) noexcept {
    const LocConf* lcf = loc_conf(r);
    ctx->judged_for = lcf;
    ctx->outcome = outcome;
    ctx->done = true;
    ctx->has_record = ctx->has_record && (outcome == Outcome::ok || outcome == Outcome::stale ||
                                          outcome == Outcome::forbidden);
    count_once(ctx, outcome);

    switch (outcome) {
        case Outcome::ok:
        case Outcome::stale:
            ctx->rc = NGX_OK;
            break;
        case Outcome::forbidden:
            ctx->rc = NGX_HTTP_FORBIDDEN;
            break;
        case Outcome::error:
            // open: the request goes on as anonymous; other access modules
            // (satisfy any) still decide. Never in a gated location, whose
            // gate cannot be checked without the record.
            if (lcf->fail_mode == kFailOpen && !is_gated(lcf)) {
                ctx->rc = NGX_DECLINED;
            } else {
                ctx->rc = satisfy_any(r) ? NGX_HTTP_UNAUTHORIZED : NGX_HTTP_SERVICE_UNAVAILABLE;
            }
            break;
        default:
            ctx->rc = unauthenticated(r, lcf, outcome);
            break;
    }
    return ctx->rc;
}

namespace {

core::Policy policy_of(const LocConf* lcf, bool fields_checked) noexcept {
    core::Policy policy;
    policy.fields_checked = fields_checked;
    if (lcf->required_roles != nullptr) {
        policy.required_roles = static_cast<std::string_view*>(lcf->required_roles->elts);
        policy.required_role_count = lcf->required_roles->nelts;
    }
    policy.touch_interval_ms = static_cast<std::int64_t>(lcf->touch);
    return policy;
}

// Judges a record held in `flat` (request pool). `from_stale`: an expired
// cache entry honoured because Redis could not answer. `fields_checked`:
// its fields are known to hold no control byte (read from the cache, which
// stores no other record: see judge_read).
ngx_int_t judge(ngx_http_request_t* r, RequestCtx* ctx, const unsigned char* flat,
                std::size_t flat_len, bool from_stale, bool fields_checked) noexcept {
    if (ctx->jwt) {
        return jwt_judge(r, ctx, flat, flat_len, from_stale);
    }
    if (ctx->better_auth) {
        return better_auth_judge(r, ctx, flat, flat_len, from_stale, fields_checked);
    }
    if (!core::flat_decode(flat, flat_len, ctx->record)) {
        return conclude(r, ctx, Outcome::error);
    }
    ctx->flat = flat;
    ctx->flat_len = flat_len;
    ctx->record_from_stale = from_stale;
    ctx->has_record = true;
    const LocConf* lcf = loc_conf(r);
    std::int64_t now = now_ms();
    core::Verdict verdict = core::evaluate(ctx->record, now, policy_of(lcf, fields_checked));
    if (verdict.outcome == Outcome::ok && has_org_gates(lcf)) {
        // An opaque session has no active organization.
        verdict.outcome = Outcome::forbidden;
    }
    if (verdict.outcome == Outcome::ok && from_stale) {
        return conclude(r, ctx, Outcome::stale);
    }
    if (verdict.outcome == Outcome::invalid) {
        log_if_control_bytes(r, ctx->record);
    }
    // Once per request: after an internal redirect the record still holds
    // the old last_active_at.
    if (verdict.touch && !from_stale && !ctx->touched) {
        ctx->touched = true;
        touch_session(r, ctx, lcf, now);
    }
    return conclude(r, ctx, verdict.outcome);
}

}  // namespace

ngx_int_t fail_internal(ngx_http_request_t* r, RequestCtx* ctx) noexcept {
    return conclude_with(r, ctx, Outcome::error, NGX_HTTP_INTERNAL_SERVER_ERROR);
}

void log_if_control_bytes(ngx_http_request_t* r, const core::LookupRecord& record) noexcept {
    // Once per worker: a bad writer would otherwise fill the log at request
    // rate. The field's name only, never its value (personal data).
    static bool logged = false;
    if (logged) {
        return;
    }
    std::string_view field = core::find_control_byte_field(record);
    if (field.empty()) {
        return;
    }
    logged = true;
    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "session: a record read from Redis has a control byte in \"%*s\", "
                  "refused as invalid (logged once per worker)",
                  field.size(), field.data());
}

ngx_int_t redis_unavailable(ngx_http_request_t* r, RequestCtx* ctx) noexcept {
    if (ctx->stale_flat != nullptr) {
        return judge(r, ctx, ctx->stale_flat, ctx->stale_flat_len, true, true);
    }
    return conclude(r, ctx, Outcome::error);
}

ngx_int_t await_lookup(ngx_http_request_t* r, RequestCtx* ctx) noexcept {
    if (ctx->lookup == nullptr) {
        count_redis_error();
        return redis_unavailable(r, ctx);
    }
    // Notice a client that goes away while we wait; the pool cleanup then
    // detaches the lookup.
    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_request_empty_handler;
    return NGX_AGAIN;
}

void resume_request(ngx_http_request_t* r) noexcept {
    // Resume from the event loop, outside hiredis's frames: the access phase
    // runs again and answers ctx->rc.
    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;
    ngx_post_event(r->connection->write, &ngx_posted_events);
}

bool roles_allow(const LocConf* lcf, const core::LookupRecord& record) noexcept {
    if (lcf->required_roles == nullptr || lcf->required_roles->nelts == 0) {
        return true;
    }
    auto* roles = static_cast<std::string_view*>(lcf->required_roles->elts);
    for (ngx_uint_t i = 0; i < lcf->required_roles->nelts; ++i) {
        if (core::has_role(record, roles[i])) return true;
    }
    return false;
}

bool has_org_gates(const LocConf* lcf) noexcept {
    return (lcf->required_org_roles != nullptr && lcf->required_org_roles->nelts > 0) ||
           (lcf->required_permissions != nullptr && lcf->required_permissions->nelts > 0);
}

ngx_str_t redis_key(ngx_http_request_t* r, std::string_view kind, std::string_view id) noexcept {
    const MainConf* mcf = main_conf(r);
    ngx_str_t key{0, nullptr};
    std::size_t len = mcf->redis.prefix.len + kind.size() + id.size();
    key.data = static_cast<u_char*>(ngx_pnalloc(r->pool, len));
    if (key.data != nullptr) {
        u_char* p = ngx_cpymem(key.data, mcf->redis.prefix.data, mcf->redis.prefix.len);
        p = ngx_cpymem(p, kind.data(), kind.size());
        ngx_memcpy(p, id.data(), id.size());
        key.len = len;
    }
    return key;
}

namespace {

// The whole record is read (the session with its user's fields): copy it
// out of the reply, which is freed after this callback, cache it and judge
// it. The cache holds the combined record however many reads it took, and
// only a record free of control bytes: a hit is then not scanned again
// (such a record is refused every time, from Redis).
ngx_int_t judge_read(ngx_http_request_t* r, RequestCtx* ctx,
                     const core::LookupRecord& record) noexcept {
    std::size_t len = core::flat_size(record);
    auto* flat = static_cast<unsigned char*>(ngx_pnalloc(r->pool, len));
    if (flat == nullptr) {
        return conclude(r, ctx, Outcome::error);
    }
    core::flat_encode(record, flat);
    bool clean = core::find_control_byte_field(record).empty();
    if (const LocConf* lcf = loc_conf(r); lcf->cache_zone != nullptr && clean) {
        cache_put(lcf->cache_zone, to_view(ctx->token), flat, len,
                  core::session_hash_absent(record), ctx->cache_generation);
    }
    return judge(r, ctx, flat, len, false, clean);
}

ngx_int_t read_failed(ngx_http_request_t* r, RequestCtx* ctx, const redisReply* reply,
                      LookupFailure failure) noexcept {
    if (failure == LookupFailure::timeout) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0, "session_redis: lookup timed out");
    } else if (reply != nullptr && reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "session_redis: lookup failed: %*s",
                      static_cast<size_t>(reply->len), reply->str);
    }
    return redis_unavailable(r, ctx);
}

void on_user_read_done(void* owner, const redisReply* reply, LookupFailure failure) noexcept;

// The one-key read's answer. True when the check goes on with a second read
// (the user hash), false when it has concluded.
bool read_session(ngx_http_request_t* r, RequestCtx* ctx, const redisReply* reply,
                  Lookup* first) noexcept {
    core::LookupRecord record;
    bool user_copied = false;
    if (core::decode_session_read(reply, record, user_copied) != core::DecodeStatus::ok) {
        read_failed(r, ctx, reply, LookupFailure::none);
        return false;
    }
    if (user_copied || !core::needs_user_read(record, now_ms())) {
        judge_read(r, ctx, record);
        return false;
    }
    // A live session without its user's copies (an application's hash, or
    // one written before contract version 2): the user hash decides. The
    // session half waits in the request pool.
    std::size_t len = core::flat_size(record);
    auto* flat = static_cast<unsigned char*>(ngx_pnalloc(r->pool, len));
    std::string_view user_id = *record.get(core::SessionField::user_id);
    ngx_str_t user_key = redis_key(r, "user:", user_id);
    if (flat == nullptr || user_key.data == nullptr) {
        conclude(r, ctx, Outcome::error);
        return false;
    }
    core::flat_encode(record, flat);
    ctx->session_flat = flat;
    ctx->session_flat_len = len;
    ctx->lookup = redis_lookup_user(to_view(user_key), first, ctx, on_user_read_done);
    await_lookup(r, ctx);  // concludes at once when it could not be sent
    return ctx->lookup != nullptr;
}

void on_lookup_done(void* owner, const redisReply* reply, LookupFailure failure) noexcept {
    auto* ctx = static_cast<RequestCtx*>(owner);
    ngx_http_request_t* r = ctx->request;
    Lookup* first = ctx->lookup;
    ctx->lookup = nullptr;

    if (failure != LookupFailure::none) {
        read_failed(r, ctx, reply, failure);
    } else if (read_session(r, ctx, reply, first)) {
        return;  // the request waits on for the user read
    }
    resume_request(r);
}

void on_user_read_done(void* owner, const redisReply* reply, LookupFailure failure) noexcept {
    auto* ctx = static_cast<RequestCtx*>(owner);
    ngx_http_request_t* r = ctx->request;
    ctx->lookup = nullptr;

    core::LookupRecord record;
    if (failure != LookupFailure::none ||
        !core::flat_decode(ctx->session_flat, ctx->session_flat_len, record) ||
        core::decode_user_hmget(reply, record) != core::DecodeStatus::ok) {
        read_failed(r, ctx, reply, failure);
    } else {
        judge_read(r, ctx, record);
    }
    resume_request(r);
}

void detach_lookup(void* data) noexcept {
    auto* ctx = static_cast<RequestCtx*>(data);
    if (ctx->lookup != nullptr) {
        redis_detach(ctx->lookup);
        ctx->lookup = nullptr;
    }
}

ngx_int_t start_check(ngx_http_request_t* r, const LocConf* lcf) noexcept {
    void* mem = ngx_pcalloc(r->pool, sizeof(RequestCtx));
    if (mem == nullptr) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    auto* ctx = new (mem) RequestCtx();
    ctx->request = r;
    ngx_http_set_ctx(r, ctx, ngx_session_module);
    // Detaches a lookup in flight when the request goes away; also how
    // request_ctx() finds the check again after an internal redirect.
    ngx_pool_cleanup_t* cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == nullptr) {
        return fail_internal(r, ctx);
    }
    cln->handler = detach_lookup;
    cln->data = ctx;

    if (lcf->jwt.keys != nullptr && lcf->jwt.handshake.len > 0) {
        // Back from Clerk's Frontend API with fresh cookies to set.
        if (ngx_int_t rc = resolve_handshake(r, ctx, lcf); rc != NGX_DECLINED) {
            return rc;
        }
    }

    const TokenSource* which = nullptr;
    std::optional<std::string_view> token = extract_token(r, lcf, &which);
    if (!token) {
        if (lcf->jwt.keys != nullptr && lcf->jwt.handshake.len > 0) {
            core::HandshakeInput input;
            if (ngx_int_t rc = handshake_if_due(r, ctx, lcf, input, Outcome::missing);
                rc != NGX_DECLINED) {
                return rc;
            }
        }
        return conclude(r, ctx, Outcome::missing);
    }
    TokenSourceKind source = which->kind;
    if (is_better_auth_source(lcf, *which)) {
        return better_auth_check(r, ctx, lcf, *token);
    }
    if (lcf->jwt.keys != nullptr && token->size() <= core::kMaxTokenLength &&
        core::has_two_dots(*token)) {
        bool not_jwt = false;
        ngx_int_t rc = jwt_check(r, ctx, lcf, *token, source == TokenSourceKind::cookie, &not_jwt);
        if (!not_jwt) {
            return rc;
        }
        ctx->jwt = false;  // two dots, but not base64url: an opaque token
    }
    if (!core::is_valid_token(*token)) {
        return conclude(r, ctx, Outcome::invalid);
    }
    ctx->token = copy_to_pool(r->pool, *token);
    if (ctx->token.data == nullptr) {
        return fail_internal(r, ctx);
    }

    if (lcf->cache_zone != nullptr) {
        ctx->cache_generation = cache_generation(lcf->cache_zone);
        CacheRead cached = cache_get(lcf->cache_zone, to_view(ctx->token), r->pool);
        count_cache(cached.state == CacheState::fresh);
        if (cached.state == CacheState::fresh) {
            return judge(r, ctx, cached.flat, cached.flat_len, false, true);
        }
        if (cached.state == CacheState::stale) {
            ctx->stale_flat = cached.flat;
            ctx->stale_flat_len = cached.flat_len;
        }
    }

    // Only now: a cache hit never needs the Redis key.
    ctx->session_key = redis_key(r, "sess:", *token);
    if (ctx->session_key.data == nullptr) {
        return fail_internal(r, ctx);
    }
    ctx->lookup = redis_lookup(to_view(ctx->session_key), ctx, on_lookup_done);
    return await_lookup(r, ctx);
}

// An internal redirect led to another checked location: the session was
// read already, but this location's roles, redirect and fail mode apply.
ngx_int_t rejudge(ngx_http_request_t* r, RequestCtx* ctx) noexcept {
    if (ctx->jwt && ctx->jwt_verified) {
        return jwt_judge(r, ctx, ctx->flat, ctx->flat_len, ctx->record_from_stale);
    }
    if (ctx->flat != nullptr) {
        return judge(r, ctx, ctx->flat, ctx->flat_len, ctx->record_from_stale, false);
    }
    return conclude(r, ctx, ctx->outcome);
}

}  // namespace

RequestCtx* request_ctx(ngx_http_request_t* r) noexcept {
    auto* ctx = static_cast<RequestCtx*>(ngx_http_get_module_ctx(r, ngx_session_module));
    if (ctx != nullptr || !r->internal) {
        return ctx;
    }
    for (ngx_pool_cleanup_t* cln = r->pool->cleanup; cln != nullptr; cln = cln->next) {
        if (cln->handler == detach_lookup) {
            ctx = static_cast<RequestCtx*>(cln->data);
            ngx_http_set_ctx(r, ctx, ngx_session_module);
            return ctx;
        }
    }
    return nullptr;
}

ngx_int_t access_handler(ngx_http_request_t* r) noexcept {
    if (r != r->main) {
        return NGX_DECLINED;  // subrequests inherit the main request's verdict
    }
    const LocConf* lcf = loc_conf(r);
    if (!lcf->check) {
        return NGX_DECLINED;
    }
    RequestCtx* ctx = request_ctx(r);
    if (ctx == nullptr) {
        ngx_int_t rc = start_check(r, lcf);
        // Every answer but NGX_AGAIN is a verdict. A path that failed to
        // record it (an allocation failure in the handshake's code) would
        // leave a request re-entering through error_page waiting forever.
        if (rc != NGX_AGAIN) {
            ctx = static_cast<RequestCtx*>(ngx_http_get_module_ctx(r, ngx_session_module));
            if (ctx != nullptr && !ctx->done) {
                fail_internal(r, ctx);
            }
        }
        return rc;
    }
    if (!ctx->done) {
        return NGX_AGAIN;  // a lookup is in flight
    }
    if (ctx->judged_for == lcf) {
        return ctx->rc;
    }
    return rejudge(r, ctx);
}

}  // namespace session::ngx
