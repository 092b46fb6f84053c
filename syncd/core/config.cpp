#include "core/config.hpp"

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <functional>
#include <limits>

namespace syncd {
namespace {

// Quotes a value for an error message. Only for values that are not secret.
std::string quoted(const std::string& v) {
    std::string out = "\"";
    for (char c : v.substr(0, 200)) {
        out += std::isprint(static_cast<unsigned char>(c)) ? c : '?';
    }
    return out + "\"";
}

[[noreturn]] void bad(const std::string& key, const std::string& why) {
    throw ConfigError(key + ": " + why);
}

bool parse_int(const std::string& s, long long min, long long max, long long& out) {
    if (s.empty() || s.size() > 18) return false;
    long long v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return false;
        v = v * 10 + (c - '0');
    }
    if (v < min || v > max) return false;
    out = v;
    return true;
}

int parse_port(const std::string& key, const std::string& s) {
    long long port = 0;
    if (!parse_int(s, 1, 65535, port)) bad(key, "invalid port " + quoted(s));
    return static_cast<int>(port);
}

bool numeric_address(const std::string& host) {
    unsigned char buf[16];
    return inet_pton(AF_INET, host.c_str(), buf) == 1 ||
           inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// Splits "host:port" or "[v6]:port".
void split_host_port(const std::string& key, const std::string& v, std::string& host,
                     std::string& port) {
    if (!v.empty() && v[0] == '[') {
        auto close = v.find(']');
        if (close == std::string::npos || close + 1 >= v.size() || v[close + 1] != ':') {
            bad(key, "expected [address]:port, got " + quoted(v));
        }
        host = v.substr(1, close - 1);
        port = v.substr(close + 2);
        return;
    }
    auto colon = v.rfind(':');
    if (colon == std::string::npos) bad(key, "expected host:port, got " + quoted(v));
    host = v.substr(0, colon);
    port = v.substr(colon + 1);
    if (host.find(':') != std::string::npos) bad(key, "write IPv6 addresses as [address]:port");
}

std::string trim(const std::string& s) {
    auto b = s.find_first_not_of(" \t\r");
    if (b == std::string::npos) return "";
    auto e = s.find_last_not_of(" \t\r");
    return s.substr(b, e - b + 1);
}

bool parse_switch(const std::string& key, const std::string& value, bool fallback) {
    std::string v = value;
    std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return std::tolower(c); });
    if (v.empty()) return fallback;
    if (v == "on" || v == "yes" || v == "true" || v == "1") return true;
    if (v == "off" || v == "no" || v == "false" || v == "0") return false;
    bad(key, "expected on or off, got " + quoted(value));
}

// Checked at load so that check-config and a start-up name the key; the
// contents are OpenSSL's to judge when the connection is made.
std::string readable_file(const std::string& key, const std::string& path) {
    if (path.empty()) return path;
    if (::access(path.c_str(), R_OK) != 0) {
        bad(key, "cannot read " + quoted(path) + ": " + std::strerror(errno));
    }
    return path;
}

// The TLS keys only make sense together and with a TCP address.
void check_redis_tls(Config& cfg, const Environment& merged) {
    // Empty counts as unset, as in an EnvironmentFile left blank.
    auto given = [&](const char* name) {
        auto it = merged.find(name);
        return it != merged.end() && !it->second.empty();
    };
    RedisTls& tls = cfg.redis.tls;
    const auto& address = cfg.redis.address;
    if (address.tls) {
        if (given("SYNCD_REDIS_TLS") && !tls.enabled) {
            bad("SYNCD_REDIS_TLS", "is off, but SYNCD_REDIS_URL is a rediss:// URL");
        }
        tls.enabled = true;
    }
    if (tls.cert_file.empty() != tls.key_file.empty()) {
        throw ConfigError(
            "SYNCD_REDIS_CERT_FILE, SYNCD_REDIS_KEY_FILE: a client certificate needs both "
            "(the certificate and its key)");
    }
    if (!tls.enabled) {
        for (const char* name :
             {"SYNCD_REDIS_CA_FILE", "SYNCD_REDIS_CERT_FILE", "SYNCD_REDIS_KEY_FILE",
              "SYNCD_REDIS_SERVER_NAME", "SYNCD_REDIS_TLS_VERIFY"}) {
            if (given(name))
                bad(name, "is set but TLS is off (use rediss:// or SYNCD_REDIS_TLS=on)");
        }
        return;
    }
    for (const auto& endpoint : address.endpoints) {
        if (endpoint.is_unix()) {
            bad("SYNCD_REDIS_TLS", "Redis serves TLS on TCP ports only, not on a Unix socket");
        }
    }
}

struct Key {
    const char* name;
    std::function<void(Config&, const std::string&)> set;
};

const std::vector<Key>& table() {
    static const std::vector<Key> keys = {
        {"SYNCD_LISTEN",
         [](Config& c, const std::string& v) { c.listen = parse_listen("SYNCD_LISTEN", v); }},
        {"SYNCD_DATABASE_URL",
         [](Config& c, const std::string& v) {
             if (trim(v).empty()) bad("SYNCD_DATABASE_URL", "is empty");
             // libpq's error text quotes the value (a password included).
             char* err = nullptr;
             PQconninfoOption* parsed = PQconninfoParse(v.c_str(), &err);
             PQfreemem(err);
             if (!parsed) {
                 bad("SYNCD_DATABASE_URL", "not a valid libpq connection string or URL");
             }
             PQconninfoFree(parsed);
             c.database_url = v;
         }},
        {"SYNCD_REDIS_URL",
         [](Config& c, const std::string& v) {
             c.redis.address = parse_redis_url("SYNCD_REDIS_URL", v);
             c.redis_set = true;
         }},
        // The cross-checks between these keys are in check_redis_tls().
        {"SYNCD_REDIS_TLS",
         [](Config& c, const std::string& v) {
             c.redis.tls.enabled = parse_switch("SYNCD_REDIS_TLS", v, false);
         }},
        {"SYNCD_REDIS_CA_FILE",
         [](Config& c, const std::string& v) {
             c.redis.tls.ca_file = readable_file("SYNCD_REDIS_CA_FILE", v);
         }},
        {"SYNCD_REDIS_CERT_FILE",
         [](Config& c, const std::string& v) {
             c.redis.tls.cert_file = readable_file("SYNCD_REDIS_CERT_FILE", v);
         }},
        {"SYNCD_REDIS_KEY_FILE",
         [](Config& c, const std::string& v) {
             c.redis.tls.key_file = readable_file("SYNCD_REDIS_KEY_FILE", v);
         }},
        {"SYNCD_REDIS_SERVER_NAME",
         [](Config& c, const std::string& v) {
             // A DNS name or an IP address: what the certificate must carry.
             if (v.size() > 253 ||
                 v.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                     "0123456789.-_:*") != std::string::npos) {
                 bad("SYNCD_REDIS_SERVER_NAME", "expected a host name, got " + quoted(v));
             }
             c.redis.tls.server_name = v;
         }},
        {"SYNCD_REDIS_TLS_VERIFY",
         [](Config& c, const std::string& v) {
             c.redis.tls.verify = parse_switch("SYNCD_REDIS_TLS_VERIFY", v, true);
         }},
        {"SYNCD_REDIS_PREFIX",
         [](Config& c, const std::string& v) {
             for (char ch : v) {
                 if (!std::isgraph(static_cast<unsigned char>(ch))) {
                     bad("SYNCD_REDIS_PREFIX", "must not contain spaces or control characters");
                 }
             }
             c.redis_prefix = v;
         }},
        {"SYNCD_WEBHOOK_SECRETS", [](Config& c, const std::string& v) { c.webhook_secrets = v; }},
        {"SYNCD_WEBHOOK_SECRETS_FILE",
         [](Config& c, const std::string& v) {
             if (v.empty()) bad("SYNCD_WEBHOOK_SECRETS_FILE", "is empty");
             c.webhook_secrets_file = v;
         }},
        {"SYNCD_WEBHOOK_PATH",
         [](Config& c, const std::string& v) {
             if (v.empty() || v[0] != '/' || v.find_first_of(" ?#") != std::string::npos) {
                 bad("SYNCD_WEBHOOK_PATH", "expected an absolute path, got " + quoted(v));
             }
             if (v == "/healthz" || v == "/metrics") {
                 bad("SYNCD_WEBHOOK_PATH", quoted(v) + " is reserved");
             }
             c.webhook_path = v;
         }},
        {"SYNCD_MAX_BODY",
         [](Config& c, const std::string& v) { c.max_body = parse_size("SYNCD_MAX_BODY", v); }},
        {"SYNCD_LOG_LEVEL",
         [](Config& c, const std::string& v) {
             c.log_level = parse_log_level("SYNCD_LOG_LEVEL", v);
         }},
        {"SYNCD_DB_POOL",
         [](Config& c, const std::string& v) {
             long long n = 0;
             if (!parse_int(v, 1, 1000, n)) {
                 bad("SYNCD_DB_POOL", "expected a number of connections 1-1000, got " + quoted(v));
             }
             c.db_pool = static_cast<int>(n);
         }},
        {"SYNCD_SESSION_IDLE_TIMEOUT",
         [](Config& c, const std::string& v) {
             // Empty counts as unset, as in an EnvironmentFile left blank.
             long long n = 0;
             if (!v.empty() && !parse_int(v, 0, 10LL * 365 * 24 * 3600, n)) {
                 bad("SYNCD_SESSION_IDLE_TIMEOUT",
                     "expected seconds from 0 (off) to 315360000, got " + quoted(v));
             }
             c.session_idle_timeout = n;
         }},
        {"SYNCD_EVENT_RETENTION",
         [](Config& c, const std::string& v) {
             // Shorter than the sender's retries (Svix: about 28 hours), a
             // late delivery could re-create a removed membership.
             std::int64_t seconds = parse_duration("SYNCD_EVENT_RETENTION", v);
             if (seconds < 2 * 24 * 3600) {
                 bad("SYNCD_EVENT_RETENTION",
                     "must be at least 2d (a late delivery could re-create what was pruned), got " +
                         quoted(v));
             }
             c.event_retention = seconds;
         }},
        {"SYNCD_MAX_CONNECTIONS_PER_IP",
         [](Config& c, const std::string& v) {
             long long n = 0;
             if (!parse_int(v, 1, 10000, n)) {
                 bad("SYNCD_MAX_CONNECTIONS_PER_IP",
                     "expected a number of connections 1-10000, got " + quoted(v));
             }
             c.max_connections_per_ip = static_cast<int>(n);
         }},
        {"SYNCD_REQUEST_DEADLINE",
         [](Config& c, const std::string& v) {
             long long n = 0;
             if (!parse_int(v, 1, 300, n)) {
                 bad("SYNCD_REQUEST_DEADLINE", "expected seconds 1-300, got " + quoted(v));
             }
             c.request_deadline = static_cast<int>(n);
         }},
        {"SYNCD_STARTUP_WAIT",
         [](Config& c, const std::string& v) {
             long long n = 0;
             if (!parse_int(v, 0, 3600, n)) {
                 bad("SYNCD_STARTUP_WAIT", "expected seconds 0-3600, got " + quoted(v));
             }
             c.startup_wait = static_cast<int>(n);
         }},
        {"SYNCD_CLERK_SECRET_KEY",
         [](Config& c, const std::string& v) {
             // Sent as an HTTP header: a space or control character would
             // break it (or inject another header). The value is never
             // quoted in the message.
             for (char ch : v) {
                 if (!std::isgraph(static_cast<unsigned char>(ch))) {
                     bad("SYNCD_CLERK_SECRET_KEY",
                         "must not contain spaces or control characters (value not shown)");
                 }
             }
             c.clerk_api.secret_key = v;
         }},
        {"SYNCD_CLERK_API_URL",
         [](Config& c, const std::string& v) {
             // Empty counts as unset, as in an EnvironmentFile left blank.
             if (!v.empty()) c.clerk_api.api_url = parse_api_url("SYNCD_CLERK_API_URL", v);
         }},
        {"SYNCD_CLERK_WRITEBACK",
         [](Config& c, const std::string& v) {
             c.clerk_api.writeback = parse_switch("SYNCD_CLERK_WRITEBACK", v, false);
         }},
        {"SYNCD_CLERK_JWKS_INTERVAL",
         [](Config& c, const std::string& v) {
             if (v.empty()) return;
             std::int64_t seconds = parse_duration("SYNCD_CLERK_JWKS_INTERVAL", v);
             // Clerk's rate limit is per instance: more often than every 10 s
             // spends it for keys that rotate rarely.
             if (seconds < 10) {
                 bad("SYNCD_CLERK_JWKS_INTERVAL", "must be at least 10s, got " + quoted(v));
             }
             c.clerk_api.jwks_interval = seconds;
         }},
    };
    return keys;
}

}  // namespace

std::string RedisSettings::redacted() const {
    std::string out = address.redacted();
    if (!tls.enabled) return out;
    out += " (TLS, CA " + (tls.ca_file.empty() ? std::string("system default") : tls.ca_file);
    if (!tls.cert_file.empty()) out += ", client certificate " + tls.cert_file;
    if (!tls.server_name.empty()) out += ", server name " + tls.server_name;
    out += tls.verify ? ", certificate verified)" : ", certificate NOT verified)";
    return out;
}

ListenAddress parse_listen(const std::string& key, const std::string& value) {
    std::string host, port;
    split_host_port(key, value, host, port);
    if (!numeric_address(host)) {
        bad(key, "expected a numeric address (e.g. 127.0.0.1:8787), got " + quoted(value));
    }
    return ListenAddress{host, parse_port(key, port)};
}

session::common::RedisAddress parse_redis_url(const std::string& key, const std::string& value) {
    std::string error;
    auto address = session::common::parse_redis_address(value, error);
    // The parser's messages never quote the password.
    if (!address) bad(key, error);
    return *address;
}

std::size_t parse_size(const std::string& key, const std::string& value) {
    std::string digits = value;
    unsigned long long mult = 1;
    if (!digits.empty()) {
        switch (std::tolower(static_cast<unsigned char>(digits.back()))) {
            case 'k':
                mult = 1024;
                break;
            case 'm':
                mult = 1024 * 1024;
                break;
            default:
                break;
        }
        if (mult != 1) digits.pop_back();
    }
    long long n = 0;
    const long long max = 64LL * 1024 * 1024;
    if (!parse_int(digits, 1, max, n) || n * static_cast<long long>(mult) > max) {
        bad(key,
            "expected a size in bytes from 1 to 64M (suffix k or M allowed), got " + quoted(value));
    }
    return static_cast<std::size_t>(n * mult);
}

std::int64_t parse_duration(const std::string& key, const std::string& value) {
    std::string digits = value;
    long long mult = 1;
    if (!digits.empty() && std::string("smhd").find(digits.back()) != std::string::npos) {
        const char unit = digits.back();
        mult = unit == 'd' ? 24 * 3600 : unit == 'h' ? 3600 : unit == 'm' ? 60 : 1;
        digits.pop_back();
    }
    const long long max = 10LL * 365 * 24 * 3600;
    long long n = 0;
    if (!parse_int(digits, 1, max, n) || n * mult > max) {
        bad(key, "expected a duration from 1s to 3650d (seconds, or suffix s, m, h or d), got " +
                     quoted(value));
    }
    return n * mult;
}

std::string parse_api_url(const std::string& key, const std::string& value) {
    std::string v = value;
    std::string lower = v;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    std::size_t scheme = 0;
    if (lower.rfind("https://", 0) == 0) {
        scheme = 8;
    } else if (lower.rfind("http://", 0) == 0) {
        scheme = 7;
    } else {
        bad(key, "expected an http:// or https:// URL, got " + quoted(v));
    }
    for (char ch : v) {
        if (!std::isgraph(static_cast<unsigned char>(ch))) {
            bad(key, "must not contain spaces or control characters");
        }
    }
    if (v.find_first_of("?#") != std::string::npos) {
        bad(key, "expected a base URL without a query or fragment, got " + quoted(v));
    }
    std::string authority = v.substr(scheme, v.find('/', scheme) - scheme);
    if (authority.find('@') != std::string::npos) {
        // The secret key is the credential; one in the URL would be logged.
        bad(key, "must not carry credentials");
    }
    if (authority.empty() || authority[0] == ':') bad(key, "has no host: " + quoted(v));
    while (!v.empty() && v.back() == '/') v.pop_back();
    return v;
}

LogLevel parse_log_level(const std::string& key, const std::string& value) {
    std::string v = value;
    std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return std::tolower(c); });
    if (v == "error") return LogLevel::error;
    if (v == "warn" || v == "warning") return LogLevel::warn;
    if (v == "info") return LogLevel::info;
    if (v == "debug") return LogLevel::debug;
    bad(key, "expected error, warn, info or debug, got " + quoted(value));
}

const std::vector<std::string>& known_keys() {
    static const std::vector<std::string> names = [] {
        std::vector<std::string> out;
        for (const auto& k : table()) out.emplace_back(k.name);
        return out;
    }();
    return names;
}

Environment parse_env_file(const std::string& text, const std::string& origin) {
    Environment out;
    std::size_t pos = 0;
    int lineno = 0;
    while (pos <= text.size()) {
        auto nl = text.find('\n', pos);
        std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        pos = nl == std::string::npos ? text.size() + 1 : nl + 1;
        ++lineno;
        line = trim(line);
        if (line.empty() || line[0] == '#' || line[0] == ';') continue;
        if (line.rfind("export ", 0) == 0) line = trim(line.substr(7));
        auto eq = line.find('=');
        std::string where = origin + ":" + std::to_string(lineno);
        if (eq == std::string::npos || eq == 0) {
            throw ConfigError(where + ": expected KEY=value");
        }
        std::string key = trim(line.substr(0, eq));
        std::string value = trim(line.substr(eq + 1));
        if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') &&
            value.back() == value.front()) {
            value = value.substr(1, value.size() - 2);
        }
        out[key] = value;
    }
    return out;
}

Config load_config(const Environment& env, const Environment& file,
                   std::vector<std::string>* warnings) {
    auto known = [](const std::string& name) {
        return std::find_if(table().begin(), table().end(),
                            [&](const Key& key) { return name == key.name; }) != table().end();
    };
    Environment merged;
    for (const auto& entry : env) {
        if (entry.first.rfind("SYNCD_", 0) != 0) continue;
        // The environment is shared with other programs (a test runner's
        // SYNCD_BIN, ...): an unknown name there is only worth a warning.
        if (!known(entry.first)) {
            if (warnings)
                warnings->push_back(entry.first + ": unknown key in the environment, ignored");
            continue;
        }
        merged[entry.first] = entry.second;
    }
    for (const auto& entry : file) {
        if (!known(entry.first)) throw ConfigError(entry.first + ": unknown key");
        merged[entry.first] = entry.second;
    }
    Config cfg;
    for (const auto& entry : merged) {
        const std::string& name = entry.first;
        auto it = std::find_if(table().begin(), table().end(),
                               [&](const Key& key) { return name == key.name; });
        it->set(cfg, entry.second);
    }
    check_redis_tls(cfg, merged);
    return cfg;
}

void require(const Config& cfg, int needs) {
    if ((needs & static_cast<int>(Need::database)) && cfg.database_url.empty()) {
        throw ConfigError("SYNCD_DATABASE_URL: is not set");
    }
    if ((needs & static_cast<int>(Need::redis)) && !cfg.redis_set) {
        throw ConfigError("SYNCD_REDIS_URL: is not set");
    }
    if ((needs & static_cast<int>(Need::secrets)) && cfg.webhook_secrets.empty() &&
        cfg.webhook_secrets_file.empty()) {
        throw ConfigError("SYNCD_WEBHOOK_SECRETS: is not set (nor SYNCD_WEBHOOK_SECRETS_FILE)");
    }
    if ((needs & static_cast<int>(Need::clerk_api)) && !cfg.clerk_api.enabled()) {
        throw ConfigError(
            "SYNCD_CLERK_SECRET_KEY: is not set (the Backend API's secret key, sk_live_... or "
            "sk_test_...)");
    }
}

}  // namespace syncd
