// Where Redis is, as written in nginx's `session_redis` and syncd's
// SYNCD_REDIS_URL: one grammar for both components (README "Redis
// addresses"). Pure parsing, no I/O: names are resolved by the caller
// (nginx's resolver, getaddrinfo in syncd).
//
//   host:port                      plain TCP (nginx's short form)
//   unix:/path | unix:///path      a Unix socket
//   redis://[[user]:password@]host[:port][/db]
//   rediss://[[user]:password@]host[:port][/db]          TLS
//   sentinel://[[user]:password@]h1[:port],h2[:port]/master[/db]
//   cluster://[[user]:password@]h1[:port],h2[:port]
//
// Credentials may be percent-encoded (a password with '@', ':' or '/').
// TLS for sentinel:// and cluster:// is the caller's option (`tls` in
// nginx, SYNCD_REDIS_TLS in syncd): the same certificates then apply to
// the sentinels or nodes and to the data connections.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace session::common {

enum class RedisTopology { standalone, sentinel, cluster };

struct RedisEndpoint {
    std::string host;        // a name, an IPv4 or an IPv6 address (no brackets); empty for unix
    std::uint16_t port = 0;  // 0 for unix
    std::string unix_path;   // absolute; empty for TCP

    bool is_unix() const { return !unix_path.empty(); }
    // host:port, [v6]:port or unix:/path: for logs and metrics.
    std::string text() const;
};

struct RedisAddress {
    RedisTopology topology = RedisTopology::standalone;
    bool tls = false;  // rediss://
    // standalone: exactly one; sentinel: the sentinels; cluster: the seed nodes.
    std::vector<RedisEndpoint> endpoints;
    std::string master_name;  // sentinel:// only
    std::string user;         // ACL user; empty: AUTH <password> (the default user)
    std::string password;     // never logged; empty: no AUTH
    int db = -1;              // -1: not given (the server's default, 0); never in cluster://

    // The address without credentials: safe for logs and error messages.
    std::string redacted() const;
};

inline constexpr std::uint16_t kRedisDefaultPort = 6379;
inline constexpr std::uint16_t kSentinelDefaultPort = 26379;

// nullopt with `error` set to a sentence that names what is wrong (never
// the password) when `text` is not one of the forms above.
std::optional<RedisAddress> parse_redis_address(std::string_view text, std::string& error);

}  // namespace session::common
