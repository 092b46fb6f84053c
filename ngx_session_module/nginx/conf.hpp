// Configuration of ngx_session_module: what the directives in module.cpp
// fill in, and what the access handler, the Redis link and the zones read.
#pragma once

#include "nginx/ngx.hpp"

#include <string_view>

#include "core/jwt.hpp"
#include "core/overlay.hpp"

extern "C" {
extern ngx_module_t ngx_session_module;
}

namespace session::ngx {

enum class RedisTopologyKind : ngx_uint_t { standalone, sentinel, cluster };

// One sentinel (sentinel://) or seed node (cluster://), resolved at
// configuration load like the standalone address.
struct RedisNodeAddr {
    ngx_addr_t addr;
    ngx_str_t host;  // as written, NUL-terminated
    ngx_int_t port;
    ngx_str_t text;  // host:port, for logs
};

// session_redis: where this worker's one Redis connection goes, and how.
struct RedisConf {
    ngx_flag_t configured;
    RedisTopologyKind topology;
    ngx_array_t* nodes;      // of RedisNodeAddr: the sentinels or the seed nodes
    ngx_str_t master_name;   // sentinel:// only
    ngx_str_t address_text;  // without credentials: for log messages
    ngx_str_t host;          // as written (a name or an IP), NUL-terminated; empty for unix:
    ngx_int_t port;
    ngx_str_t unix_path;  // NUL-terminated; empty for TCP
    // The address resolved at configuration time (with the port): the one
    // connected to, or the fallback when re-resolving a name fails.
    ngx_addr_t addr;
    ngx_flag_t host_is_name;  // re-resolved before each reconnect when http{} has a resolver
    ngx_str_t user;           // ACL user; empty: AUTH <password> (the default user)
    ngx_str_t password;       // never logged
    ngx_int_t db;             // -1: leave the connection's default
    ngx_msec_t timeout;
    ngx_msec_t connect_timeout;
    // No reply at all for this long, with commands outstanding: the
    // connection is dead (a single late reply is not). 0 until parsed.
    ngx_msec_t dead_after;
    ngx_str_t prefix;
    // TLS (rediss://, or `tls`): the client context, made at configuration
    // load; nullptr for plain TCP.
    ngx_ssl_t* ssl;
    // NUL-terminated: SNI and the name verified. Empty under sentinel:// and
    // cluster:// unless given: each node's own host is used then.
    ngx_str_t server_name;
    ngx_flag_t tls_verify;  // the chain and server_name (tls_verify=off: neither)
    // Some location has session_better_auth: the revocation subscriber also
    // hears Redis's keyspace notifications of deleted and expired keys.
    ngx_flag_t key_events;
};

struct MainConf {
    RedisConf redis;
    ngx_shm_zone_t* metrics_zone;  // created with session_redis
    ngx_array_t* cache_zones;      // of ngx_shm_zone_t*, every session_cache_zone
    ngx_shm_zone_t* jwks_zone;     // session_jwt_keys redis (jwt_key_store.hpp); else nullptr
};

enum class TokenSourceKind : ngx_uint_t { cookie, header, bearer };

struct TokenSource {
    TokenSourceKind kind;
    ngx_str_t name;  // cookie or header name; empty for bearer
};

enum FailMode : ngx_uint_t { kFailClosed = 0, kFailOpen = 1 };

// JWT mode of a location (session_jwt_*): set when it has keys.
struct JwtConf {
    const core::JwtKeys* keys;        // nullptr: JWTs are opaque tokens here
    ngx_flag_t redis_keys;            // `redis` among them: also the set at <prefix>jwks
    ngx_str_t issuer;                 // exact iss
    ngx_array_t* authorized_parties;  // of std::string_view; nullptr: azp not checked
    time_t leeway;                    // seconds
    ngx_uint_t session_mode;          // core::JwtSessionMode
    ngx_str_t role_claim;             // dotted path
    ngx_str_t handshake;              // Frontend API URL; empty: no handshake
    // SHA-256 of the keys' fingerprint and the role claim: what a cached
    // verdict was made by (see core::token_digest).
    std::array<unsigned char, 32> verifier;
};

// better-auth mode of a location (session_better_auth): set when it has
// secrets.
struct BetterAuthConf {
    ngx_array_t* secrets;  // of std::string_view, into conf memory; nullptr: off
    ngx_str_t cookie;      // the cookie name (also accepted with "__Secure-")
    ngx_str_t key_prefix;  // prepended to the token for the Redis key
};

struct LocConf {
    ngx_flag_t check;
    ngx_array_t* token_sources;   // of TokenSource
    ngx_array_t* required_roles;  // of std::string_view, into conf memory
    ngx_http_complex_value_t* redirect;
    ngx_uint_t fail_mode;
    ngx_shm_zone_t* cache_zone;    // nullptr: session_cache off
    ngx_msec_t touch;              // 0: off
    ngx_flag_t bearer_configured;  // WWW-Authenticate on 401
    ngx_str_t session_cookie;      // the first cookie source's name (handshake)
    JwtConf jwt;
    ngx_array_t* required_org_roles;    // of std::string_view
    ngx_array_t* required_permissions;  // of std::string_view
    ngx_array_t* strip_headers;         // of StripName (strip_headers.hpp)
    BetterAuthConf better_auth;
};

inline MainConf* main_conf(ngx_http_request_t* r) noexcept {
    return static_cast<MainConf*>(ngx_http_get_module_main_conf(r, ngx_session_module));
}

inline LocConf* loc_conf(ngx_http_request_t* r) noexcept {
    return static_cast<LocConf*>(ngx_http_get_module_loc_conf(r, ngx_session_module));
}

inline MainConf* cycle_main_conf(ngx_cycle_t* cycle) noexcept {
    return static_cast<MainConf*>(ngx_http_cycle_get_module_main_conf(cycle, ngx_session_module));
}

}  // namespace session::ngx
