#include "nginx/redis_sentinel.hpp"

#include <arpa/inet.h>
#include <hiredis/hiredis.h>

#include <array>
#include <cstring>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include "common/redis_topology.hpp"
#include "core/backoff.hpp"
#include "nginx/redis_conn.hpp"

namespace session::ngx {
namespace {

constexpr std::string_view kSwitchChannel = "+switch-master";
// Two links per worker ask and follow (lookups, revocations), plus the
// watch itself after a resubscription.
constexpr std::size_t kMaxWaiters = 4;

template <typename Fn>
struct Waiter {
    void* owner;
    Fn fn;
};

bool starts_with(const redisReply* reply, std::string_view code) noexcept {
    return reply != nullptr && reply->type == REDIS_REPLY_ERROR && reply->str != nullptr &&
           std::string_view(reply->str, reply->len).substr(0, code.size()) == code;
}

}  // namespace

// An address as a sentinel (or a cluster node) gives it; false for a host name.
bool to_primary(const common::RedisEndpoint& endpoint, SentinelPrimary& out) noexcept {
    ngx_memzero(&out, sizeof(out));
    if (endpoint.host.size() >= sizeof(out.host)) {
        return false;
    }
    if (inet_pton(AF_INET, endpoint.host.c_str(), &out.sockaddr.sockaddr_in.sin_addr) == 1) {
        out.sockaddr.sockaddr_in.sin_family = AF_INET;
        out.sockaddr.sockaddr_in.sin_port = htons(endpoint.port);
        out.socklen = sizeof(struct sockaddr_in);
    } else if (inet_pton(AF_INET6, endpoint.host.c_str(), &out.sockaddr.sockaddr_in6.sin6_addr) ==
               1) {
        out.sockaddr.sockaddr_in6.sin6_family = AF_INET6;
        out.sockaddr.sockaddr_in6.sin6_port = htons(endpoint.port);
        out.socklen = sizeof(struct sockaddr_in6);
    } else {
        return false;
    }
    ngx_memcpy(out.host, endpoint.host.data(), endpoint.host.size());
    try {
        std::string text = endpoint.text();
        std::size_t n = std::min(text.size(), sizeof(out.text) - 1);
        ngx_memcpy(out.text, text.data(), n);
    } catch (...) {
        return false;
    }
    return true;
}

namespace {

class Sentinels {
  public:
    Sentinels(ngx_cycle_t* cycle, const RedisConf* conf, std::vector<common::RedisEndpoint> all)
        : conf_(conf),
          log_(cycle->log),
          rotation_(std::move(all)),
          query_(cycle->log, this, on_ready, on_query_lost),
          watch_(cycle->log, this, on_ready, on_watch_lost) {
        for (ngx_event_t* ev : {&query_start_, &query_timer_, &watch_start_, &watch_timer_}) {
            ev->data = this;
            ev->log = log_;
            ev->cancelable = 1;  // graceful shutdown does not wait for these
        }
        query_start_.handler = on_query_start;
        query_timer_.handler = on_query_timeout;
        watch_start_.handler = on_watch_start;
        watch_timer_.handler = on_watch_timeout;
    }

    void start() noexcept { ngx_add_timer(&watch_start_, 0); }

    void stop() noexcept {
        stopping_ = true;
        for (ngx_event_t* ev : {&query_start_, &query_timer_, &watch_start_, &watch_timer_}) {
            if (ev->timer_set) ngx_del_timer(ev);
        }
        query_.close();
        watch_.close();
    }

    bool find(void* owner, PrimaryFound fn) noexcept {
        if (!add(waiters_, owner, fn)) {
            return false;
        }
        if (!query_.is_open() && !query_start_.timer_set) {
            ngx_add_timer(&query_start_, 0);  // from the event loop, never inside find()
        }
        return true;
    }

    void cancel(void* owner) noexcept { remove(waiters_, owner); }
    void follow(void* owner, PrimarySwitched fn) noexcept { add(followers_, owner, fn); }
    void unfollow(void* owner) noexcept { remove(followers_, owner); }

  private:
    template <typename Fn>
    static bool add(std::array<Waiter<Fn>, kMaxWaiters>& list, void* owner, Fn fn) noexcept {
        for (auto& w : list) {
            if (w.owner == owner) {
                w.fn = fn;
                return true;
            }
        }
        for (auto& w : list) {
            if (w.owner == nullptr) {
                w = {owner, fn};
                return true;
            }
        }
        return false;
    }

    template <typename Fn>
    static void remove(std::array<Waiter<Fn>, kMaxWaiters>& list, void* owner) noexcept {
        for (auto& w : list) {
            if (w.owner == owner) w = {nullptr, nullptr};
        }
    }

    const RedisNodeAddr* node_for(const common::RedisEndpoint& endpoint) const noexcept {
        auto* nodes = static_cast<const RedisNodeAddr*>(conf_->nodes->elts);
        for (ngx_uint_t i = 0; i < conf_->nodes->nelts; ++i) {
            if (to_view(nodes[i].host) == endpoint.host &&
                nodes[i].port == static_cast<ngx_int_t>(endpoint.port)) {
                return &nodes[i];
            }
        }
        return nullptr;
    }

    bool open(RedisConn& conn, const RedisNodeAddr& node) noexcept {
        RedisPeer peer{};
        peer.sockaddr = node.addr.sockaddr;
        peer.socklen = node.addr.socklen;
        peer.name = const_cast<ngx_str_t*>(&node.text);
        peer.ssl = conf_->ssl;
        peer.server_name = conf_->server_name.len > 0 ? conf_->server_name : node.host;
        peer.verify = conf_->tls_verify != 0;
        return conn.open(peer);
    }

    bool send(RedisConn& conn, RedisReplyFn fn, std::initializer_list<std::string_view> args,
              bool every_reply = false) noexcept {
        std::array<const char*, 4> argv{};
        std::array<std::size_t, 4> argvlen{};
        int argc = 0;
        for (std::string_view arg : args) {
            argv[argc] = arg.data();
            argvlen[argc] = arg.size();
            ++argc;
        }
        return conn.send(fn, nullptr, argc, argv.data(), argvlen.data(), every_reply);
    }

    bool send_auth(RedisConn& conn, RedisReplyFn fn) noexcept {
        if (conf_->user.len > 0) {
            return send(conn, fn, {"AUTH", to_view(conf_->user), to_view(conf_->password)});
        }
        return send(conn, fn, {"AUTH", to_view(conf_->password)});
    }

    bool send_question() noexcept {
        return send(query_, on_master_addr,
                    {"SENTINEL", "get-master-addr-by-name", to_view(conf_->master_name)});
    }

    // --- the question ---------------------------------------------------------

    static void on_query_start(ngx_event_t* ev) noexcept {
        auto* self = static_cast<Sentinels*>(ev->data);
        if (self->stopping_ || self->query_.is_open()) {
            return;
        }
        bool waiting = false;
        for (auto& w : self->waiters_) waiting = waiting || w.owner != nullptr;
        if (!waiting) {
            return;
        }
        const RedisNodeAddr* node = self->node_for(self->rotation_.current());
        if (node == nullptr) {
            self->query_failed("not in the configuration");
            return;
        }
        self->asked_ = node;
        self->query_authed_ = false;
        if (!self->open(self->query_, *node)) {
            self->query_failed(self->query_.reason());
            return;
        }
        if (!self->send_question()) {
            self->query_failed("out of memory");
            return;
        }
        ngx_add_timer(&self->query_timer_, self->conf_->connect_timeout + self->conf_->timeout);
    }

    static void on_master_addr(void* owner, redisReply* reply, void*) noexcept {
        auto* self = static_cast<Sentinels*>(owner);
        if (reply == nullptr) {
            return;  // closed: whoever closed it said why
        }
        if (starts_with(reply, "NOAUTH") && self->conf_->password.len > 0 && !self->query_authed_) {
            // A sentinel with requirepass: the session_redis credentials.
            self->query_authed_ = true;
            if (!self->send_auth(self->query_, on_query_auth) || !self->send_question()) {
                self->query_failed("out of memory");
            }
            return;
        }
        std::string error;
        auto endpoint = common::parse_master_addr(*reply, to_view(self->conf_->master_name), error);
        SentinelPrimary primary;
        if (!endpoint) {
            self->query_failed(error.c_str());
            return;
        }
        if (!to_primary(*endpoint, primary)) {
            self->query_failed("it named the primary by a host name, not an address");
            return;
        }
        if (self->query_timer_.timer_set) {
            ngx_del_timer(&self->query_timer_);
        }
        self->query_.close();
        self->rotation_.succeeded();
        if (self->failure_logged_) {
            ngx_log_error(NGX_LOG_NOTICE, self->log_, 0,
                          "session_redis %V: the sentinel at %V names the primary %s",
                          &self->conf_->address_text, &self->asked_->text, primary.text);
        }
        self->failure_logged_ = false;
        self->deliver(&primary);
    }

    static void on_query_auth(void* owner, redisReply* reply, void*) noexcept {
        auto* self = static_cast<Sentinels*>(owner);
        if (reply != nullptr && reply->type == REDIS_REPLY_ERROR) {
            // Redis's message (WRONGPASS, ...) never holds the password.
            std::string why = "AUTH failed: ";
            try {
                why.append(reply->str, reply->len);
            } catch (...) {
            }
            self->query_failed(why.c_str());
        }
    }

    static void on_query_lost(void* owner, const char* reason, bool) noexcept {
        static_cast<Sentinels*>(owner)->query_failed(reason);
    }

    static void on_query_timeout(ngx_event_t* ev) noexcept {
        static_cast<Sentinels*>(ev->data)->query_failed(
            "no answer within connect_timeout= + timeout=");
    }

    // This sentinel could not say: the next one, or, when every one failed
    // this round, tell the askers (they back off and ask again).
    void query_failed(const char* why) noexcept {
        if (query_timer_.timer_set) {
            ngx_del_timer(&query_timer_);
        }
        query_.close();
        const ngx_str_t unknown = ngx_string("?");
        const ngx_str_t* where = asked_ != nullptr ? &asked_->text : &unknown;
        if (!failure_logged_ && !stopping_) {
            ngx_log_error(NGX_LOG_WARN, log_, 0, "session_redis %V: sentinel %V: %s",
                          &conf_->address_text, where, why);
        }
        rotation_.failed();
        if (!rotation_.exhausted()) {
            ngx_add_timer(&query_start_, 0);
            return;
        }
        if (!failure_logged_ && !stopping_) {
            ngx_log_error(NGX_LOG_ERR, log_, 0,
                          "session_redis %V: no sentinel named the primary of \"%V\" "
                          "(retrying in the background)",
                          &conf_->address_text, &conf_->master_name);
        }
        failure_logged_ = true;
        rotation_.new_round();
        deliver(nullptr);
    }

    void deliver(const SentinelPrimary* primary) noexcept {
        auto waiters = waiters_;
        waiters_ = {};
        for (auto& w : waiters) {
            if (w.owner != nullptr) w.fn(w.owner, primary);
        }
    }

    // --- the watch ------------------------------------------------------------

    static void on_watch_start(ngx_event_t* ev) noexcept {
        auto* self = static_cast<Sentinels*>(ev->data);
        if (self->stopping_ || self->watch_.is_open()) {
            return;
        }
        auto* nodes = static_cast<const RedisNodeAddr*>(self->conf_->nodes->elts);
        const RedisNodeAddr& node = nodes[self->watch_index_ % self->conf_->nodes->nelts];
        self->watched_ = &node;
        if (!self->open(self->watch_, node)) {
            self->watch_failed(self->watch_.reason());
            return;
        }
        // PING first: a NOAUTH answer says whether this sentinel wants AUTH.
        if (!self->send(self->watch_, on_watch_ping, {"PING"})) {
            self->watch_failed("out of memory");
            return;
        }
        ngx_add_timer(&self->watch_timer_, self->conf_->connect_timeout + self->conf_->timeout);
    }

    static void on_watch_ping(void* owner, redisReply* reply, void*) noexcept {
        auto* self = static_cast<Sentinels*>(owner);
        if (reply == nullptr) {
            return;
        }
        if (starts_with(reply, "NOAUTH") && self->conf_->password.len > 0) {
            if (!self->send_auth(self->watch_, on_watch_auth)) {
                self->watch_failed("out of memory");
                return;
            }
        } else if (reply->type == REDIS_REPLY_ERROR) {
            self->watch_failed(reply->str);
            return;
        }
        // Every reply from here on is a message.
        if (!self->send(self->watch_, on_watch_message, {"SUBSCRIBE", kSwitchChannel}, true)) {
            self->watch_failed("out of memory");
        }
    }

    static void on_watch_auth(void* owner, redisReply* reply, void*) noexcept {
        auto* self = static_cast<Sentinels*>(owner);
        if (reply != nullptr && reply->type == REDIS_REPLY_ERROR) {
            self->watch_failed("AUTH failed");
        }
    }

    static void on_watch_message(void* owner, redisReply* reply, void*) noexcept {
        auto* self = static_cast<Sentinels*>(owner);
        if (reply == nullptr) {
            return;
        }
        if (reply->type == REDIS_REPLY_ERROR) {
            self->watch_failed(reply->str);
            return;
        }
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
            reply->element[0]->type != REDIS_REPLY_STRING) {
            return;
        }
        std::string_view kind(reply->element[0]->str, reply->element[0]->len);
        if (kind == "subscribe") {
            self->subscribed();
        } else if (kind == "message" && reply->element[2]->type == REDIS_REPLY_STRING) {
            self->switched(std::string_view(reply->element[2]->str, reply->element[2]->len));
        }
    }

    void subscribed() noexcept {
        if (watch_timer_.timer_set) {
            ngx_del_timer(&watch_timer_);
        }
        if (watch_failure_logged_) {
            ngx_log_error(NGX_LOG_NOTICE, log_, 0,
                          "session_redis %V: watching +switch-master on the sentinel at %V",
                          &conf_->address_text, &watched_->text);
        }
        watch_failure_logged_ = false;
        watch_backoff_.reset();
        if (watched_once_) {
            // A switch announced while the watch was away is not announced
            // again: ask, and let the links compare.
            find(this, on_resync);
        }
        watched_once_ = true;
    }

    static void on_resync(void* owner, const SentinelPrimary* primary) noexcept {
        if (primary != nullptr) {
            static_cast<Sentinels*>(owner)->notify(*primary);
        }
    }

    void switched(std::string_view payload) noexcept {
        std::string error;
        auto change = common::parse_switch_master(payload, error);
        if (!change || change->master_name != to_view(conf_->master_name)) {
            return;  // another group's, or not a switch
        }
        SentinelPrimary primary;
        if (!to_primary(change->new_primary, primary)) {
            return;  // a host name: the links find out by asking
        }
        ngx_log_error(NGX_LOG_NOTICE, log_, 0,
                      "session_redis %V: +switch-master: the primary is now %s",
                      &conf_->address_text, primary.text);
        notify(primary);
    }

    void notify(const SentinelPrimary& primary) noexcept {
        auto followers = followers_;
        for (auto& f : followers) {
            if (f.owner != nullptr) f.fn(f.owner, primary);
        }
    }

    static void on_watch_lost(void* owner, const char* reason, bool) noexcept {
        static_cast<Sentinels*>(owner)->watch_failed(reason);
    }

    static void on_watch_timeout(ngx_event_t* ev) noexcept {
        static_cast<Sentinels*>(ev->data)->watch_failed(
            "no answer within connect_timeout= + timeout=");
    }

    // Subscribe on the next sentinel after a back-off: the links still
    // find a new primary through their own connections meanwhile.
    void watch_failed(const char* why) noexcept {
        if (watch_timer_.timer_set) {
            ngx_del_timer(&watch_timer_);
        }
        watch_.close();
        if (!watch_failure_logged_ && !stopping_ && watched_ != nullptr) {
            ngx_log_error(NGX_LOG_WARN, log_, 0,
                          "session_redis %V: cannot watch +switch-master on the sentinel at %V: "
                          "%s (trying the next one)",
                          &conf_->address_text, &watched_->text, why);
        }
        watch_failure_logged_ = true;
        ++watch_index_;
        if (!stopping_ && !watch_start_.timer_set) {
            ngx_add_timer(&watch_start_, static_cast<ngx_msec_t>(watch_backoff_.next_delay_ms()));
        }
    }

    static void on_ready(void*) noexcept {}

    const RedisConf* conf_;
    ngx_log_t* log_;
    common::SentinelRotation rotation_;
    RedisConn query_;
    RedisConn watch_;
    ngx_event_t query_start_{};
    ngx_event_t query_timer_{};
    ngx_event_t watch_start_{};
    ngx_event_t watch_timer_{};
    std::array<Waiter<PrimaryFound>, kMaxWaiters> waiters_{};
    std::array<Waiter<PrimarySwitched>, kMaxWaiters> followers_{};
    const RedisNodeAddr* asked_ = nullptr;    // the sentinel being asked
    const RedisNodeAddr* watched_ = nullptr;  // the sentinel watched
    std::size_t watch_index_ = 0;
    core::ReconnectBackoff watch_backoff_;
    bool query_authed_ = false;
    bool failure_logged_ = false;  // one line per outage, not per round
    bool watch_failure_logged_ = false;
    bool watched_once_ = false;
    bool stopping_ = false;
};

Sentinels* g_sentinels = nullptr;

}  // namespace

void sentinel_start(ngx_cycle_t* cycle, const RedisConf* conf) noexcept {
    if (g_sentinels != nullptr || conf->topology != RedisTopologyKind::sentinel ||
        conf->nodes == nullptr || conf->nodes->nelts == 0) {
        return;
    }
    try {
        std::vector<common::RedisEndpoint> endpoints;
        auto* nodes = static_cast<const RedisNodeAddr*>(conf->nodes->elts);
        for (ngx_uint_t i = 0; i < conf->nodes->nelts; ++i) {
            common::RedisEndpoint e;
            e.host.assign(reinterpret_cast<const char*>(nodes[i].host.data), nodes[i].host.len);
            e.port = static_cast<std::uint16_t>(nodes[i].port);
            endpoints.push_back(std::move(e));
        }
        g_sentinels = new Sentinels(cycle, conf, std::move(endpoints));
    } catch (...) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0, "session_redis: out of memory");
        return;
    }
    g_sentinels->start();
}

void sentinel_stop() noexcept {
    if (g_sentinels != nullptr) {
        g_sentinels->stop();
        delete g_sentinels;
        g_sentinels = nullptr;
    }
}

bool sentinel_find_primary(void* owner, PrimaryFound found) noexcept {
    return g_sentinels != nullptr && g_sentinels->find(owner, found);
}

void sentinel_cancel(void* owner) noexcept {
    if (g_sentinels != nullptr) g_sentinels->cancel(owner);
}

void sentinel_follow(void* owner, PrimarySwitched switched) noexcept {
    if (g_sentinels != nullptr) g_sentinels->follow(owner, switched);
}

void sentinel_unfollow(void* owner) noexcept {
    if (g_sentinels != nullptr) g_sentinels->unfollow(owner);
}

}  // namespace session::ngx
