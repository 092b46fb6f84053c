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
};

std::optional<std::string_view> value_of(const RequestCtx* ctx, Var var) noexcept {
    using core::SessionField;
    using core::UserField;
    switch (var) {
        case Var::status:
            return core::outcome_name(ctx->outcome);
        case Var::id:
            return ctx->has_record ? std::optional(to_view(ctx->token)) : std::nullopt;
        default:
            break;
    }
    if (!ctx->has_record) {
        return std::nullopt;
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

ngx_int_t get_variable(ngx_http_request_t* r, ngx_http_variable_value_t* v,
                       uintptr_t data) noexcept {
    const RequestCtx* ctx = request_ctx(r->main);
    std::optional<std::string_view> value;
    if (ctx != nullptr && ctx->done) {
        value = value_of(ctx, static_cast<Var>(data));
    }
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
    return NGX_OK;
}

}  // namespace session::ngx
