#include "daemon/sentinel_watch.hpp"

#include <string>
#include <vector>

#include "common/redis_topology.hpp"
#include "daemon/log.hpp"
#include "daemon/redis_conn.hpp"

namespace syncd {
namespace {

using session::common::RedisEndpoint;

// Connecting to a sentinel and its first replies; short, since stop()
// may have to wait for it.
constexpr std::chrono::milliseconds kTimeout(1000);
// After every sentinel failed in turn.
constexpr std::chrono::milliseconds kRoundPause(1000);
constexpr const char* kChannel = "+switch-master";

std::string text_of(const redisReply* r) {
    return r->str ? std::string(r->str, r->len) : std::string();
}

// Sends `argv` to a sentinel; authenticates first when it answers NOAUTH
// and the URL has credentials (sentinels have a password of their own or
// none, as Redis::ask_sentinel assumes too).
RedisReplyPtr sentinel_command(RedisConn& conn, const session::common::RedisAddress& address,
                               const std::vector<std::string>& argv) {
    auto reply = conn.exchange({argv});
    const redisReply* r = reply[0].get();
    if (r->type == REDIS_REPLY_ERROR && text_of(r).rfind("NOAUTH", 0) == 0 &&
        !address.password.empty()) {
        std::vector<std::string> auth = {"AUTH"};
        if (!address.user.empty()) auth.push_back(address.user);
        auth.push_back(address.password);
        auto done = conn.exchange({auth});
        if (done[0]->type == REDIS_REPLY_ERROR) {
            // The server's words, never the password.
            throw RedisError("the sentinel at " + conn.server() +
                             " refused the credentials: " + text_of(done[0].get()));
        }
        reply = conn.exchange({argv});
    }
    return std::move(reply[0]);
}

}  // namespace

void SentinelWatch::start() {
    if (settings_.address.topology != session::common::RedisTopology::sentinel) return;
    thread_ = std::thread([this] { run(); });
}

void SentinelWatch::stop() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
}

bool SentinelWatch::stopping() {
    std::lock_guard<std::mutex> lock(mu_);
    return stopping_;
}

bool SentinelWatch::pause(std::chrono::milliseconds wait) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, wait, [this] { return stopping_; });
    return !stopping_;
}

void SentinelWatch::check_primary(const RedisEndpoint& sentinel) {
    RedisConn conn(sentinel, ssl_ctx_.get(), settings_.tls, kTimeout);
    const auto& address = settings_.address;
    auto reply = sentinel_command(conn, address,
                                  {"SENTINEL", "get-master-addr-by-name", address.master_name});
    std::string error;
    auto primary = session::common::parse_master_addr(*reply, address.master_name, error);
    if (!primary) throw RedisError("the sentinel at " + conn.server() + ": " + error);
    if (metrics_.set_redis_primary(primary->text())) {
        log::info("Redis primary of \"" + address.master_name + "\" is now " + primary->text() +
                  " (the sentinel at " + conn.server() + "); reconnecting");
    }
}

void SentinelWatch::watch(const RedisEndpoint& sentinel, bool& subscribed) {
    RedisConn conn(sentinel, ssl_ctx_.get(), settings_.tls, kTimeout);
    const auto& address = settings_.address;
    auto reply = sentinel_command(conn, address, {"SUBSCRIBE", kChannel});
    const redisReply* r = reply.get();
    if (r->type == REDIS_REPLY_ERROR) {
        throw RedisError("the sentinel at " + conn.server() + ": SUBSCRIBE " + kChannel + ": " +
                         text_of(r));
    }
    // Subscribed first, then asked: nothing falls between the two.
    check_primary(sentinel);
    subscribed = true;
    log::debug("following " + std::string(kChannel) + " on the sentinel at " + conn.server());
    while (!stopping()) {
        auto message = conn.next_message(kPoll);
        if (!message) continue;
        // ["message", channel, payload]
        const redisReply* m = message.get();
        if (m->type != REDIS_REPLY_ARRAY || m->elements != 3 ||
            m->element[2]->type != REDIS_REPLY_STRING || text_of(m->element[0]) != "message") {
            continue;
        }
        std::string error;
        auto change = session::common::parse_switch_master(text_of(m->element[2]), error);
        if (!change) {
            log::warn("the sentinel at " + conn.server() + ": " + error);
            continue;
        }
        if (change->master_name != address.master_name) continue;  // another group's
        // Logged whether or not a reconnection found the new primary first:
        // counted once either way (set_redis_primary).
        log::info("the sentinel at " + conn.server() + " announced a new primary for \"" +
                  address.master_name + "\": " + change->old_primary.text() + " -> " +
                  change->new_primary.text());
        metrics_.set_redis_primary(change->new_primary.text());
    }
}

void SentinelWatch::run() {
    try {
        if (settings_.tls.enabled) ssl_ctx_ = make_tls_context(settings_.tls);
    } catch (const RedisError& e) {
        log::error("sentinel subscription: " + std::string(e.what()));
        return;  // the projector reports the same error on every attempt
    }
    session::common::SentinelRotation rotation(settings_.address.endpoints);
    bool failing = false;
    while (!stopping()) {
        if (rotation.exhausted()) {
            if (!pause(kRoundPause)) return;
            rotation.new_round();
        }
        const RedisEndpoint sentinel = rotation.current();
        bool subscribed = false;
        try {
            watch(sentinel, subscribed);
            return;  // stopping
        } catch (const RedisError& e) {
            if (subscribed) {
                // It worked for a while: a new round of failures, starting
                // with the next sentinel.
                rotation.succeeded();
                failing = false;
            }
            if (!failing) {
                log::warn("sentinel subscription: " + std::string(e.what()) +
                          "; trying the next sentinel");
            }
            failing = true;
            rotation.failed();
        }
        if (!pause(SentinelWatch::kPoll)) return;
    }
}

}  // namespace syncd
