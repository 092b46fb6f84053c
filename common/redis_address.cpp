#include "common/redis_address.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>

namespace session::common {
namespace {

bool starts_with(std::string_view s, std::string_view prefix) {
    return s.substr(0, prefix.size()) == prefix;
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// RFC 3986 percent-decoding of the userinfo: a password may hold any byte.
bool percent_decode(std::string_view in, std::string& out) {
    out.clear();
    for (std::size_t i = 0; i < in.size(); ++i) {
        if (in[i] != '%') {
            out += in[i];
            continue;
        }
        if (i + 2 >= in.size()) return false;
        int hi = hex_value(in[i + 1]);
        int lo = hex_value(in[i + 2]);
        if (hi < 0 || lo < 0) return false;
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
    }
    return true;
}

bool parse_number(std::string_view s, long long max, long long& out) {
    if (s.empty() || s.size() > 10) return false;
    for (char c : s) {
        if (c < '0' || c > '9') return false;
    }
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && end == s.data() + s.size() && out <= max;
}

bool valid_host(std::string_view host) {
    if (host.empty() || host.size() > 253) return false;
    for (char c : host) {
        unsigned char u = static_cast<unsigned char>(c);
        if (!(std::isalnum(u) || c == '-' || c == '.' || c == '_' || c == ':')) return false;
    }
    return true;
}

// host[:port], [v6][:port]
bool parse_endpoint(std::string_view text, std::uint16_t default_port, RedisEndpoint& ep,
                    std::string& error) {
    std::string_view host = text, port;
    if (starts_with(text, "[")) {
        auto close = text.find(']');
        if (close == std::string_view::npos) {
            error = "an IPv6 address is missing its \"]\"";
            return false;
        }
        host = text.substr(1, close - 1);
        std::string_view rest = text.substr(close + 1);
        if (!rest.empty()) {
            if (rest[0] != ':') {
                error = "expected \":port\" after \"]\"";
                return false;
            }
            port = rest.substr(1);
            if (port.empty()) {
                error = "the port is empty";
                return false;
            }
        }
    } else {
        auto colon = text.rfind(':');
        if (colon != std::string_view::npos) {
            if (text.find(':') != colon) {
                error = "an IPv6 address must be written in brackets: [::1]:6379";
                return false;
            }
            host = text.substr(0, colon);
            port = text.substr(colon + 1);
            if (port.empty()) {
                error = "the port is empty";
                return false;
            }
        }
    }
    if (!valid_host(host)) {
        error = "invalid host name or address";
        return false;
    }
    long long n = default_port;
    if (!port.empty() && (!parse_number(port, 65535, n) || n == 0)) {
        error = "invalid port (expected 1-65535)";
        return false;
    }
    ep.host.assign(host);
    ep.port = static_cast<std::uint16_t>(n);
    return true;
}

bool parse_db(std::string_view s, int& db, std::string& error) {
    long long n = 0;
    if (!parse_number(s, 1000000, n)) {
        error = "invalid database number (expected a number)";
        return false;
    }
    db = static_cast<int>(n);
    return true;
}

// The part after "scheme://": [[user]:password@]hosts[/path]
std::optional<RedisAddress> parse_url(std::string_view scheme, std::string_view rest,
                                      std::string& error) {
    RedisAddress a;
    if (scheme == "rediss") a.tls = true;
    if (scheme == "sentinel") a.topology = RedisTopology::sentinel;
    if (scheme == "cluster") a.topology = RedisTopology::cluster;

    // The credentials end at the last '@' before the path: an unencoded
    // password may still contain '@'.
    std::string_view authority = rest, path;
    auto at = rest.rfind('@');
    std::size_t host_start = at == std::string_view::npos ? 0 : at + 1;
    auto slash = rest.find('/', host_start);
    if (slash != std::string_view::npos) {
        authority = rest.substr(0, slash);
        path = rest.substr(slash + 1);
    }
    if (at != std::string_view::npos) {
        std::string_view cred = authority.substr(0, at);
        authority = authority.substr(at + 1);
        auto colon = cred.find(':');
        if (colon == std::string_view::npos) {
            error = "credentials must be written [user]:password@";
            return std::nullopt;
        }
        if (!percent_decode(cred.substr(0, colon), a.user) ||
            !percent_decode(cred.substr(colon + 1), a.password)) {
            error = "the credentials hold an invalid percent-encoding";
            return std::nullopt;
        }
        if (a.password.empty()) {
            error = "the password is empty";
            return std::nullopt;
        }
    }

    std::uint16_t default_port =
        a.topology == RedisTopology::sentinel ? kSentinelDefaultPort : kRedisDefaultPort;
    std::size_t pos = 0;
    while (true) {
        auto comma = authority.find(',', pos);
        std::string_view item = authority.substr(
            pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
        if (item.empty()) {
            error = "a host is missing";
            return std::nullopt;
        }
        RedisEndpoint ep;
        if (!parse_endpoint(item, default_port, ep, error)) {
            // Which host, never its text: without an '@' a mistyped
            // password would be read as a host and echoed.
            error = "host " + std::to_string(a.endpoints.size() + 1) + ": " + error;
            return std::nullopt;
        }
        a.endpoints.push_back(std::move(ep));
        if (comma == std::string_view::npos) break;
        pos = comma + 1;
    }
    if (a.topology == RedisTopology::standalone && a.endpoints.size() != 1) {
        error =
            std::string(scheme) + ":// takes one host; several are for sentinel:// or cluster://";
        return std::nullopt;
    }

    if (a.topology == RedisTopology::sentinel) {
        auto next = path.find('/');
        a.master_name.assign(path.substr(0, next));
        if (a.master_name.empty()) {
            error = "sentinel:// needs the primary's name: sentinel://host:26379/mymaster";
            return std::nullopt;
        }
        for (char c : a.master_name) {
            if (!std::isgraph(static_cast<unsigned char>(c))) {
                error = "the primary's name holds a space or a control character";
                return std::nullopt;
            }
        }
        path = next == std::string_view::npos ? std::string_view() : path.substr(next + 1);
    } else if (a.topology == RedisTopology::cluster && !path.empty()) {
        error = "cluster:// takes no database number (Redis Cluster has only database 0)";
        return std::nullopt;
    }
    if (!path.empty() && !parse_db(path, a.db, error)) return std::nullopt;
    return a;
}

}  // namespace

std::string RedisEndpoint::text() const {
    if (is_unix()) return "unix:" + unix_path;
    std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    return h + ":" + std::to_string(port);
}

std::string RedisAddress::redacted() const {
    std::string out;
    switch (topology) {
        case RedisTopology::standalone:
            if (endpoints.size() == 1 && endpoints[0].is_unix()) return endpoints[0].text();
            out = tls ? "rediss://" : "redis://";
            break;
        case RedisTopology::sentinel:
            out = "sentinel://";
            break;
        case RedisTopology::cluster:
            out = "cluster://";
            break;
    }
    if (!user.empty()) out += user + "@";
    for (std::size_t i = 0; i < endpoints.size(); ++i) {
        if (i > 0) out += ",";
        out += endpoints[i].text();
    }
    if (topology == RedisTopology::sentinel) out += "/" + master_name;
    if (db >= 0) out += "/" + std::to_string(db);
    return out;
}

std::optional<RedisAddress> parse_redis_address(std::string_view text, std::string& error) {
    error.clear();
    if (text.empty()) {
        error = "the address is empty";
        return std::nullopt;
    }
    for (char c : text) {
        unsigned char u = static_cast<unsigned char>(c);
        if (u < 0x21 || u == 0x7f) {
            error = "the address holds a space or a control character";
            return std::nullopt;
        }
    }
    for (std::string_view unix_prefix : {std::string_view("unix://"), std::string_view("unix:")}) {
        if (starts_with(text, unix_prefix)) {
            std::string_view path = text.substr(unix_prefix.size());
            if (path.empty() || path[0] != '/') {
                error = "expected an absolute socket path: unix:/path/to/redis.sock";
                return std::nullopt;
            }
            RedisAddress a;
            RedisEndpoint ep;
            ep.unix_path.assign(path);
            a.endpoints.push_back(std::move(ep));
            return a;
        }
    }
    auto sep = text.find("://");
    if (sep == std::string_view::npos) {
        RedisAddress a;
        RedisEndpoint ep;
        if (text.find(':') == std::string_view::npos && !starts_with(text, "[")) {
            error =
                "expected host:port, unix:/path, or a redis://, rediss://, sentinel:// or "
                "cluster:// URL";
            return std::nullopt;
        }
        if (!parse_endpoint(text, kRedisDefaultPort, ep, error)) return std::nullopt;
        a.endpoints.push_back(std::move(ep));
        return a;
    }
    std::string_view scheme = text.substr(0, sep);
    if (scheme != "redis" && scheme != "rediss" && scheme != "sentinel" && scheme != "cluster") {
        bool word = scheme.size() <= 16 && std::all_of(scheme.begin(), scheme.end(), [](char c) {
                        return std::isalpha(static_cast<unsigned char>(c));
                    });
        // A scheme that is not a word may be a mistyped credential: not echoed.
        error = "unknown scheme" + (word ? " \"" + std::string(scheme) + "://\"" : std::string()) +
                ": expected redis://, rediss://, sentinel:// or cluster://";
        return std::nullopt;
    }
    return parse_url(scheme, text.substr(sep + 3), error);
}

}  // namespace session::common
