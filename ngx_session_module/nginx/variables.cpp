// $session_* variables: read from the request's check, never from the
// client's headers.
#include "nginx/variables.hpp"

#include "nginx/access.hpp"

namespace session::ngx {
namespace {

enum class Var : uintptr_t {
    id,
    status,
    user_id,
    user_db_id,
    user_role,
    user_roles,
    user_email,
    org_id,
    org_slug,
    org_role,
    org_permissions,
};

constexpr std::string_view kClaimPrefix = "session_claim_";

std::optional<std::string_view> non_empty(std::string_view v) noexcept {
    return v.empty() ? std::nullopt : std::optional(v);
}

// JWT mode: the session and user ids come from the verified token, the
// organization from its claims.
std::optional<std::string_view> jwt_value(const RequestCtx* ctx, Var var) noexcept {
    const core::SessionClaims& claims = ctx->claims;
    switch (var) {
        case Var::id:
            return claims.sid;
        case Var::user_id:
            return claims.sub;
        case Var::org_id:
            return non_empty(claims.org_id);
        case Var::org_slug:
            return non_empty(claims.org_slug);
        case Var::org_role:
            return non_empty(claims.org_role);
        case Var::org_permissions:
            return non_empty(claims.org_permissions);
        default:
            return std::nullopt;
    }
}

std::optional<std::string_view> value_of(const RequestCtx* ctx, Var var) noexcept {
    using core::SessionField;
    using core::UserField;
    switch (var) {
        case Var::status:
            return core::outcome_name(ctx->outcome);
        case Var::id:
            if (!ctx->has_record) return std::nullopt;
            if (ctx->better_auth) return to_view(ctx->better_auth_session_id);
            return ctx->jwt ? ctx->claims.sid : to_view(ctx->token);
        default:
            break;
    }
    if (!ctx->has_record) {
        return std::nullopt;
    }
    if (ctx->jwt) {
        if (auto value = jwt_value(ctx, var)) return value;
    }
    switch (var) {
        case Var::user_id:
            return ctx->record.get(SessionField::user_id);
        case Var::user_db_id:
            return ctx->record.get(UserField::db_id);
        case Var::user_role:
            return ctx->record.get(UserField::role);
        case Var::user_roles:
            return ctx->record.get(UserField::roles);
        case Var::user_email:
            return ctx->record.get(UserField::email);
        default:
            return std::nullopt;
    }
}

ngx_int_t set_value(ngx_http_variable_value_t* v, std::optional<std::string_view> value) noexcept {
    if (!value) {
        v->not_found = 1;
        return NGX_OK;
    }
    v->len = static_cast<unsigned>(value->size());
    v->data = reinterpret_cast<u_char*>(const_cast<char*>(value->data()));
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    return NGX_OK;
}

// A verified token's claims, for as long as the request is let through or
// refused for a role only.
const RequestCtx* jwt_ctx(ngx_http_request_t* r) noexcept {
    const RequestCtx* ctx = request_ctx(r->main);
    if (ctx == nullptr || !ctx->done || !ctx->jwt || !ctx->has_record) {
        return nullptr;
    }
    return ctx;
}

ngx_int_t get_variable(ngx_http_request_t* r, ngx_http_variable_value_t* v,
                       uintptr_t data) noexcept {
    const RequestCtx* ctx = request_ctx(r->main);
    std::optional<std::string_view> value;
    if (ctx != nullptr && ctx->done) {
        value = value_of(ctx, static_cast<Var>(data));
    }
    return set_value(v, value);
}

// $session_token_expires_in: whole seconds until the token's exp.
ngx_int_t get_expires_in(ngx_http_request_t* r, ngx_http_variable_value_t* v, uintptr_t) noexcept {
    const RequestCtx* ctx = jwt_ctx(r);
    if (ctx == nullptr) {
        return set_value(v, std::nullopt);
    }
    auto* digits = static_cast<u_char*>(ngx_pnalloc(r->pool, NGX_INT64_LEN));
    if (digits == nullptr) {
        return NGX_ERROR;
    }
    std::int64_t left = ctx->claims.exp - static_cast<std::int64_t>(ngx_time());
    u_char* end = ngx_sprintf(digits, "%L", left > 0 ? left : 0);
    return set_value(v, std::string_view(reinterpret_cast<char*>(digits), end - digits));
}

// $session_claim_<name>: a top-level string, number or boolean claim. `data`
// is the variable's full name (nginx's prefix variables).
ngx_int_t get_claim(ngx_http_request_t* r, ngx_http_variable_value_t* v, uintptr_t data) noexcept {
    const RequestCtx* ctx = jwt_ctx(r);
    std::string_view name = to_view(*reinterpret_cast<ngx_str_t*>(data));
    std::string_view value;
    if (ctx == nullptr || name.size() <= kClaimPrefix.size() ||
        !ctx->claims.find_scalar(name.substr(kClaimPrefix.size()), value)) {
        return set_value(v, std::nullopt);
    }
    return set_value(v, value);
}

struct VariableSpec {
    ngx_str_t name;
    Var var;
};

VariableSpec kVariables[] = {
    {ngx_string("session_id"), Var::id},
    {ngx_string("session_status"), Var::status},
    {ngx_string("session_user_id"), Var::user_id},
    {ngx_string("session_user_db_id"), Var::user_db_id},
    {ngx_string("session_user_role"), Var::user_role},
    {ngx_string("session_user_roles"), Var::user_roles},
    {ngx_string("session_user_email"), Var::user_email},
    {ngx_string("session_org_id"), Var::org_id},
    {ngx_string("session_org_slug"), Var::org_slug},
    {ngx_string("session_org_role"), Var::org_role},
    {ngx_string("session_org_permissions"), Var::org_permissions},
};

}  // namespace

ngx_int_t add_variables(ngx_conf_t* cf) noexcept {
    for (auto& spec : kVariables) {
        // No-cacheable: a value read before the access phase (in a rewrite
        // `set`, say) must not stick.
        ngx_http_variable_t* var = ngx_http_add_variable(cf, &spec.name, NGX_HTTP_VAR_NOCACHEABLE);
        if (var == nullptr) {
            return NGX_ERROR;
        }
        var->get_handler = get_variable;
        var->data = static_cast<uintptr_t>(spec.var);
    }
    ngx_str_t expires_in = ngx_string("session_token_expires_in");
    ngx_http_variable_t* var = ngx_http_add_variable(cf, &expires_in, NGX_HTTP_VAR_NOCACHEABLE);
    if (var == nullptr) {
        return NGX_ERROR;
    }
    var->get_handler = get_expires_in;
    ngx_str_t claim = ngx_string("session_claim_");
    var = ngx_http_add_variable(cf, &claim, NGX_HTTP_VAR_NOCACHEABLE | NGX_HTTP_VAR_PREFIX);
    if (var == nullptr) {
        return NGX_ERROR;
    }
    var->get_handler = get_claim;
    return NGX_OK;
}

}  // namespace session::ngx
