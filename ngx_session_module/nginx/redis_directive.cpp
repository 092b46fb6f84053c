// The `session_redis` directive: the address in the shared grammar
// (common/redis_address.hpp: host:port, unix:, redis://, rediss://,
// sentinel://, cluster://), its options, and the TLS client context made at
// configuration load.
#include "nginx/redis_directive.hpp"
#include "nginx/directive_text.hpp"

#include <arpa/inet.h>

#include <string>

#include "common/redis_address.hpp"
#include "nginx/conf.hpp"
#include "nginx/metrics_zone.hpp"

namespace session::ngx {
namespace {

// Keeps <prefix>session:revocations within the subscriber's fixed buffer.
constexpr std::size_t kMaxPrefixLength = 200;

// A NUL-terminated copy (C APIs: OpenSSL's file names, SNI).
bool copy_cstring(ngx_conf_t* cf, std::string_view from, ngx_str_t* to) noexcept {
    to->data = static_cast<u_char*>(ngx_pnalloc(cf->pool, from.size() + 1));
    if (to->data == nullptr) {
        return false;
    }
    ngx_memcpy(to->data, from.data(), from.size());
    to->data[from.size()] = '\0';
    to->len = from.size();
    return true;
}

// Messages name the option, never its value when it may be a secret.
char* redis_error(ngx_conf_t* cf, const char* fmt, const ngx_str_t* arg = nullptr) noexcept {
    if (arg != nullptr) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, fmt, arg);
    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, fmt);
    }
    return kConfError;
}

// One endpoint's socket address: a name is resolved now, in the master, as
// nginx's own upstreams are (and again before reconnects when http{} has a
// resolver, for the standalone form).
bool resolve_endpoint(ngx_conf_t* cf, const common::RedisEndpoint& endpoint, ngx_addr_t* addr,
                      const ngx_str_t& shown) noexcept {
    std::string url;
    try {
        url = endpoint.text();
    } catch (...) {
        return false;
    }
    ngx_url_t u;
    ngx_memzero(&u, sizeof(ngx_url_t));
    u.url = copy_to_pool(cf->pool, url);
    u.default_port = common::kRedisDefaultPort;
    if (u.url.data == nullptr) {
        return false;
    }
    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0 || u.uri.len > 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid address \"%V\" in \"session_redis\" directive%s%s", &shown,
                           u.err != nullptr ? ": " : "", u.err != nullptr ? u.err : "");
        return false;
    }
    *addr = u.addrs[0];
    return true;
}

// sentinel:// and cluster://: every sentinel or seed node, resolved now.
bool parse_nodes(ngx_conf_t* cf, const common::RedisAddress& address, RedisConf* redis) noexcept {
    redis->nodes = ngx_array_create(cf->pool, address.endpoints.size(), sizeof(RedisNodeAddr));
    if (redis->nodes == nullptr) {
        return false;
    }
    for (const common::RedisEndpoint& endpoint : address.endpoints) {
        auto* node = static_cast<RedisNodeAddr*>(ngx_array_push(redis->nodes));
        if (node == nullptr) {
            return false;
        }
        ngx_memzero(node, sizeof(RedisNodeAddr));
        std::string text;
        try {
            text = endpoint.text();
        } catch (...) {
            return false;
        }
        node->text = copy_to_pool(cf->pool, text);
        node->port = endpoint.port;
        if (node->text.data == nullptr || !copy_cstring(cf, endpoint.host, &node->host) ||
            !resolve_endpoint(cf, endpoint, &node->addr, node->text)) {
            return false;
        }
    }
    if (address.topology == common::RedisTopology::sentinel) {
        redis->topology = RedisTopologyKind::sentinel;
        return copy_cstring(cf, address.master_name, &redis->master_name);
    }
    redis->topology = RedisTopologyKind::cluster;
    return true;
}

// The address in the shared grammar (common/redis_address.hpp), then its
// socket address(es).
bool parse_address(ngx_conf_t* cf, const ngx_str_t& text, RedisConf* redis,
                   common::RedisAddress* address) noexcept {
    // A URL may hold a password: echo only text that cannot.
    const bool may_hold_secret = ngx_strlchr(text.data, text.data + text.len, '@') != nullptr;
    std::string error;
    try {
        auto parsed = common::parse_redis_address(to_view(text), error);
        if (!parsed && to_view(text).find(':') == std::string_view::npos) {
            // nginx's short form allows a host without a port.
            std::string with_port(to_view(text));
            with_port += ":6379";
            std::string ignored;
            parsed = common::parse_redis_address(with_port, ignored);
            if (parsed) error.clear();
        }
        if (parsed) {
            *address = std::move(*parsed);
        }
    } catch (...) {
        error = "out of memory";
    }
    if (!error.empty() || address->endpoints.empty()) {
        if (may_hold_secret) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid address in \"session_redis\" directive: %s", error.c_str());
        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid address \"%V\" in \"session_redis\" directive: %s", &text,
                               error.c_str());
        }
        return false;
    }
    std::string shown;
    try {
        shown = address->redacted();
    } catch (...) {
        return false;
    }
    redis->address_text = copy_to_pool(cf->pool, shown);
    if (redis->address_text.data == nullptr) {
        return false;
    }
    if (address->topology != common::RedisTopology::standalone) {
        return parse_nodes(cf, *address, redis);
    }
    const common::RedisEndpoint& endpoint = address->endpoints.front();
    if (!resolve_endpoint(cf, endpoint, &redis->addr, redis->address_text)) {
        return false;
    }
    if (endpoint.is_unix()) {
        return copy_cstring(cf, endpoint.unix_path, &redis->unix_path);
    }
    redis->port = endpoint.port;
    unsigned char scratch[sizeof(struct in6_addr)];
    redis->host_is_name = inet_pton(AF_INET, endpoint.host.c_str(), scratch) != 1 &&
                          inet_pton(AF_INET6, endpoint.host.c_str(), scratch) != 1;
    return copy_cstring(cf, endpoint.host, &redis->host);
}

// TLS options as written; applied once the whole directive is read.
struct TlsOptions {
    bool tls = false;
    ngx_str_t ca{0, nullptr};
    ngx_str_t cert{0, nullptr};
    ngx_str_t key{0, nullptr};
    ngx_str_t server_name{0, nullptr};
    ngx_int_t verify = NGX_CONF_UNSET;
    // The first TLS option given, to name it when there is no TLS.
    ngx_str_t first{0, nullptr};
};

// The client context, as ngx_http_proxy_set_ssl makes proxy_ssl's.
bool make_tls_context(ngx_conf_t* cf, TlsOptions& tls, RedisConf* redis) noexcept {
    auto* ssl = static_cast<ngx_ssl_t*>(ngx_pcalloc(cf->pool, sizeof(ngx_ssl_t)));
    if (ssl == nullptr) {
        return false;
    }
    ssl->log = cf->log;
    if (ngx_ssl_create(ssl, NGX_SSL_TLSv1_2 | NGX_SSL_TLSv1_3, nullptr) != NGX_OK) {
        redis_error(cf, "\"session_redis\": cannot create the TLS context");
        return false;
    }
    ngx_pool_cleanup_t* cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == nullptr) {
        ngx_ssl_cleanup_ctx(ssl);
        return false;
    }
    cln->handler = ngx_ssl_cleanup_ctx;
    cln->data = ssl;
    redis->ssl = ssl;

    if (tls.cert.len > 0 && ngx_ssl_certificate(cf, ssl, &tls.cert, &tls.key, nullptr) != NGX_OK) {
        redis_error(cf, "\"session_redis\": cannot load \"cert=\" or \"key=\" (see above)");
        return false;
    }
    // Depth 9 rather than proxy_ssl_verify_depth's 1: managed services
    // often chain through intermediates.
    if (ngx_ssl_trusted_certificate(cf, ssl, &tls.ca, 9) != NGX_OK) {
        redis_error(cf, "\"session_redis\": cannot load \"ca=\" (see above)");
        return false;
    }
    if (tls.ca.len == 0 && redis->tls_verify && SSL_CTX_set_default_verify_paths(ssl->ctx) != 1) {
        redis_error(cf, "\"session_redis\": cannot load the system's trusted CAs, set \"ca=\"");
        return false;
    }
    // Resumption across reconnects (RedisConn keeps the last session).
    if (ngx_ssl_client_session_cache(cf, ssl, 1) != NGX_OK) {
        return false;
    }
    if (tls.server_name.len > 0) {
        redis->server_name = tls.server_name;
    } else if (redis->host.len > 0) {
        redis->server_name = redis->host;
    }
    if (!redis->tls_verify) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "\"session_redis\": tls_verify=off: the certificate of %V is not "
                           "checked",
                           &redis->address_text);
    }
    return true;
}

// Options that only make sense over TLS. true when `arg` was one of them.
bool parse_tls_option(ngx_conf_t* cf, const ngx_str_t& arg, TlsOptions& tls, bool& bad) noexcept {
    bad = false;
    ngx_str_t* target = nullptr;
    std::size_t name_len = 0;
    if (to_view(arg) == "tls") {
        tls.tls = true;
        return true;
    }
    if (starts_with(arg, "ca=")) {
        target = &tls.ca, name_len = 3;
    } else if (starts_with(arg, "cert=")) {
        target = &tls.cert, name_len = 5;
    } else if (starts_with(arg, "key=")) {
        target = &tls.key, name_len = 4;
    } else if (starts_with(arg, "server_name=")) {
        target = &tls.server_name, name_len = 12;
    } else if (starts_with(arg, "tls_verify=")) {
        ngx_str_t value = after(arg, 11);
        if (to_view(value) == "on") {
            tls.verify = 1;
        } else if (to_view(value) == "off") {
            tls.verify = 0;
        } else {
            bad = true;
        }
    } else {
        return false;
    }
    if (tls.first.len == 0) {
        tls.first = arg;
        if (u_char* eq = ngx_strlchr(arg.data, arg.data + arg.len, '='); eq != nullptr) {
            tls.first.len = eq - arg.data + 1;
        }
    }
    if (target != nullptr) {
        if (arg.len == name_len || target->len > 0) {
            bad = true;
        } else if (!copy_cstring(cf, to_view(after(arg, name_len)), target)) {
            bad = true;
        }
    }
    return true;
}

}  // namespace

// session_redis ADDRESS [user=] [password=] [db=] [timeout=] [connect_timeout=]
//               [dead_after=] [prefix=] [tls] [ca=] [cert= key=] [server_name=]
//               [tls_verify=on|off]
char* redis_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept {
    auto* mcf = static_cast<MainConf*>(conf);
    if (mcf->redis.configured) {
        return const_cast<char*>("is duplicate");
    }
    auto* value = static_cast<ngx_str_t*>(cf->args->elts);
    RedisConf& redis = mcf->redis;
    common::RedisAddress address;
    if (!parse_address(cf, value[1], &redis, &address)) {
        return kConfError;
    }
    if (!address.user.empty() && !copy_cstring(cf, address.user, &redis.user)) {
        return kConfError;
    }
    if (!address.password.empty() && !copy_cstring(cf, address.password, &redis.password)) {
        return kConfError;
    }
    redis.db = address.db;
    TlsOptions tls;
    tls.tls = address.tls;
    for (ngx_uint_t i = 2; i < cf->args->nelts; ++i) {
        const ngx_str_t& arg = value[i];
        bool bad = false;
        if (parse_tls_option(cf, arg, tls, bad)) {
            if (bad) {
                ngx_str_t name = arg;
                if (u_char* eq = ngx_strlchr(arg.data, arg.data + arg.len, '='); eq) {
                    name.len = eq - arg.data + 1;
                }
                return redis_error(cf, "invalid or repeated \"%V\" in \"session_redis\" directive",
                                   &name);
            }
        } else if (starts_with(arg, "password=")) {
            if (address.password.size() > 0) {
                return redis_error(cf,
                                   "\"password=\" in \"session_redis\" directive repeats the "
                                   "address's password");
            }
            if (arg.len == 9 || !copy_cstring(cf, to_view(after(arg, 9)), &redis.password)) {
                // Do not echo the value: it is a secret.
                return redis_error(cf, "empty \"password=\" in \"session_redis\" directive");
            }
        } else if (starts_with(arg, "user=")) {
            if (arg.len == 5 || redis.user.len > 0 ||
                !copy_cstring(cf, to_view(after(arg, 5)), &redis.user)) {
                return redis_error(cf,
                                   "empty or repeated \"user=\" in \"session_redis\" directive");
            }
        } else if (starts_with(arg, "db=")) {
            ngx_int_t db = ngx_atoi(arg.data + 3, arg.len - 3);
            if (db == NGX_ERROR || address.db >= 0) return invalid_value(cf, cmd, arg);
            redis.db = db;
        } else if (starts_with(arg, "timeout=") || starts_with(arg, "connect_timeout=") ||
                   starts_with(arg, "dead_after=")) {
            std::size_t name_len = ngx_strlchr(arg.data, arg.data + arg.len, '=') - arg.data + 1;
            ngx_str_t t = after(arg, name_len);
            ngx_int_t ms = ngx_parse_time(&t, 0);
            if (ms == NGX_ERROR || ms == 0) return invalid_value(cf, cmd, arg);
            ngx_msec_t* field = starts_with(arg, "dead_after=")        ? &redis.dead_after
                                : starts_with(arg, "connect_timeout=") ? &redis.connect_timeout
                                                                       : &redis.timeout;
            *field = static_cast<ngx_msec_t>(ms);
        } else if (starts_with(arg, "prefix=")) {
            redis.prefix = after(arg, 7);
            if (redis.prefix.len > kMaxPrefixLength) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"prefix=\" in \"%V\" directive is longer than %uz characters",
                                   &cmd->name, kMaxPrefixLength);
                return kConfError;
            }
        } else {
            // Only the name: a mistyped "password=" must not reach the log.
            ngx_str_t name = arg;
            if (u_char* eq = ngx_strlchr(arg.data, arg.data + arg.len, '='); eq != nullptr) {
                name.len = eq - arg.data + 1;
            }
            return invalid_parameter(cf, cmd, name);
        }
    }
    if (redis.topology == RedisTopologyKind::cluster && redis.db >= 0) {
        // A cluster has database 0 only (SELECT is refused).
        return redis_error(cf, "\"db=\" in \"session_redis\" directive is refused with cluster://");
    }
    if (redis.user.len > 0 && redis.password.len == 0) {
        return redis_error(cf, "\"user=\" in \"session_redis\" directive needs a password");
    }
    if (!tls.tls && tls.first.len > 0) {
        return redis_error(cf,
                           "\"%V\" in \"session_redis\" directive needs TLS (rediss:// or "
                           "\"tls\")",
                           &tls.first);
    }
    if (tls.tls && redis.unix_path.len > 0) {
        return redis_error(cf, "\"session_redis\": TLS over a unix socket is not supported");
    }
    if ((tls.cert.len > 0) != (tls.key.len > 0)) {
        return redis_error(cf, "\"session_redis\": \"cert=\" and \"key=\" go together");
    }
    redis.tls_verify = tls.verify != 0;
    if (tls.tls && !make_tls_context(cf, tls, &redis)) {
        return kConfError;
    }
    if (redis.dead_after == 0) {
        redis.dead_after = 3 * redis.timeout;
    } else if (redis.dead_after < redis.timeout) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"dead_after=\" in \"%V\" directive is shorter than \"timeout=\"",
                           &cmd->name);
        return kConfError;
    }
    redis.configured = 1;
    mcf->metrics_zone = add_metrics_zone(cf);
    return mcf->metrics_zone != nullptr ? NGX_CONF_OK : kConfError;
}

}  // namespace session::ngx
