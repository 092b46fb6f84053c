// `syncd serve`: wires the pool, projector and HTTP server, talks to systemd
// (READY, STOPPING, RELOADING, WATCHDOG) and handles signals synchronously
// in the main thread: SIGTERM/SIGINT stop gracefully, SIGHUP reloads the
// webhook secrets.
#pragma once

#include <functional>
#include <string>

#include "core/config.hpp"

namespace syncd {

// Re-reads the configuration (file and environment) for SIGHUP.
using ConfigLoader = std::function<Config()>;

// Reads the secrets from SYNCD_WEBHOOK_SECRETS_FILE when set, else from
// SYNCD_WEBHOOK_SECRETS. Throws ConfigError naming the key.
std::string secrets_text(const Config& cfg);

// Returns the process exit code.
int serve(const Config& cfg, const ConfigLoader& reload);

// A warning when the configured Redis evicts any key under memory pressure
// (`maxmemory-policy allkeys-*`): an evicted tombstone un-deletes a user.
// Empty when the policy is safe or cannot be read (errors are ignored).
std::string eviction_policy_warning(const Config& cfg);

}  // namespace syncd
