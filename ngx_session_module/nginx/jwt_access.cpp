#include "nginx/jwt_access.hpp"

#include <string>

#include "core/flat_record.hpp"
#include "core/jwt_key_source.hpp"
#include "core/overlay.hpp"
#include "nginx/cache_zone.hpp"
#include "nginx/clerk_handshake.hpp"
#include "nginx/jwt_key_store.hpp"
#include "nginx/metrics_zone.hpp"
#include "nginx/redis_link.hpp"

namespace session::ngx {
namespace {

using core::JwtError;
using core::Outcome;

core::ClaimPolicy claim_policy(const LocConf* lcf) noexcept {
    core::ClaimPolicy policy;
    policy.issuer = to_view(lcf->jwt.issuer);
    if (lcf->jwt.authorized_parties != nullptr) {
        policy.authorized_parties =
            static_cast<std::string_view*>(lcf->jwt.authorized_parties->elts);
        policy.authorized_party_count = lcf->jwt.authorized_parties->nelts;
    }
    policy.leeway_s = static_cast<std::int64_t>(lcf->jwt.leeway);
    return policy;
}

core::OrgPolicy org_policy(const LocConf* lcf) noexcept {
    core::OrgPolicy policy;
    if (lcf->required_org_roles != nullptr) {
        policy.roles = static_cast<std::string_view*>(lcf->required_org_roles->elts);
        policy.role_count = lcf->required_org_roles->nelts;
    }
    if (lcf->required_permissions != nullptr) {
        policy.permissions = static_cast<std::string_view*>(lcf->required_permissions->elts);
        policy.permission_count = lcf->required_permissions->nelts;
    }
    return policy;
}

core::JwtSessionMode session_mode(const LocConf* lcf) noexcept {
    return static_cast<core::JwtSessionMode>(lcf->jwt.session_mode);
}

bool handshake_enabled(const LocConf* lcf) noexcept {
    return lcf->jwt.handshake.len > 0;
}

// A refused token is `invalid`, unless it came in the cookie and is merely
// out of date: then Clerk's Frontend API can hand the browser a fresh one.
ngx_int_t refuse(ngx_http_request_t* r, RequestCtx* ctx, const LocConf* lcf, JwtError error,
                 bool from_cookie, const core::SessionClaims* claims) noexcept {
    // The reason only: never the token or its claims.
    std::string_view reason = core::jwt_error_name(error);
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0, "session_jwt: token refused: %*s",
                  reason.size(), reason.data());
    if (from_cookie && handshake_enabled(lcf)) {
        core::HandshakeInput input;
        input.has_session_cookie = true;
        input.token_error = error;
        if (claims != nullptr) {
            input.token_has_iat = claims->has_iat;
            input.token_iat = claims->iat;
        }
        if (ngx_int_t rc = handshake_if_due(r, ctx, lcf, input, Outcome::invalid);
            rc != NGX_DECLINED) {
            return rc;
        }
    }
    return conclude(r, ctx, Outcome::invalid);
}

// The cache key of a verified token's claims: a tag byte and a digest.
struct ClaimsKey {
    u_char bytes[1 + 32];
    bool usable = false;
    std::string_view view() const noexcept {
        return {reinterpret_cast<const char*>(bytes), sizeof(bytes)};
    }
};

// Keyed by the digest of the token's signature segment, not of the whole
// token (a quarter of the bytes to hash, on every request): an RS*
// signature is a deterministic function of the signed header and payload,
// and an entry is only written for a token whose signature verified, so a
// token that finds the entry either is that token or carries its signature,
// and then gets exactly the claims that signature vouches for (the policy
// and the clock are checked again on every use).
ClaimsKey claims_key(const LocConf* lcf, const std::array<unsigned char, 32>& verifier,
                     std::string_view token) noexcept {
    ClaimsKey key;
    std::array<unsigned char, 32> digest;
    std::string_view signature = token.substr(token.rfind('.') + 1);
    if (lcf->cache_zone != nullptr && core::token_digest(verifier, signature, digest)) {
        key.bytes[0] = static_cast<u_char>(kClaimsKeyTag);
        ngx_memcpy(key.bytes + 1, digest.data(), digest.size());
        key.usable = true;
    }
    return key;
}

// The claims of `token` into ctx: from the cache, or verified now
// (`*verified_now`; the signature is what costs).
JwtError obtain_claims(ngx_http_request_t* r, RequestCtx* ctx, const LocConf* lcf,
                       const core::JwtKeys& keys, std::string_view token, const ClaimsKey& key,
                       bool* verified_now, bool* not_jwt) noexcept {
    *verified_now = false;
    if (key.usable) {
        CacheRead cached = cache_get(lcf->cache_zone, key.view(), r->pool);
        if (cached.state == CacheState::fresh &&
            core::decode_claims(cached.flat, cached.flat_len, ctx->claims)) {
            ctx->claims_flat = cached.flat;
            ctx->claims_flat_len = cached.flat_len;
            return JwtError::none;
        }
    }
    if (!core::looks_like_jwt(token)) {
        *not_jwt = true;
        return JwtError::malformed;
    }
    // Reused: one worker verifies one token at a time, and the pool copy
    // below is what the request keeps.
    static std::string flat;
    JwtError error;
    try {
        error = core::verify_session_token(token, keys, to_view(lcf->jwt.role_claim), flat);
    } catch (...) {
        error = JwtError::malformed;  // out of memory: refuse, never pass
    }
    if (error != JwtError::none) {
        return error;
    }
    ngx_str_t copy = copy_to_pool(r->pool, flat);
    if (copy.data == nullptr || !core::decode_claims(copy.data, copy.len, ctx->claims)) {
        return JwtError::malformed;
    }
    ctx->claims_flat = copy.data;
    ctx->claims_flat_len = copy.len;
    *verified_now = true;
    return JwtError::none;
}

void on_overlay_done(void* owner, const core::LookupRecord* record,
                     LookupFailure failure) noexcept {
    auto* ctx = static_cast<RequestCtx*>(owner);
    ngx_http_request_t* r = ctx->request;
    ctx->lookup = nullptr;

    if (failure == LookupFailure::none && record != nullptr) {
        // Copy out of the reply, which hiredis frees after this callback.
        std::size_t len = core::overlay_flat_size(ctx->claims.sub, *record);
        auto* flat = static_cast<unsigned char*>(ngx_pnalloc(r->pool, len));
        if (flat == nullptr) {
            conclude(r, ctx, Outcome::error);
        } else {
            core::overlay_flat_encode(ctx->claims.sub, *record, flat);
            if (const LocConf* lcf = loc_conf(r); lcf->cache_zone != nullptr) {
                cache_put(lcf->cache_zone, to_view(ctx->overlay_key), flat, len, false,
                          ctx->cache_generation);
            }
            jwt_judge(r, ctx, flat, len, false);
        }
    } else {
        if (failure == LookupFailure::timeout) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "session_redis: overlay read timed out");
        }
        redis_unavailable(r, ctx);
    }
    resume_request(r);
}

// The overlay of a verified token: from the cache, or read from Redis.
ngx_int_t read_overlay(ngx_http_request_t* r, RequestCtx* ctx, const LocConf* lcf) noexcept {
    std::string_view sid = ctx->claims.sid;
    ctx->overlay_key.len = 1 + sid.size();
    ctx->overlay_key.data = static_cast<u_char*>(ngx_pnalloc(r->pool, ctx->overlay_key.len));
    if (ctx->overlay_key.data == nullptr) {
        return fail_internal(r, ctx);
    }
    ctx->overlay_key.data[0] = static_cast<u_char>(kOverlayKeyTag);
    ngx_memcpy(ctx->overlay_key.data + 1, sid.data(), sid.size());

    if (lcf->cache_zone != nullptr) {
        ctx->cache_generation = cache_generation(lcf->cache_zone);
        CacheRead cached = cache_get(lcf->cache_zone, to_view(ctx->overlay_key), r->pool);
        std::string_view sub;
        bool same_user = cached.state != CacheState::miss &&
                         core::overlay_flat_subject(cached.flat, cached.flat_len, sub) &&
                         sub == ctx->claims.sub;
        count_cache(cached.state == CacheState::fresh && same_user);
        if (cached.state == CacheState::fresh && same_user) {
            return jwt_judge(r, ctx, cached.flat, cached.flat_len, false);
        }
        if (cached.state == CacheState::stale && same_user) {
            ctx->stale_flat = cached.flat;
            ctx->stale_flat_len = cached.flat_len;
        }
    }

    ngx_str_t session_key = redis_key(r, "sess:", sid);
    ngx_str_t user_key = redis_key(r, "user:", ctx->claims.sub);
    if (session_key.data == nullptr || user_key.data == nullptr) {
        return fail_internal(r, ctx);
    }
    ctx->lookup = redis_overlay(to_view(session_key), to_view(user_key), ctx, on_overlay_done);
    return await_lookup(r, ctx);
}

// The key set was read again (session_jwt_keys redis) for a token of an
// unknown kid: verify it once more; it is refused this time if its kid is
// still unknown (the read was just made).
void resume_after_keys(ngx_http_request_t* r, RequestCtx* ctx, std::string_view token,
                       bool from_cookie) noexcept {
    bool not_jwt = false;
    jwt_check(r, ctx, loc_conf(r), token, from_cookie, &not_jwt);
    if (not_jwt) {
        conclude(r, ctx, Outcome::invalid);  // cannot be: it was a JWT before
    }
    // Else concluded, or waiting for the overlay read, whose callback resumes.
    if (ctx->done) {
        resume_request(r);
    }
}

}  // namespace

ngx_int_t jwt_check(ngx_http_request_t* r, RequestCtx* ctx, const LocConf* lcf,
                    std::string_view token, bool from_cookie, bool* not_jwt) noexcept {
    ctx->jwt = true;
    VerifyKeys verify = jwt_verify_keys(lcf);
    ClaimsKey key = claims_key(lcf, *verify.verifier, token);
    bool verified_now = false;
    JwtError error = obtain_claims(r, ctx, lcf, *verify.keys, token, key, &verified_now, not_jwt);
    if (*not_jwt) {
        return NGX_DECLINED;
    }
    if (error != JwtError::none) {
        if (lcf->jwt.redis_keys && core::may_be_unknown_kid(error, verify.kidless) &&
            jwks_wait_for_read(r, ctx, token, from_cookie, resume_after_keys)) {
            return NGX_AGAIN;
        }
        return refuse(r, ctx, lcf, error, from_cookie, nullptr);
    }
    std::int64_t now = static_cast<std::int64_t>(ngx_time());
    error = core::check_claims(ctx->claims, claim_policy(lcf), now);
    if (error != JwtError::none) {
        return refuse(r, ctx, lcf, error, from_cookie, &ctx->claims);
    }
    if (verified_now && key.usable) {
        // Never beyond exp + leeway: past that, check_claims refuses anyway.
        std::int64_t left_s = ctx->claims.exp + static_cast<std::int64_t>(lcf->jwt.leeway) - now;
        if (left_s > 0) {
            cache_put_for(lcf->cache_zone, key.view(), ctx->claims_flat, ctx->claims_flat_len,
                          static_cast<ngx_msec_t>(left_s) * 1000);
        }
    }
    ctx->jwt_verified = true;

    if (from_cookie && handshake_enabled(lcf)) {
        // A valid token older than the client's last sign-in change.
        core::HandshakeInput input;
        input.has_session_cookie = true;
        input.token_has_iat = ctx->claims.has_iat;
        input.token_iat = ctx->claims.iat;
        if (ngx_int_t rc = handshake_if_due(r, ctx, lcf, input, Outcome::invalid);
            rc != NGX_DECLINED) {
            return rc;
        }
    }
    if (session_mode(lcf) == core::JwtSessionMode::off) {
        return jwt_judge(r, ctx, nullptr, 0, false);
    }
    return read_overlay(r, ctx, lcf);
}

ngx_int_t jwt_judge(ngx_http_request_t* r, RequestCtx* ctx, const unsigned char* flat,
                    std::size_t flat_len, bool from_stale) noexcept {
    const LocConf* lcf = loc_conf(r);
    core::LookupRecord record;
    Outcome outcome = Outcome::ok;
    if (flat != nullptr && session_mode(lcf) != core::JwtSessionMode::off) {
        std::string_view sub;
        if (!core::overlay_flat_decode(flat, flat_len, sub, record) || sub != ctx->claims.sub) {
            return conclude(r, ctx, Outcome::error);
        }
        outcome = core::evaluate_overlay(record, ctx->claims.sub, session_mode(lcf), now_ms());
        if (outcome == Outcome::invalid) {
            log_if_control_bytes(r, record);
        }
    }
    ctx->flat = flat;
    ctx->flat_len = flat_len;
    ctx->record_from_stale = from_stale;
    core::fill_identity_from_claims(ctx->claims, record);
    ctx->record = record;
    ctx->has_record = true;
    if (outcome == Outcome::ok &&
        (!roles_allow(lcf, record) || !core::org_policy_allows(ctx->claims, org_policy(lcf)))) {
        outcome = Outcome::forbidden;
    }
    if (outcome == Outcome::ok && from_stale) {
        outcome = Outcome::stale;
    }
    return conclude(r, ctx, outcome);
}

}  // namespace session::ngx
