#include "daemon/serve.hpp"

#include <signal.h>
#include <systemd/sd-daemon.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include "core/signature.hpp"
#include "daemon/http.hpp"
#include "daemon/log.hpp"
#include "daemon/pg.hpp"
#include "daemon/projector.hpp"
#include "daemon/redis.hpp"
#include "daemon/retention.hpp"
#include "daemon/sentinel_watch.hpp"
#include "daemon/service.hpp"
#include "daemon/writeback.hpp"

namespace syncd {
namespace {

void notify(const std::string& state) {
    sd_notify(0, state.c_str());
}

// Tells, without failing, whether each store answers now. Start-up goes on
// either way: requests answer 503 and the projector retries until they do.
void probe_stores(const Config& cfg) {
    try {
        pg_connect(cfg.database_url);
        log::info("PostgreSQL reachable");
    } catch (const std::exception& e) {
        log::warn(std::string(e.what()) + "; webhooks get 503 until it answers");
    }
    try {
        Redis redis(cfg.redis, std::chrono::milliseconds(2000));
        redis.command({"PING"});
        log::info("Redis reachable at " + cfg.redis.redacted());
    } catch (const std::exception& e) {
        log::warn(std::string(e.what()) + "; changes wait in the outbox until it answers");
        return;
    }
    std::string warning = eviction_policy_warning(cfg);
    if (!warning.empty()) log::warn(warning);
}

void reload_secrets(Service& service, const ConfigLoader& reload) {
    notify("RELOADING=1");
    try {
        Config fresh = reload();
        service.replace_secrets(parse_secrets("SYNCD_WEBHOOK_SECRETS", secrets_text(fresh)));
        log::info("webhook secrets reloaded");
    } catch (const std::exception& e) {
        log::error(std::string("reload failed, keeping the previous secrets: ") + e.what());
    }
    notify("READY=1");
}

}  // namespace

std::string eviction_policy_warning(const Config& cfg) {
    try {
        Redis redis(cfg.redis, std::chrono::milliseconds(2000));
        auto reply = redis.command({"CONFIG", "GET", "maxmemory-policy"});
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
            reply->element[1]->type != REDIS_REPLY_STRING) {
            return "";
        }
        std::string policy(reply->element[1]->str, reply->element[1]->len);
        if (policy.rfind("allkeys-", 0) != 0) return "";
        return "Redis at " + cfg.redis.redacted() + " has maxmemory-policy " + policy +
               ": it may evict syncd's keys (an evicted tombstone un-deletes a user); use "
               "noeviction or a volatile-* policy";
    } catch (const std::exception&) {
        return "";  // CONFIG may be renamed or refused (managed Redis): not an error
    }
}

std::string secrets_text(const Config& cfg) {
    if (cfg.webhook_secrets_file.empty()) return cfg.webhook_secrets;
    std::ifstream in(cfg.webhook_secrets_file);
    if (!in) {
        throw ConfigError("SYNCD_WEBHOOK_SECRETS_FILE: cannot read " + cfg.webhook_secrets_file +
                          ": " + std::strerror(errno));
    }
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

int serve(const Config& cfg, const ConfigLoader& reload) {
    // Signals are taken synchronously by the main thread; every thread
    // started below inherits this mask.
    sigset_t signals;
    sigemptyset(&signals);
    for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&signals, s);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    signal(SIGPIPE, SIG_IGN);

    const std::string secrets_key =
        cfg.webhook_secrets_file.empty() ? "SYNCD_WEBHOOK_SECRETS" : "SYNCD_WEBHOOK_SECRETS_FILE";
    SecretKeys keys = parse_secrets(secrets_key, secrets_text(cfg));
    int fd = listen_socket(cfg.listen);

    probe_stores(cfg);
    Metrics metrics;
    SentinelWatch sentinel_watch(cfg.redis, metrics);  // sentinel:// only; stops on return
    sentinel_watch.start();
    PgPool pool(cfg.database_url, cfg.db_pool);
    Projector projector(cfg, metrics);
    projector.start();
    Retention retention(cfg.database_url, cfg.event_retention);  // stops on return
    retention.start();
    // Clerk's Backend API (SYNCD_CLERK_SECRET_KEY): the instance's keys for
    // nginx, and the write-back when SYNCD_CLERK_WRITEBACK=on. Their own
    // threads: nothing here is on a webhook's path. Both stop on return.
    std::unique_ptr<KeyFetcher> key_fetcher;
    std::unique_ptr<WriteBack> writeback;
    if (cfg.clerk_api.enabled()) {
        key_fetcher = std::make_unique<KeyFetcher>(cfg, metrics);
        key_fetcher->start();
        if (cfg.clerk_api.writeback) {
            writeback = std::make_unique<WriteBack>(cfg, metrics);
            writeback->start();
        }
        log::info(std::string("Clerk Backend API at ") + cfg.clerk_api.api_url +
                  ": instance keys every " + std::to_string(cfg.clerk_api.jwks_interval) +
                  " s, write-back " + (writeback ? "on" : "off"));
    }
    Service service(cfg, std::move(keys), pool, projector, metrics);
    HttpServer http(service, metrics);
    http.start(fd);
    log::info("listening on " + cfg.listen.host + ":" + std::to_string(cfg.listen.port) +
              ", webhooks at " + cfg.webhook_path);
    notify("READY=1\nSTATUS=listening on " + cfg.listen.host + ":" +
           std::to_string(cfg.listen.port));

    uint64_t watchdog_usec = 0;
    bool watchdog = sd_watchdog_enabled(0, &watchdog_usec) > 0;
    timespec tick{};
    if (watchdog) {
        uint64_t half = watchdog_usec / 2;
        tick.tv_sec = static_cast<time_t>(half / 1000000);
        tick.tv_nsec = static_cast<long>((half % 1000000) * 1000);
    } else {
        tick.tv_sec = 60;
    }
    // The ping vouches for the projector too: it is withheld while the
    // projector's loop has not beaten within the watchdog interval (a call
    // stuck in PostgreSQL or Redis), so that systemd restarts a wedged daemon.
    const auto watchdog_interval = std::chrono::microseconds(watchdog_usec);
    bool withheld = false;
    while (true) {
        int sig = sigtimedwait(&signals, nullptr, &tick);
        if (sig == SIGTERM || sig == SIGINT) break;
        if (sig == SIGHUP) reload_secrets(service, reload);
        if (!watchdog) continue;
        auto stalled = projector.since_heartbeat();
        if (stalled <= watchdog_interval) {
            if (withheld) log::info("projector progressing again; watchdog pings resumed");
            withheld = false;
            notify("WATCHDOG=1");
        } else if (!withheld) {
            withheld = true;
            log::error("projector made no progress for " + std::to_string(stalled.count()) +
                       " ms; withholding the watchdog ping");
        }
    }
    notify("STOPPING=1");
    log::info("stopping: finishing requests in flight");
    http.shutdown(std::chrono::seconds(20));
    if (writeback) writeback->stop();
    if (key_fetcher) key_fetcher->stop();
    projector.stop();
    log::info("stopped");
    return 0;
}

}  // namespace syncd
