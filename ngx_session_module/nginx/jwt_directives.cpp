#include "nginx/jwt_directives.hpp"

#include <new>
#include <string>

#include "nginx/directive_text.hpp"
#include "nginx/jwt_key_store.hpp"

namespace session::ngx {
namespace {

constexpr ngx_uint_t kModeUnset = NGX_CONF_UNSET_UINT;
// syncd keeps a session's tombstone for 10 minutes after it ended: a token
// must never verify (60 s lifetime + leeway) beyond that.
constexpr ngx_int_t kMaxLeewaySeconds = 300;
// A key file is a few KiB; anything far larger is not one.
constexpr off_t kMaxKeyFileSize = 1024 * 1024;

void destroy_keys(void* data) noexcept {
    static_cast<core::JwtKeys*>(data)->~JwtKeys();
}

LocConf* loc(void* conf) noexcept {
    return static_cast<LocConf*>(conf);
}

ngx_str_t* args(ngx_conf_t* cf) noexcept {
    return static_cast<ngx_str_t*>(cf->args->elts);
}

bool is_claim_path(std::string_view path) noexcept {
    if (path.empty() || path.front() == '.' || path.back() == '.') return false;
    char previous = 0;
    for (char c : path) {
        bool word = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
        if (!word && !(c == '.' && previous != '.')) return false;
        previous = c;
    }
    return true;
}

// http(s)://host[:port][/path], no query, fragment or credentials.
bool is_frontend_api_url(std::string_view url) noexcept {
    std::size_t scheme = url.rfind("https://", 0) == 0 ? 8 : url.rfind("http://", 0) == 0 ? 7 : 0;
    if (scheme == 0 || url.size() == scheme) return false;
    for (char c : url.substr(scheme)) {
        if (c == '?' || c == '#' || c == '@' || c == ' ' || c < 0x21 || c > 0x7e) return false;
    }
    return url[scheme] != '/';
}

}  // namespace

void init_jwt_conf(JwtConf* jwt) noexcept {
    jwt->keys = static_cast<const core::JwtKeys*>(NGX_CONF_UNSET_PTR);
    jwt->authorized_parties = static_cast<ngx_array_t*>(NGX_CONF_UNSET_PTR);
    jwt->leeway = NGX_CONF_UNSET;
    jwt->session_mode = kModeUnset;
    // issuer, role_claim, handshake: {0, nullptr} from pcalloc is unset.
}

// session_jwt_keys FILE ... | redis (files and redis may be combined)
char* jwt_keys_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept {
    JwtConf& jwt = loc(conf)->jwt;
    if (jwt.keys != NGX_CONF_UNSET_PTR) {
        return const_cast<char*>("is duplicate");
    }
    ngx_pool_cleanup_t* cln = ngx_pool_cleanup_add(cf->pool, sizeof(core::JwtKeys));
    if (cln == nullptr) {
        return kConfError;
    }
    auto* keys = new (cln->data) core::JwtKeys();
    cln->handler = destroy_keys;
    for (ngx_uint_t i = 1; i < cf->args->nelts; ++i) {
        ngx_str_t name = args(cf)[i];
        if (to_view(name) == "redis") {
            // The set at <prefix>jwks (a file named redis: ./redis).
            if (jwt.redis_keys) {
                return invalid_value(cf, cmd, name, ", it is given twice");
            }
            auto* mcf =
                static_cast<MainConf*>(ngx_http_conf_get_module_main_conf(cf, ngx_session_module));
            if (mcf->jwks_zone == nullptr) {
                mcf->jwks_zone = add_jwks_zone(cf);
                if (mcf->jwks_zone == nullptr) {
                    return kConfError;
                }
            }
            jwt.redis_keys = 1;
            continue;
        }
        std::string content;
        if (!read_directive_file(cf, cmd, &name, "key", kMaxKeyFileSize, content)) {
            return kConfError;
        }
        std::string error;
        bool added = false;
        try {
            added = keys->add(content, error);
        } catch (...) {
            error = "out of memory";
        }
        if (!added) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\" key file \"%V\": %s", &cmd->name,
                               &name, error.c_str());
            return kConfError;
        }
    }
    jwt.keys = keys;
    return NGX_CONF_OK;
}

char* jwt_issuer_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept {
    JwtConf& jwt = loc(conf)->jwt;
    if (jwt.issuer.data != nullptr) {
        return const_cast<char*>("is duplicate");
    }
    if (args(cf)[1].len == 0) {
        return invalid_value(cf, cmd, args(cf)[1]);
    }
    jwt.issuer = args(cf)[1];
    return NGX_CONF_OK;
}

char* jwt_authorized_parties_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept {
    JwtConf& jwt = loc(conf)->jwt;
    if (jwt.authorized_parties != NGX_CONF_UNSET_PTR) {
        return const_cast<char*>("is duplicate");
    }
    jwt.authorized_parties =
        ngx_array_create(cf->pool, cf->args->nelts - 1, sizeof(std::string_view));
    if (jwt.authorized_parties == nullptr) {
        return kConfError;
    }
    for (ngx_uint_t i = 1; i < cf->args->nelts; ++i) {
        std::string_view origin = to_view(args(cf)[i]);
        if (origin.empty() || origin.back() == '/' ||
            origin.find("://") == std::string_view::npos) {
            return invalid_value(cf, cmd, args(cf)[i], ", it must be an origin like https://host");
        }
        void* slot = ngx_array_push(jwt.authorized_parties);
        if (slot == nullptr) {
            return kConfError;
        }
        new (slot) std::string_view(origin);
    }
    return NGX_CONF_OK;
}

char* jwt_leeway_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept {
    JwtConf& jwt = loc(conf)->jwt;
    if (jwt.leeway != NGX_CONF_UNSET) {
        return const_cast<char*>("is duplicate");
    }
    ngx_int_t seconds = ngx_parse_time(&args(cf)[1], 1);
    if (seconds == NGX_ERROR || seconds > kMaxLeewaySeconds) {
        return invalid_value(cf, cmd, args(cf)[1], ", it must be a time of at most 5m");
    }
    jwt.leeway = static_cast<time_t>(seconds);
    return NGX_CONF_OK;
}

char* jwt_session_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept {
    JwtConf& jwt = loc(conf)->jwt;
    if (jwt.session_mode != kModeUnset) {
        return const_cast<char*>("is duplicate");
    }
    std::string_view value = to_view(args(cf)[1]);
    if (value == "optional") {
        jwt.session_mode = static_cast<ngx_uint_t>(core::JwtSessionMode::optional);
    } else if (value == "required") {
        jwt.session_mode = static_cast<ngx_uint_t>(core::JwtSessionMode::required);
    } else if (value == "off") {
        jwt.session_mode = static_cast<ngx_uint_t>(core::JwtSessionMode::off);
    } else {
        return invalid_value(cf, cmd, args(cf)[1],
                             ", it must be \"optional\", \"required\" or \"off\"");
    }
    return NGX_CONF_OK;
}

char* jwt_role_claim_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept {
    JwtConf& jwt = loc(conf)->jwt;
    if (jwt.role_claim.data != nullptr) {
        return const_cast<char*>("is duplicate");
    }
    if (!is_claim_path(to_view(args(cf)[1]))) {
        return invalid_value(cf, cmd, args(cf)[1], ", it must be a dotted claim path");
    }
    jwt.role_claim = args(cf)[1];
    return NGX_CONF_OK;
}

char* jwt_handshake_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept {
    JwtConf& jwt = loc(conf)->jwt;
    if (jwt.handshake.data != nullptr) {
        return const_cast<char*>("is duplicate");
    }
    ngx_str_t url = args(cf)[1];
    if (to_view(url) == "off") {
        jwt.handshake = {0, reinterpret_cast<u_char*>(const_cast<char*>(""))};
        return NGX_CONF_OK;
    }
    if (!is_frontend_api_url(to_view(url))) {
        return invalid_value(cf, cmd, url,
                             ", it must be the Frontend API URL, like https://clerk.example.com");
    }
    while (url.len > 0 && url.data[url.len - 1] == '/') --url.len;
    jwt.handshake = url;
    return NGX_CONF_OK;
}

char* word_list_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept {
    auto** list = reinterpret_cast<ngx_array_t**>(static_cast<char*>(conf) + cmd->offset);
    if (*list != nullptr) {
        return const_cast<char*>("is duplicate");
    }
    *list = ngx_array_create(cf->pool, cf->args->nelts - 1, sizeof(std::string_view));
    if (*list == nullptr) {
        return kConfError;
    }
    for (ngx_uint_t i = 1; i < cf->args->nelts; ++i) {
        std::string_view word = to_view(args(cf)[i]);
        if (word.empty() || word.find_first_of(" \t,") != std::string_view::npos) {
            return invalid_value(cf, cmd, args(cf)[i]);
        }
        void* slot = ngx_array_push(*list);
        if (slot == nullptr) {
            return kConfError;
        }
        new (slot) std::string_view(word);
    }
    return NGX_CONF_OK;
}

char* merge_jwt_conf(ngx_conf_t* cf, JwtConf* prev, JwtConf* conf) noexcept {
    if (conf->keys == NGX_CONF_UNSET_PTR) {
        conf->redis_keys = prev->redis_keys;  // the sources come as one
    }
    ngx_conf_merge_ptr_value(conf->keys, prev->keys, nullptr);
    ngx_conf_merge_ptr_value(conf->authorized_parties, prev->authorized_parties, nullptr);
    ngx_conf_merge_value(conf->leeway, prev->leeway, 5);
    ngx_conf_merge_uint_value(conf->session_mode, prev->session_mode,
                              static_cast<ngx_uint_t>(core::JwtSessionMode::optional));
    ngx_conf_merge_str_value(conf->issuer, prev->issuer, "");
    ngx_conf_merge_str_value(conf->role_claim, prev->role_claim, "metadata.role");
    ngx_conf_merge_str_value(conf->handshake, prev->handshake, "");

    if (conf->keys == nullptr) {
        return NGX_CONF_OK;
    }
    if (conf->issuer.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"session_jwt_keys\" is set, but no \"session_jwt_issuer\"");
        return kConfError;
    }
    if (conf->redis_keys) {
        auto* mcf =
            static_cast<MainConf*>(ngx_http_conf_get_module_main_conf(cf, ngx_session_module));
        if (!mcf->redis.configured) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"session_jwt_keys\" has \"redis\", but no \"session_redis\" is "
                               "set in the http block");
            return kConfError;
        }
    }
    std::array<unsigned char, 32> keys_fingerprint;
    try {
        keys_fingerprint = conf->keys->fingerprint();
    } catch (...) {
        return kConfError;
    }
    if (!core::token_digest(keys_fingerprint, to_view(conf->role_claim), conf->verifier)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"session_jwt_keys\": SHA-256 failed");
        return kConfError;
    }
    return NGX_CONF_OK;
}

}  // namespace session::ngx
