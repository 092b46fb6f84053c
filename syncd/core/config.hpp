// syncd's configuration: one declarative table of keys, read from the
// environment and optionally from a KEY=value file (systemd EnvironmentFile
// syntax). Pure logic: the caller supplies the environment and file text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/redis_address.hpp"

namespace syncd {

// A bad or missing value. The message names the key and never contains a
// secret's value.
class ConfigError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

enum class LogLevel { error, warn, info, debug };

struct ListenAddress {
    std::string host;  // numeric IPv4 or IPv6 address (no brackets)
    int port = 0;
};

// TLS towards Redis (and the sentinels): rediss:// or SYNCD_REDIS_TLS=on.
struct RedisTls {
    bool enabled = false;
    std::string ca_file;    // empty: the system's default CA paths
    std::string cert_file;  // with key_file: a client certificate (mutual TLS)
    std::string key_file;
    // SNI and the name the certificate must carry; empty: the host
    // connected to (the name or IP address in the URL, or the primary's
    // address as the sentinels give it).
    std::string server_name;
    bool verify = true;
};

struct RedisSettings {
    session::common::RedisAddress address;
    RedisTls tls;
    // The address without credentials, and the TLS settings (file paths,
    // never a secret): for logs and check-config.
    std::string redacted() const;
};

// Clerk's Backend API (SYNCD_CLERK_*): used by `syncd backfill`, the
// write-back queue and the key distribution. Without the secret key none of
// them runs; write-back and the interval may be set without it (unused).
struct ClerkApi {
    std::string secret_key;                         // never logged, never printed
    std::string api_url = "https://api.clerk.com";  // http(s), no trailing slash
    bool writeback = false;
    std::int64_t jwks_interval = 300;  // seconds
    bool enabled() const { return !secret_key.empty(); }
};

struct Config {
    ListenAddress listen{"127.0.0.1", 8787};
    std::string database_url;  // libpq conninfo or URL; never logged
    RedisSettings redis;
    bool redis_set = false;
    std::string redis_prefix;
    std::string webhook_secrets;       // the raw list; decoded by signature.hpp
    std::string webhook_secrets_file;  // alternative: a file holding the list
    std::string webhook_path = "/webhooks/clerk";
    std::size_t max_body = 1024 * 1024;
    LogLevel log_level = LogLevel::info;
    int db_pool = 16;
    // Clerk's inactivity timeout, as set for the instance: written to session
    // hashes as idle_timeout (the module enforces it with last_active_at),
    // since Clerk sends no webhook when a session lapses. 0: off.
    std::int64_t session_idle_timeout = 0;
    // Seconds: webhook_events, dead letters, ended sessions and removed
    // memberships older than this are pruned in the background.
    std::int64_t event_retention = 30LL * 24 * 3600;
    // Connections one client address may hold at once (libmicrohttpd's
    // per-IP limit): a slow client cannot take every slot.
    int max_connections_per_ip = 32;
    // Seconds a client has to send a whole request (headers and body);
    // past it the connection is closed.
    int request_deadline = 10;
    // Seconds `syncd migrate` waits for PostgreSQL to come up (0: no wait).
    int startup_wait = 60;
    ClerkApi clerk_api;
};

using Environment = std::map<std::string, std::string>;

// Parses KEY=value lines: blank lines and lines starting with '#' are
// skipped, an optional "export " prefix is allowed, a value wrapped in single
// or double quotes is unwrapped. Throws ConfigError with the line number.
Environment parse_env_file(const std::string& text, const std::string& origin);

// Builds a Config from the environment overlaid by the file's keys (a file
// named with --config wins over the environment). Only SYNCD_* names are
// read. An unknown name in the file is an error, so that a typo is not
// silently ignored; in the environment, which other programs share, it is
// reported through `warnings`.
Config load_config(const Environment& env, const Environment& file,
                   std::vector<std::string>* warnings = nullptr);

// What a subcommand needs: throws ConfigError naming the first missing key.
enum class Need { database = 1, redis = 2, secrets = 4, clerk_api = 8 };
void require(const Config& cfg, int needs);

// Single values, exposed for tests.
ListenAddress parse_listen(const std::string& key, const std::string& value);
// SYNCD_REDIS_URL through the grammar shared with the module
// (common/redis_address.hpp): every form, cluster:// included.
session::common::RedisAddress parse_redis_url(const std::string& key, const std::string& value);
std::size_t parse_size(const std::string& key, const std::string& value);
LogLevel parse_log_level(const std::string& key, const std::string& value);
// Seconds, from a number with an optional s, m, h or d suffix.
std::int64_t parse_duration(const std::string& key, const std::string& value);
// SYNCD_CLERK_API_URL: http:// or https://, a host, an optional path; no
// query, fragment or credentials. Returned without a trailing slash.
std::string parse_api_url(const std::string& key, const std::string& value);

// The SYNCD_* keys syncd knows, for check-config and the unknown-key check.
const std::vector<std::string>& known_keys();

}  // namespace syncd
