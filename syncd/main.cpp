// syncd: the identity provider's signed webhooks into PostgreSQL and Redis.
// Subcommands: serve, migrate, reconcile, check-config; --version.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/backfill_page.hpp"
#include "core/config.hpp"
#include "core/signature.hpp"
#include "daemon/backfill.hpp"
#include "daemon/log.hpp"
#include "daemon/migrate.hpp"
#include "daemon/pg.hpp"
#include "daemon/reconcile.hpp"
#include "daemon/serve.hpp"

#ifndef SYNCD_VERSION
#define SYNCD_VERSION "0.0.0"
#endif

extern char** environ;

namespace {

constexpr int kExitUsage = 2;
constexpr int kExitConfig = 78;  // EX_CONFIG: systemd's RestartPreventExitStatus

const char* kUsage =
    "usage: syncd [--config FILE] COMMAND\n"
    "commands:\n"
    "  serve          receive webhooks (see docs/syncd.md)\n"
    "  migrate        apply the schema migrations to SYNCD_DATABASE_URL\n"
    "  reconcile      rebuild the Redis projection from PostgreSQL\n"
    "  backfill [--since TIME]\n"
    "                 import users, organizations, memberships and active sessions\n"
    "                 from Clerk's Backend API (SYNCD_CLERK_SECRET_KEY)\n"
    "  check-config   validate the configuration and exit\n"
    "  --version      print the version\n";

syncd::Environment process_environment() {
    syncd::Environment env;
    for (char** e = environ; e && *e; ++e) {
        const char* eq = std::strchr(*e, '=');
        if (eq)
            env.emplace(std::string(*e, static_cast<std::size_t>(eq - *e)), std::string(eq + 1));
    }
    return env;
}

syncd::Config load(const std::string& config_file) {
    syncd::Environment file;
    if (!config_file.empty()) {
        std::ifstream in(config_file);
        if (!in) throw syncd::ConfigError("--config: cannot read " + config_file);
        std::ostringstream text;
        text << in.rdbuf();
        file = syncd::parse_env_file(text.str(), config_file);
    }
    std::vector<std::string> warnings;
    syncd::Config cfg = syncd::load_config(process_environment(), file, &warnings);
    for (const auto& w : warnings) std::fprintf(stderr, "syncd: warning: %s\n", w.c_str());
    return cfg;
}

int check_config(const syncd::Config& cfg) {
    syncd::require(cfg, static_cast<int>(syncd::Need::database) |
                            static_cast<int>(syncd::Need::redis) |
                            static_cast<int>(syncd::Need::secrets));
    auto keys = syncd::parse_secrets(
        cfg.webhook_secrets_file.empty() ? "SYNCD_WEBHOOK_SECRETS" : "SYNCD_WEBHOOK_SECRETS_FILE",
        syncd::secrets_text(cfg));
    std::printf(
        "configuration ok: listen %s:%d, webhook path %s, redis %s, prefix \"%s\", "
        "%zu webhook secret(s), max body %zu bytes\n",
        cfg.listen.host.c_str(), cfg.listen.port, cfg.webhook_path.c_str(),
        cfg.redis.redacted().c_str(), cfg.redis_prefix.c_str(), keys.size(), cfg.max_body);
    // Whether the secret key is set, never any part of it.
    std::printf("clerk backend api: %s, secret key %s, write-back %s, jwks every %llds\n",
                cfg.clerk_api.api_url.c_str(), cfg.clerk_api.enabled() ? "set" : "not set",
                cfg.clerk_api.writeback ? "on" : "off",
                static_cast<long long>(cfg.clerk_api.jwks_interval));
    std::string eviction = syncd::eviction_policy_warning(cfg);
    if (!eviction.empty()) std::fprintf(stderr, "syncd: warning: %s\n", eviction.c_str());
    return 0;
}

// Waits up to SYNCD_STARTUP_WAIT for PostgreSQL to accept connections (not
// listening yet, or starting up), so that the unit's `migrate` does not fail
// at boot when PostgreSQL comes up after syncd. A server that answers, even
// to refuse the credentials, ends the wait: the connection reports why.
void wait_for_postgres(const syncd::Config& cfg) {
    auto params = syncd::pg_connect_params(cfg.database_url);
    std::vector<const char*> keys, values;
    for (const auto& [key, value] : params) {
        keys.push_back(key.c_str());
        values.push_back(value.c_str());
    }
    keys.push_back(nullptr);
    values.push_back(nullptr);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(cfg.startup_wait);
    auto backoff = std::chrono::milliseconds(250);
    bool logged = false;
    while (true) {
        PGPing ping = PQpingParams(keys.data(), values.data(), /*expand_dbname=*/0);
        if (ping == PQPING_OK || ping == PQPING_NO_ATTEMPT) return;
        auto now = std::chrono::steady_clock::now();
        if (now >= deadline) return;  // connecting reports the reason
        if (!logged) {
            syncd::log::info("waiting up to " + std::to_string(cfg.startup_wait) +
                             " s for PostgreSQL to accept connections (SYNCD_STARTUP_WAIT)");
            logged = true;
        }
        std::this_thread::sleep_for(
            std::min<std::chrono::steady_clock::duration>(backoff, deadline - now));
        backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
    }
}

int run_migrate(const syncd::Config& cfg) {
    syncd::require(cfg, static_cast<int>(syncd::Need::database));
    wait_for_postgres(cfg);
    auto conn = syncd::pg_connect(cfg.database_url);
    auto report = syncd::migrate(conn.get(), syncd::embedded_migrations());
    std::printf("migrations: %d applied, %d already applied\n", report.applied, report.already);
    return 0;
}

int run_backfill(const syncd::Config& cfg, const std::vector<std::string>& args) {
    syncd::require(
        cfg, static_cast<int>(syncd::Need::database) | static_cast<int>(syncd::Need::clerk_api));
    syncd::BackfillOptions options;
    for (std::size_t i = 0; i + 1 < args.size(); i += 2) {
        if (args[i] == "--since") {
            auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
            options.since_ms = syncd::backfill::parse_since(args[i + 1], now);
        } else {  // --limit: the page size, for tests
            int limit = std::atoi(args[i + 1].c_str());
            if (limit < 1 || limit > 500) throw syncd::ConfigError("--limit: expected 1-500");
            options.page_limit = limit;
        }
    }
    std::printf("backfill: %s\n", syncd::run_backfill(cfg, options).c_str());
    return 0;
}

int run_reconcile(const syncd::Config& cfg) {
    syncd::require(cfg,
                   static_cast<int>(syncd::Need::database) | static_cast<int>(syncd::Need::redis));
    auto report = syncd::reconcile(cfg);
    std::printf("reconcile: %s\n", report.summary().c_str());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::string config_file;
    std::string command;
    std::vector<std::string> backfill_args;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg == "--config" && i + 1 < argc) {
            config_file = argv[++i];
        } else if (arg.rfind("--config=", 0) == 0) {
            config_file = arg.substr(9);
        } else if (arg == "--version" || arg == "-V") {
            std::printf("syncd %s\n", SYNCD_VERSION);
            return 0;
        } else if (arg == "--help" || arg == "-h") {
            std::fputs(kUsage, stdout);
            return 0;
        } else if (command == "backfill" && (arg == "--since" || arg == "--limit") &&
                   i + 1 < argc) {
            backfill_args.push_back(arg);
            backfill_args.push_back(argv[++i]);
        } else if (command.empty() && arg[0] != '-') {
            command = arg;
        } else {
            std::fprintf(stderr, "syncd: unexpected argument \"%s\"\n%s", arg.c_str(), kUsage);
            return kExitUsage;
        }
    }
    if (command.empty()) {
        std::fputs(kUsage, stderr);
        return kExitUsage;
    }
    try {
        syncd::Config cfg = load(config_file);
        syncd::log::set_level(cfg.log_level);
        if (command == "serve") {
            syncd::require(cfg, static_cast<int>(syncd::Need::database) |
                                    static_cast<int>(syncd::Need::redis) |
                                    static_cast<int>(syncd::Need::secrets));
            return syncd::serve(cfg, [config_file] { return load(config_file); });
        }
        if (command == "migrate") return run_migrate(cfg);
        if (command == "reconcile") return run_reconcile(cfg);
        if (command == "backfill") return run_backfill(cfg, backfill_args);
        if (command == "check-config") return check_config(cfg);
        std::fprintf(stderr, "syncd: unknown command \"%s\"\n%s", command.c_str(), kUsage);
        return kExitUsage;
    } catch (const syncd::ConfigError& e) {
        std::fprintf(stderr, "syncd: configuration error: %s\n", e.what());
        return kExitConfig;
    } catch (const std::exception& e) {
        syncd::log::error(e.what());
        return 1;
    }
}
