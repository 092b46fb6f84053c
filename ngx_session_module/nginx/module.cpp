// ngx_session_module: directives, configuration and the module definition.
// The check itself is in access.cpp; the Redis connection in redis_link.cpp,
// session_redis in redis_directive.cpp.
#include "nginx/directive_text.hpp"
#include "nginx/ngx.hpp"

#include <new>
#include <string>

#include "core/token.hpp"
#include "nginx/access.hpp"
#include "nginx/better_auth.hpp"
#include "nginx/cache_zone.hpp"
#include "nginx/conf.hpp"
#include "nginx/jwt_directives.hpp"
#include "nginx/jwt_key_store.hpp"
#include "nginx/metrics_zone.hpp"
#include "nginx/redis_directive.hpp"
#include "nginx/redis_link.hpp"
#include "nginx/strip_headers.hpp"
#include "nginx/variables.hpp"

namespace session::ngx {
namespace {

// session_token cookie=NAME | header=NAME | bearer ...
char* token_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept {
    auto* lcf = static_cast<LocConf*>(conf);
    if (lcf->token_sources != nullptr) {
        return const_cast<char*>("is duplicate");
    }
    lcf->token_sources = ngx_array_create(cf->pool, cf->args->nelts - 1, sizeof(TokenSource));
    if (lcf->token_sources == nullptr) {
        return kConfError;
    }
    auto* value = static_cast<ngx_str_t*>(cf->args->elts);
    for (ngx_uint_t i = 1; i < cf->args->nelts; ++i) {
        auto* source = static_cast<TokenSource*>(ngx_array_push(lcf->token_sources));
        if (source == nullptr) {
            return kConfError;
        }
        const ngx_str_t& arg = value[i];
        if (to_view(arg) == "bearer") {
            *source = {TokenSourceKind::bearer, {0, nullptr}};
        } else if (starts_with(arg, "cookie=") && arg.len > 7) {
            *source = {TokenSourceKind::cookie, after(arg, 7)};
        } else if (starts_with(arg, "header=") && arg.len > 7) {
            *source = {TokenSourceKind::header, after(arg, 7)};
        } else {
            return invalid_parameter(cf, cmd, arg);
        }
    }
    return NGX_CONF_OK;
}

// session_require_role ROLE ...
char* require_role_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept {
    auto* lcf = static_cast<LocConf*>(conf);
    if (lcf->required_roles != nullptr) {
        return const_cast<char*>("is duplicate");
    }
    lcf->required_roles = ngx_array_create(cf->pool, cf->args->nelts - 1, sizeof(std::string_view));
    if (lcf->required_roles == nullptr) {
        return kConfError;
    }
    auto* value = static_cast<ngx_str_t*>(cf->args->elts);
    for (ngx_uint_t i = 1; i < cf->args->nelts; ++i) {
        std::string_view role = to_view(value[i]);
        if (role.empty() || role.find_first_of(" \t") != std::string_view::npos) {
            return invalid_value(cf, cmd, value[i]);
        }
        void* slot = ngx_array_push(lcf->required_roles);
        if (slot == nullptr) {
            return kConfError;
        }
        new (slot) std::string_view(role);
    }
    return NGX_CONF_OK;
}

// session_cache NAME | off
char* cache_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept {
    auto* lcf = static_cast<LocConf*>(conf);
    if (lcf->cache_zone != NGX_CONF_UNSET_PTR) {
        return const_cast<char*>("is duplicate");
    }
    auto* value = static_cast<ngx_str_t*>(cf->args->elts);
    if (to_view(value[1]) == "off") {
        lcf->cache_zone = nullptr;
        return NGX_CONF_OK;
    }
    // Size 0: a reference, resolved against session_cache_zone in merge.
    lcf->cache_zone = ngx_shared_memory_add(cf, &value[1], 0, &ngx_session_module);
    return lcf->cache_zone != nullptr ? NGX_CONF_OK : kConfError;
}

// session_touch TIME | off
char* touch_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept {
    auto* lcf = static_cast<LocConf*>(conf);
    if (lcf->touch != NGX_CONF_UNSET_MSEC) {
        return const_cast<char*>("is duplicate");
    }
    auto* value = static_cast<ngx_str_t*>(cf->args->elts);
    if (to_view(value[1]) == "off") {
        lcf->touch = 0;
        return NGX_CONF_OK;
    }
    ngx_int_t ms = ngx_parse_time(&value[1], 0);
    if (ms == NGX_ERROR || ms < 1000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\" directive, it must be at least 1s",
                           &value[1], &cmd->name);
        return kConfError;
    }
    lcf->touch = static_cast<ngx_msec_t>(ms);
    return NGX_CONF_OK;
}

// session_fail_mode closed | open (ngx_conf_set_enum_slot's own message
// would not name the directive).
char* fail_mode_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept {
    auto* lcf = static_cast<LocConf*>(conf);
    if (lcf->fail_mode != NGX_CONF_UNSET_UINT) {
        return const_cast<char*>("is duplicate");
    }
    auto* value = static_cast<ngx_str_t*>(cf->args->elts);
    if (to_view(value[1]) == "closed") {
        lcf->fail_mode = kFailClosed;
    } else if (to_view(value[1]) == "open") {
        lcf->fail_mode = kFailOpen;
    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\" directive, it must be \"closed\" or "
                           "\"open\"",
                           &value[1], &cmd->name);
        return kConfError;
    }
    return NGX_CONF_OK;
}

char* metrics_directive(ngx_conf_t* cf, ngx_command_t*, void*) noexcept {
    auto* clcf = static_cast<ngx_http_core_loc_conf_t*>(
        ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module));
    clcf->handler = metrics_handler;
    return NGX_CONF_OK;
}

constexpr ngx_uint_t kAnyLevel = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

ngx_command_t kCommands[] = {
    {ngx_string("session_redis"), NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE, redis_directive,
     NGX_HTTP_MAIN_CONF_OFFSET, 0, nullptr},
    {ngx_string("session_cache_zone"), NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE, cache_zone_directive,
     NGX_HTTP_MAIN_CONF_OFFSET, 0, nullptr},
    {ngx_string("session_check"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_FLAG,
     ngx_conf_set_flag_slot, NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, check), nullptr},
    {ngx_string("session_token"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_1MORE, token_directive,
     NGX_HTTP_LOC_CONF_OFFSET, 0, nullptr},
    {ngx_string("session_require_role"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_1MORE,
     require_role_directive, NGX_HTTP_LOC_CONF_OFFSET, 0, nullptr},
    {ngx_string("session_redirect"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
     ngx_http_set_complex_value_slot, NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, redirect),
     nullptr},
    {ngx_string("session_fail_mode"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
     fail_mode_directive, NGX_HTTP_LOC_CONF_OFFSET, 0, nullptr},
    {ngx_string("session_cache"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1, cache_directive,
     NGX_HTTP_LOC_CONF_OFFSET, 0, nullptr},
    {ngx_string("session_touch"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1, touch_directive,
     NGX_HTTP_LOC_CONF_OFFSET, 0, nullptr},
    {ngx_string("session_metrics"), NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS, metrics_directive,
     NGX_HTTP_LOC_CONF_OFFSET, 0, nullptr},
    {ngx_string("session_jwt_keys"), kAnyLevel | NGX_CONF_1MORE, jwt_keys_directive,
     NGX_HTTP_LOC_CONF_OFFSET, 0, nullptr},
    {ngx_string("session_jwt_issuer"), kAnyLevel | NGX_CONF_TAKE1, jwt_issuer_directive,
     NGX_HTTP_LOC_CONF_OFFSET, 0, nullptr},
    {ngx_string("session_jwt_authorized_parties"), kAnyLevel | NGX_CONF_1MORE,
     jwt_authorized_parties_directive, NGX_HTTP_LOC_CONF_OFFSET, 0, nullptr},
    {ngx_string("session_jwt_leeway"), kAnyLevel | NGX_CONF_TAKE1, jwt_leeway_directive,
     NGX_HTTP_LOC_CONF_OFFSET, 0, nullptr},
    {ngx_string("session_jwt_session"), kAnyLevel | NGX_CONF_TAKE1, jwt_session_directive,
     NGX_HTTP_LOC_CONF_OFFSET, 0, nullptr},
    {ngx_string("session_jwt_role_claim"), kAnyLevel | NGX_CONF_TAKE1, jwt_role_claim_directive,
     NGX_HTTP_LOC_CONF_OFFSET, 0, nullptr},
    {ngx_string("session_jwt_handshake"), kAnyLevel | NGX_CONF_TAKE1, jwt_handshake_directive,
     NGX_HTTP_LOC_CONF_OFFSET, 0, nullptr},
    {ngx_string("session_require_org_role"), kAnyLevel | NGX_CONF_1MORE, word_list_directive,
     NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, required_org_roles), nullptr},
    {ngx_string("session_require_permission"), kAnyLevel | NGX_CONF_1MORE, word_list_directive,
     NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, required_permissions), nullptr},
    {ngx_string("session_strip_headers"), kAnyLevel | NGX_CONF_1MORE, strip_headers_directive,
     NGX_HTTP_LOC_CONF_OFFSET, 0, nullptr},
    {ngx_string("session_better_auth"), kAnyLevel | NGX_CONF_1MORE, better_auth_directive,
     NGX_HTTP_LOC_CONF_OFFSET, 0, nullptr},
    ngx_null_command,
};

void* create_main_conf(ngx_conf_t* cf) noexcept {
    auto* mcf = static_cast<MainConf*>(ngx_pcalloc(cf->pool, sizeof(MainConf)));
    if (mcf == nullptr) {
        return nullptr;
    }
    mcf->redis.db = -1;
    mcf->redis.timeout = 50;
    mcf->redis.connect_timeout = 200;
    return mcf;
}

void* create_loc_conf(ngx_conf_t* cf) noexcept {
    auto* lcf = static_cast<LocConf*>(ngx_pcalloc(cf->pool, sizeof(LocConf)));
    if (lcf == nullptr) {
        return nullptr;
    }
    // pcalloc leaves token_sources, required_roles, redirect null: unset.
    lcf->check = NGX_CONF_UNSET;
    lcf->fail_mode = NGX_CONF_UNSET_UINT;
    lcf->cache_zone = static_cast<ngx_shm_zone_t*>(NGX_CONF_UNSET_PTR);
    lcf->touch = NGX_CONF_UNSET_MSEC;
    init_jwt_conf(&lcf->jwt);
    return lcf;
}

// Without session_token: Clerk's cookie, then Authorization: Bearer.
ngx_array_t* default_token_sources(ngx_conf_t* cf) noexcept {
    ngx_array_t* sources = ngx_array_create(cf->pool, 2, sizeof(TokenSource));
    if (sources == nullptr) {
        return nullptr;
    }
    auto* cookie = static_cast<TokenSource*>(ngx_array_push(sources));
    auto* bearer = static_cast<TokenSource*>(ngx_array_push(sources));
    if (cookie == nullptr || bearer == nullptr) {
        return nullptr;
    }
    *cookie = {TokenSourceKind::cookie, literal("__session")};
    *bearer = {TokenSourceKind::bearer, {0, nullptr}};
    return sources;
}

char* merge_loc_conf(ngx_conf_t* cf, void* parent_ptr, void* child_ptr) noexcept {
    auto* prev = static_cast<LocConf*>(parent_ptr);
    auto* conf = static_cast<LocConf*>(child_ptr);

    ngx_conf_merge_value(conf->check, prev->check, 0);
    ngx_conf_merge_uint_value(conf->fail_mode, prev->fail_mode, kFailClosed);
    ngx_conf_merge_ptr_value(conf->cache_zone, prev->cache_zone, nullptr);
    ngx_conf_merge_msec_value(conf->touch, prev->touch, 0);
    if (conf->redirect == nullptr) conf->redirect = prev->redirect;
    if (conf->required_roles == nullptr) conf->required_roles = prev->required_roles;
    if (conf->required_org_roles == nullptr) conf->required_org_roles = prev->required_org_roles;
    if (conf->required_permissions == nullptr) {
        conf->required_permissions = prev->required_permissions;
    }
    if (merge_jwt_conf(cf, &prev->jwt, &conf->jwt) != NGX_CONF_OK) {
        return kConfError;
    }
    merge_better_auth_conf(&prev->better_auth, &conf->better_auth);
    if (conf->token_sources == nullptr && conf->better_auth.secrets != nullptr &&
        (prev->token_sources == nullptr ||
         conf->better_auth.secrets != prev->better_auth.secrets)) {
        // better-auth mode without session_token: better-auth's cookie.
        conf->token_sources = better_auth_token_sources(cf, conf->better_auth);
        if (conf->token_sources == nullptr) {
            return kConfError;
        }
    }
    if (conf->token_sources == nullptr) {
        conf->token_sources =
            prev->token_sources != nullptr ? prev->token_sources : default_token_sources(cf);
        if (conf->token_sources == nullptr) {
            return kConfError;
        }
        prev->token_sources = conf->token_sources;  // build the default once
    }

    conf->bearer_configured = 0;
    conf->session_cookie = {0, nullptr};
    auto* sources = static_cast<TokenSource*>(conf->token_sources->elts);
    for (ngx_uint_t i = 0; i < conf->token_sources->nelts; ++i) {
        if (sources[i].kind == TokenSourceKind::bearer) conf->bearer_configured = 1;
        if (sources[i].kind == TokenSourceKind::cookie && conf->session_cookie.len == 0) {
            conf->session_cookie = sources[i].name;
        }
    }

    if (merge_strip_headers(cf, prev, conf) != NGX_CONF_OK) {
        return kConfError;
    }
    if (conf->cache_zone != nullptr && conf->cache_zone->data == nullptr) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown session_cache_zone \"%V\" in \"session_cache\" directive",
                           &conf->cache_zone->shm.name);
        return kConfError;
    }
    // A location that only verifies JWTs (session_jwt_session off) needs no
    // Redis; one that may meet an opaque token or read the overlay does.
    bool needs_redis = conf->jwt.keys == nullptr ||
                       conf->jwt.session_mode != static_cast<ngx_uint_t>(core::JwtSessionMode::off);
    if (conf->check == 1 && needs_redis) {
        auto* mcf =
            static_cast<MainConf*>(ngx_http_conf_get_module_main_conf(cf, ngx_session_module));
        if (!mcf->redis.configured) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"session_check\" is on, but no \"session_redis\" is set in the "
                               "http block");
            return kConfError;
        }
    }
    return NGX_CONF_OK;
}

ngx_int_t preconfiguration(ngx_conf_t* cf) noexcept {
    return add_variables(cf);
}

ngx_int_t postconfiguration(ngx_conf_t* cf) noexcept {
    auto* cmcf = static_cast<ngx_http_core_main_conf_t*>(
        ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module));
    auto* h = static_cast<ngx_http_handler_pt*>(
        ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers));
    if (h == nullptr) {
        return NGX_ERROR;
    }
    *h = access_handler;
    h = static_cast<ngx_http_handler_pt*>(
        ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers));
    if (h == nullptr) {
        return NGX_ERROR;
    }
    *h = strip_headers_handler;
    return NGX_OK;
}

const MainConf* g_main_conf = nullptr;  // this worker's, for revocations

void drop_revoked(const core::Revocation& revocation) noexcept {
    if (revocation.kind == core::RevocationKind::keys) {
        jwks_reload();  // one GET here; the other workers follow the shared zone
        return;
    }
    if (g_main_conf == nullptr || g_main_conf->cache_zones == nullptr) {
        return;
    }
    auto** zones = static_cast<ngx_shm_zone_t**>(g_main_conf->cache_zones->elts);
    for (ngx_uint_t i = 0; i < g_main_conf->cache_zones->nelts; ++i) {
        if (revocation.kind == core::RevocationKind::session) {
            cache_remove(zones[i], revocation.id);
        } else if (revocation.kind == core::RevocationKind::deleted_key) {
            better_auth_key_deleted(zones[i], revocation.id);
        } else {
            cache_remove_user(zones[i], revocation.id);
        }
    }
}

// The subscriber was away: what was published meanwhile is lost, so no
// cached entry is fresh any more. Each still serves as stale while Redis
// cannot answer.
void expire_cached() noexcept {
    jwks_reload();  // a `keys` message may have been missed too
    if (g_main_conf == nullptr || g_main_conf->cache_zones == nullptr) {
        return;
    }
    auto** zones = static_cast<ngx_shm_zone_t**>(g_main_conf->cache_zones->elts);
    for (ngx_uint_t i = 0; i < g_main_conf->cache_zones->nelts; ++i) {
        cache_expire_all(zones[i]);
    }
}

ngx_int_t init_process(ngx_cycle_t* cycle) noexcept {
    // Workers only: not the cache manager or loader (they run init_process
    // too), and never the master.
    if (ngx_process != NGX_PROCESS_WORKER && ngx_process != NGX_PROCESS_SINGLE) {
        return NGX_OK;
    }
    if (cycle->conf_ctx[ngx_http_module.index] == nullptr) {
        return NGX_OK;  // no http block
    }
    const MainConf* mcf = cycle_main_conf(cycle);
    if (mcf == nullptr || !mcf->redis.configured) {
        return NGX_OK;
    }
    bind_metrics(mcf->metrics_zone);
    register_worker();
    g_main_conf = mcf;
    // The cache zones are shared: one subscriber (worker 0) drops revoked
    // entries for every worker, and reads a new key set for all of them.
    bool listens =
        (mcf->cache_zones != nullptr && mcf->cache_zones->nelts > 0) || mcf->jwks_zone != nullptr;
    bool subscribe = listens && (ngx_worker == 0 || ngx_process == NGX_PROCESS_SINGLE);
    redis_start(cycle, mcf, subscribe ? drop_revoked : nullptr, expire_cached);
    jwks_start(cycle, mcf);
    return NGX_OK;
}

void exit_process(ngx_cycle_t*) noexcept {
    jwks_stop();
    redis_stop();
    unregister_worker();
    g_main_conf = nullptr;
}

// Runs for every new cycle. With master_process off, a reload builds the
// new cycle in the same process and never runs init_process again, so a
// link started for the old cycle would keep pointing into its freed
// configuration: stop it while the old cycle is still alive. (nginx 1.22
// itself does not serve reliably after such a reload; a restart does.)
ngx_int_t init_module(ngx_cycle_t* cycle) noexcept {
    if (ngx_process == NGX_PROCESS_SINGLE && g_main_conf != nullptr) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "session_redis: reload with master_process off is not supported, "
                      "the Redis connection is closed: restart nginx");
        jwks_stop();
        redis_stop();
        unregister_worker();
        g_main_conf = nullptr;
    }
    return NGX_OK;
}

ngx_http_module_t kModuleCtx = {
    preconfiguration, postconfiguration, create_main_conf, nullptr,
    nullptr,          nullptr,           create_loc_conf,  merge_loc_conf,
};

}  // namespace
}  // namespace session::ngx

extern "C" {
ngx_module_t ngx_session_module = {
    NGX_MODULE_V1,
    &session::ngx::kModuleCtx,
    session::ngx::kCommands,
    NGX_HTTP_MODULE,
    nullptr,                     // init master
    session::ngx::init_module,   // init module
    session::ngx::init_process,  // init process
    nullptr,                     // init thread
    nullptr,                     // exit thread
    session::ngx::exit_process,  // exit process
    nullptr,                     // exit master
    NGX_MODULE_V1_PADDING,
};
}
