// better-auth mode's check (better_auth.hpp): signature, cache, one GET, and
// the opaque check's verdict on the record it makes.
#include <hiredis/hiredis.h>

#include "core/better_auth.hpp"
#include "core/flat_record.hpp"
#include "core/token.hpp"
#include "nginx/better_auth.hpp"
#include "nginx/cache_zone.hpp"
#include "nginx/metrics_zone.hpp"
#include "nginx/redis_link.hpp"

namespace session::ngx {
namespace {

using core::Outcome;

// Percent-encoding triples the length at most: anything longer cannot
// decode to a token and signature that fit.
constexpr std::size_t kMaxCookieValue =
    3 * (core::kMaxTokenLength + 1 + core::kBetterAuthSignatureLength);

// Once per worker: a bad writer (or a key that is not better-auth's) would
// otherwise fill the log at request rate. Never the value or the key.
void log_malformed_once(ngx_http_request_t* r, const char* what) noexcept {
    static bool logged = false;
    if (!logged) {
        logged = true;
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "session_better_auth: %s, refused as invalid (logged once per worker)", what);
    }
}

bool signed_by_any(const LocConf* lcf, const core::SignedCookie& cookie) noexcept {
    auto* secrets = static_cast<std::string_view*>(lcf->better_auth.secrets->elts);
    bool match = false;
    // Every secret is tried, so that the time taken does not say which one
    // signed the cookie (it says nothing about the signature either way).
    for (ngx_uint_t i = 0; i < lcf->better_auth.secrets->nelts; ++i) {
        match |= core::signature_matches(cookie.token, cookie.signature, secrets[i]);
    }
    return match;
}

// <tag><key_prefix><token>: a tag byte no opaque token starts with, then the
// Redis key, so that neither an opaque token of the same text nor another
// key_prefix's session shares the entry.
ngx_str_t cache_key_of(ngx_http_request_t* r, std::string_view redis_key) noexcept {
    ngx_str_t key{0, nullptr};
    key.data = static_cast<u_char*>(ngx_pnalloc(r->pool, 1 + redis_key.size()));
    if (key.data != nullptr) {
        key.data[0] = static_cast<u_char>(kBetterAuthKeyTag);
        ngx_memcpy(key.data + 1, redis_key.data(), redis_key.size());
        key.len = 1 + redis_key.size();
    }
    return key;
}

// The session exists no more (nil): a negative entry, and `invalid`.
ngx_int_t judge_absent(ngx_http_request_t* r, RequestCtx* ctx) noexcept {
    core::LookupRecord empty;
    std::size_t len = core::overlay_flat_size({}, empty);
    auto* flat = static_cast<unsigned char*>(ngx_pnalloc(r->pool, len));
    if (flat == nullptr) {
        return conclude(r, ctx, Outcome::error);
    }
    core::overlay_flat_encode({}, empty, flat);
    if (const LocConf* lcf = loc_conf(r); lcf->cache_zone != nullptr) {
        cache_put(lcf->cache_zone, to_view(ctx->overlay_key), flat, len, true,
                  ctx->cache_generation);
    }
    return better_auth_judge(r, ctx, flat, len, false, true);
}

ngx_int_t judge_json(ngx_http_request_t* r, RequestCtx* ctx, std::string_view json) noexcept {
    core::BetterAuthSession session;
    if (core::decode_better_auth(json, to_view(ctx->token), session) !=
        core::BetterAuthDecode::ok) {
        log_malformed_once(r, "a session read from Redis is not better-auth's JSON");
        return conclude(r, ctx, Outcome::invalid);
    }
    core::LookupRecord record = core::to_lookup_record(session);
    std::size_t len = core::overlay_flat_size(session.session_id, record);
    auto* flat = static_cast<unsigned char*>(ngx_pnalloc(r->pool, len));
    if (flat == nullptr) {
        return conclude(r, ctx, Outcome::error);
    }
    core::overlay_flat_encode(session.session_id, record, flat);
    // As for opaque sessions, only a record free of control bytes is
    // cached, so that a hit need not be scanned again.
    bool clean = core::find_control_byte_field(record).empty();
    if (const LocConf* lcf = loc_conf(r); lcf->cache_zone != nullptr && clean) {
        cache_put(lcf->cache_zone, to_view(ctx->overlay_key), flat, len, false,
                  ctx->cache_generation);
    }
    return better_auth_judge(r, ctx, flat, len, false, clean);
}

ngx_int_t judge_reply(ngx_http_request_t* r, RequestCtx* ctx, const redisReply* reply) noexcept {
    switch (reply->type) {
        case REDIS_REPLY_NIL:
            return judge_absent(r, ctx);
        case REDIS_REPLY_STRING:
            return judge_json(r, ctx, std::string_view(reply->str, reply->len));
        case REDIS_REPLY_ERROR: {
            std::string_view error(reply->str, reply->len);
            if (error.substr(0, 9) == "WRONGTYPE") {
                // Not a session better-auth wrote: Redis answered, the key
                // is simply not one. (Counted as a Redis error by the link.)
                log_malformed_once(r, "the key of a session is not a string");
                return conclude(r, ctx, Outcome::invalid);
            }
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "session_redis: lookup failed: %*s",
                          error.size(), error.data());
            return redis_unavailable(r, ctx);
        }
        default:  // a shape GET never returns
            count_redis_error();
            return redis_unavailable(r, ctx);
    }
}

void on_better_auth_read(void* owner, const redisReply* reply, LookupFailure failure) noexcept {
    auto* ctx = static_cast<RequestCtx*>(owner);
    ngx_http_request_t* r = ctx->request;
    ctx->lookup = nullptr;
    if (failure == LookupFailure::timeout) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0, "session_redis: lookup timed out");
        redis_unavailable(r, ctx);
    } else if (failure != LookupFailure::none || reply == nullptr) {
        redis_unavailable(r, ctx);
    } else {
        judge_reply(r, ctx, reply);
    }
    resume_request(r);
}

}  // namespace

ngx_int_t better_auth_check(ngx_http_request_t* r, RequestCtx* ctx, const LocConf* lcf,
                            std::string_view cookie_value) noexcept {
    ctx->better_auth = true;
    if (cookie_value.size() > kMaxCookieValue) {
        return conclude(r, ctx, Outcome::invalid);
    }
    // better-call percent-encodes the whole `<token>.<signature>`
    // (encodeURIComponent): the signature's + / = arrive as %2B %2F %3D.
    auto* decoded = static_cast<u_char*>(ngx_pnalloc(r->pool, cookie_value.size()));
    if (decoded == nullptr) {
        return fail_internal(r, ctx);
    }
    u_char* dst = decoded;
    auto* src = reinterpret_cast<u_char*>(const_cast<char*>(cookie_value.data()));
    ngx_unescape_uri(&dst, &src, cookie_value.size(), 0);
    std::string_view value(reinterpret_cast<char*>(decoded), dst - decoded);

    std::optional<core::SignedCookie> cookie = core::split_signed_cookie(value);
    if (!cookie || !signed_by_any(lcf, *cookie)) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "session_better_auth: cookie refused: %s",
                      cookie ? "bad signature" : "not a signed better-auth cookie");
        return conclude(r, ctx, Outcome::invalid);
    }
    ctx->token = {cookie->token.size(), decoded};  // the token starts the decoded value
    const BetterAuthConf& ba = lcf->better_auth;
    std::size_t key_len = ba.key_prefix.len + ctx->token.len;
    ctx->session_key.data = static_cast<u_char*>(ngx_pnalloc(r->pool, key_len));
    if (ctx->session_key.data == nullptr) {
        return fail_internal(r, ctx);
    }
    ngx_memcpy(ngx_cpymem(ctx->session_key.data, ba.key_prefix.data, ba.key_prefix.len),
               ctx->token.data, ctx->token.len);
    ctx->session_key.len = key_len;

    if (lcf->cache_zone != nullptr) {
        ctx->overlay_key = cache_key_of(r, to_view(ctx->session_key));
        if (ctx->overlay_key.data == nullptr) {
            return fail_internal(r, ctx);
        }
        ctx->cache_generation = cache_generation(lcf->cache_zone);
        CacheRead cached = cache_get(lcf->cache_zone, to_view(ctx->overlay_key), r->pool);
        count_cache(cached.state == CacheState::fresh);
        if (cached.state == CacheState::fresh) {
            return better_auth_judge(r, ctx, cached.flat, cached.flat_len, false, true);
        }
        if (cached.state == CacheState::stale) {
            ctx->stale_flat = cached.flat;
            ctx->stale_flat_len = cached.flat_len;
        }
    }
    ctx->lookup = redis_lookup_string(to_view(ctx->session_key), ctx, on_better_auth_read);
    return await_lookup(r, ctx);
}

ngx_int_t better_auth_judge(ngx_http_request_t* r, RequestCtx* ctx, const unsigned char* flat,
                            std::size_t flat_len, bool from_stale, bool fields_checked) noexcept {
    std::string_view session_id;
    if (!core::overlay_flat_decode(flat, flat_len, session_id, ctx->record)) {
        return conclude(r, ctx, Outcome::error);
    }
    ctx->flat = flat;
    ctx->flat_len = flat_len;
    ctx->record_from_stale = from_stale;
    ctx->has_record = true;
    ctx->better_auth_session_id = {session_id.size(),
                                   reinterpret_cast<u_char*>(const_cast<char*>(session_id.data()))};
    const LocConf* lcf = loc_conf(r);
    core::Policy policy;
    policy.fields_checked = fields_checked;
    if (lcf->required_roles != nullptr) {
        policy.required_roles = static_cast<std::string_view*>(lcf->required_roles->elts);
        policy.required_role_count = lcf->required_roles->nelts;
    }
    // No session_touch: better-auth refreshes its own sessions (updateAge).
    core::Verdict verdict = core::evaluate(ctx->record, now_ms(), policy);
    if (verdict.outcome == Outcome::ok && has_org_gates(lcf)) {
        verdict.outcome = Outcome::forbidden;  // no active organization here
    }
    if (verdict.outcome == Outcome::ok && from_stale) {
        return conclude(r, ctx, Outcome::stale);
    }
    if (verdict.outcome == Outcome::invalid) {
        log_if_control_bytes(r, ctx->record);
    }
    return conclude(r, ctx, verdict.outcome);
}

void better_auth_key_deleted(ngx_shm_zone_t* zone, std::string_view key) noexcept {
    // cache_remove() bounds its keys to a token's length.
    u_char tagged[core::kMaxTokenLength];
    if (key.empty() || key.size() + 1 > sizeof(tagged)) {
        return;
    }
    tagged[0] = static_cast<u_char>(kBetterAuthKeyTag);
    ngx_memcpy(tagged + 1, key.data(), key.size());
    cache_remove(zone, std::string_view(reinterpret_cast<char*>(tagged), key.size() + 1));
}

}  // namespace session::ngx
