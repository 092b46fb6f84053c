#include "nginx/better_auth.hpp"

#include <hiredis/hiredis.h>
#include <openssl/crypto.h>

#include <new>

#include "core/better_auth.hpp"
#include "core/flat_record.hpp"
#include "core/token.hpp"
#include "nginx/cache_zone.hpp"
#include "nginx/directive_text.hpp"
#include "nginx/metrics_zone.hpp"
#include "nginx/redis_link.hpp"

namespace session::ngx {
namespace {

using core::Outcome;

constexpr std::string_view kSecurePrefix = "__Secure-";
constexpr std::string_view kDefaultCookie = "better-auth.session_token";
// A secret file holds a few lines; anything far larger is not one.
constexpr off_t kMaxSecretFileSize = 64 * 1024;

// One secret per line; blank lines and white space at either end of a line
// are ignored (an editor's final newline, CRLF).
char* parse_secrets(ngx_conf_t* cf, ngx_command_t* cmd, const ngx_str_t& file_name,
                    std::string_view content, ngx_array_t* out) noexcept {
    std::size_t start = 0;
    while (start < content.size()) {
        std::size_t end = content.find('\n', start);
        if (end == std::string_view::npos) end = content.size();
        std::string_view line = content.substr(start, end - start);
        start = end + 1;
        while (!line.empty() &&
               (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) {
            line.remove_suffix(1);
        }
        while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) {
            line.remove_prefix(1);
        }
        if (line.empty()) continue;
        if (line.size() > core::kMaxBetterAuthSecretLength) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" secret file \"%V\" has a line longer than %uz bytes",
                               &cmd->name, &file_name, core::kMaxBetterAuthSecretLength);
            return kConfError;
        }
        void* slot = ngx_array_push(out);
        if (slot == nullptr) return kConfError;
        new (slot) std::string_view(line);
    }
    if (out->nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\" secret file \"%V\" holds no secret",
                           &cmd->name, &file_name);
        return kConfError;
    }
    return NGX_CONF_OK;
}

// RFC 6265's cookie-name (a token): what a Cookie header can carry.
bool is_cookie_name(std::string_view name) noexcept {
    if (name.empty()) return false;
    for (char c : name) {
        if (c <= 0x20 || c >= 0x7f) return false;
        if (std::string_view("()<>@,;:\\\"/[]?={}").find(c) != std::string_view::npos) return false;
    }
    return true;
}

}  // namespace

char* better_auth_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept {
    BetterAuthConf& ba = static_cast<LocConf*>(conf)->better_auth;
    if (ba.secrets != nullptr) {
        return const_cast<char*>("is duplicate");
    }
    auto* value = static_cast<ngx_str_t*>(cf->args->elts);
    ngx_str_t secret_file{0, nullptr};
    ba.cookie = {0, nullptr};
    ba.key_prefix = {0, nullptr};
    for (ngx_uint_t i = 1; i < cf->args->nelts; ++i) {
        const ngx_str_t& arg = value[i];
        if (starts_with(arg, "secret_file=") && arg.len > 12 && secret_file.len == 0) {
            secret_file = after(arg, 12);
        } else if (starts_with(arg, "cookie=") && ba.cookie.data == nullptr) {
            ba.cookie = after(arg, 7);
            if (!is_cookie_name(to_view(ba.cookie))) return invalid_parameter(cf, cmd, arg);
        } else if (starts_with(arg, "key_prefix=") && ba.key_prefix.data == nullptr) {
            ba.key_prefix = after(arg, 11);
            // It becomes part of a Redis key: printable, as tokens are.
            for (std::size_t j = 0; j < ba.key_prefix.len; ++j) {
                u_char c = ba.key_prefix.data[j];
                if (c <= 0x20 || c >= 0x7f) return invalid_parameter(cf, cmd, arg);
            }
        } else {
            return invalid_parameter(cf, cmd, arg);
        }
    }
    if (secret_file.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\" directive needs secret_file=FILE",
                           &cmd->name);
        return kConfError;
    }
    if (ba.cookie.data == nullptr) {
        ba.cookie = {kDefaultCookie.size(),
                     reinterpret_cast<u_char*>(const_cast<char*>(kDefaultCookie.data()))};
    }
    if (ba.key_prefix.data == nullptr) {
        ba.key_prefix = {0, reinterpret_cast<u_char*>(const_cast<char*>(""))};
    }
    ngx_str_t name = secret_file;
    std::string text;
    if (!read_directive_file(cf, cmd, &name, "secret", kMaxSecretFileSize, text)) {
        return kConfError;
    }
    // The secrets are views into this copy, which lives as long as the
    // configuration; the string's own buffer is wiped before it is freed.
    auto* copy = static_cast<char*>(ngx_pnalloc(cf->pool, text.size() + 1));
    if (copy == nullptr) {
        OPENSSL_cleanse(text.data(), text.size());
        return kConfError;
    }
    ngx_memcpy(copy, text.data(), text.size());
    OPENSSL_cleanse(text.data(), text.size());
    std::string_view content(copy, text.size());
    ba.secrets = ngx_array_create(cf->pool, 2, sizeof(std::string_view));
    if (ba.secrets == nullptr) {
        return kConfError;
    }
    if (parse_secrets(cf, cmd, name, content, ba.secrets) != NGX_CONF_OK) {
        return kConfError;
    }
    auto* mcf = static_cast<MainConf*>(ngx_http_conf_get_module_main_conf(cf, ngx_session_module));
    mcf->redis.key_events = 1;
    return NGX_CONF_OK;
}

void merge_better_auth_conf(BetterAuthConf* prev, BetterAuthConf* conf) noexcept {
    if (conf->secrets == nullptr) {
        *conf = *prev;
    }
}

ngx_array_t* better_auth_token_sources(ngx_conf_t* cf, const BetterAuthConf& conf) noexcept {
    ngx_array_t* sources = ngx_array_create(cf->pool, 2, sizeof(TokenSource));
    if (sources == nullptr) {
        return nullptr;
    }
    auto* secure = static_cast<TokenSource*>(ngx_array_push(sources));
    auto* plain = static_cast<TokenSource*>(ngx_array_push(sources));
    if (secure == nullptr || plain == nullptr) {
        return nullptr;
    }
    std::string_view cookie = to_view(conf.cookie);
    *plain = {TokenSourceKind::cookie, conf.cookie};
    if (cookie.substr(0, kSecurePrefix.size()) == kSecurePrefix) {
        sources->nelts = 1;  // the name given already is the __Secure- one
        *secure = *plain;
        return sources;
    }
    std::size_t len = kSecurePrefix.size() + cookie.size();
    auto* name = static_cast<u_char*>(ngx_pnalloc(cf->pool, len));
    if (name == nullptr) {
        return nullptr;
    }
    ngx_memcpy(ngx_cpymem(name, kSecurePrefix.data(), kSecurePrefix.size()), cookie.data(),
               cookie.size());
    *secure = {TokenSourceKind::cookie, {len, name}};
    return sources;
}

bool is_better_auth_source(const LocConf* lcf, const TokenSource& source) noexcept {
    if (lcf->better_auth.secrets == nullptr || source.kind != TokenSourceKind::cookie) {
        return false;
    }
    std::string_view name = to_view(source.name);
    std::string_view cookie = to_view(lcf->better_auth.cookie);
    if (name == cookie) return true;
    return name.size() == kSecurePrefix.size() + cookie.size() &&
           name.substr(0, kSecurePrefix.size()) == kSecurePrefix &&
           name.substr(kSecurePrefix.size()) == cookie;
}

}  // namespace session::ngx
