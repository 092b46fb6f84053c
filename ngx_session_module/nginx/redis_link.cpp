#include "nginx/redis_link.hpp"

#include <hiredis/hiredis.h>
#include <time.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <new>
#include <string>

#include "core/backoff.hpp"
#include "core/flat_record.hpp"
#include "core/redis_scripts.hpp"
#include "core/revocation.hpp"
#include "nginx/metrics_zone.hpp"
#include "nginx/redis_conn.hpp"

namespace session::ngx {

struct Lookup {
    void* owner = nullptr;  // nullptr once detached
    LookupDone done = nullptr;
    OverlayDone overlay_done = nullptr;  // set for an overlay read instead of `done`
    int replies_pending = 0;             // overlay: replies still to come
    std::string session_part;            // overlay: the session half, flat
    ngx_event_t timer{};
    timespec sent{};        // the check's first send (a second read inherits it)
    bool finished = false;  // `done` already ran (timeout or failure)
    bool followed = false;  // a second read goes on with the check (redis_lookup_user)
};

namespace {

constexpr ngx_msec_t kMaxResolveMs = 5000;

enum class LinkState { disconnected, connecting, connected };

// What a connection is for: lookups and touches, or listening on the
// revocation channel (a subscribed connection can send nothing else).
enum class LinkRole { lookups, revocations };

struct Touch;

class Link {
  public:
    Link(ngx_cycle_t* cycle, const MainConf* conf, LinkRole role, RevocationHandler on_revocation,
         ResubscribeHandler on_resubscribe)
        : conf_(&conf->redis),
          log_(cycle->log),
          role_(role),
          on_revocation_(on_revocation),
          on_resubscribe_(on_resubscribe),
          touch_sha_(core::script_sha1(core::kTouchScript)),
          conn_(cycle->log, this, on_ready, on_lost) {
        init_timer(&reconnect_timer_, on_reconnect_timer);
        init_timer(&connect_timer_, on_connect_timer);
        init_timer(&dead_timer_, on_dead_timer);
        ngx_memcpy(&address_, conf_->addr.sockaddr, conf_->addr.socklen);
        socklen_ = conf_->addr.socklen;
        find_resolver(cycle);
    }

    void start() noexcept { connect(); }

    void stop() noexcept {
        stopping_ = true;
        if (reconnect_timer_.timer_set) {
            ngx_del_timer(&reconnect_timer_);
        }
        if (connect_timer_.timer_set) {
            ngx_del_timer(&connect_timer_);
        }
        if (resolving_ != nullptr) {
            ngx_resolve_name_done(resolving_);
            resolving_ = nullptr;
        }
        drop("worker exiting");
    }

    template <std::size_t N>
    Lookup* lookup(std::string_view key, const std::array<std::string_view, N>& fields, void* owner,
                   LookupDone done) noexcept;
    Lookup* overlay(std::string_view session_key, std::string_view user_key, void* owner,
                    OverlayDone done) noexcept;
    void touch(std::string_view session_key, std::int64_t now_ms,
               std::int64_t interval_ms) noexcept;

  private:
    void init_timer(ngx_event_t* ev, ngx_event_handler_pt handler) noexcept {
        ev->handler = handler;
        ev->data = this;
        ev->log = log_;
        ev->cancelable = 1;  // graceful shutdown does not wait for these
    }

    void connect() noexcept;
    void find_resolver(ngx_cycle_t* cycle) noexcept;
    void resolve_then_connect() noexcept;
    static void on_resolved(ngx_resolver_ctx_t* ctx) noexcept;
    void send_handshake() noexcept;
    void drop(const char* reason) noexcept;
    void schedule_reconnect() noexcept;
    template <std::size_t N>
    bool send_hmget(RedisReplyFn fn, std::string_view key,
                    const std::array<std::string_view, N>& fields, void* privdata) noexcept;
    void log_failure(const char* what, const char* detail) noexcept;
    bool command(RedisReplyFn fn, void* privdata, int argc, const char** argv,
                 const std::size_t* argvlen) noexcept;
    void note_answered(const redisReply* reply) noexcept;
    void forget_unanswered() noexcept;

    static void on_reconnect_timer(ngx_event_t* ev) noexcept;
    static void on_connect_timer(ngx_event_t* ev) noexcept;
    static void on_dead_timer(ngx_event_t* ev) noexcept;
    static void on_lookup_timeout(ngx_event_t* ev) noexcept;
    static void on_policy_reply(void* link, redisReply* reply, void* privdata) noexcept;
    static void on_ready(void* link) noexcept;
    static void on_lost(void* link, const char* reason, bool tls) noexcept;
    static void on_handshake_reply(void* link, redisReply* reply, void* step) noexcept;
    static void on_lookup_reply(void* link, redisReply* reply, void* privdata) noexcept;
    static void on_overlay_reply(void* link, redisReply* reply, void* privdata) noexcept;
    Lookup* new_lookup(void* owner) noexcept;
    static void on_touch_reply(void* link, redisReply* reply, void* privdata) noexcept;
    bool send_touch(Touch* touch, bool with_eval) noexcept;
    static void on_channel_message(void* link, redisReply* reply, void* privdata) noexcept;
    void mark_healthy() noexcept;
    // The metrics' connection state follows the lookup connection only.
    void report_connected(bool connected) noexcept {
        if (role_ == LinkRole::lookups) set_worker_connected(connected);
    }

    const RedisConf* conf_;
    ngx_log_t* log_;
    LinkRole role_;
    RevocationHandler on_revocation_;
    ResubscribeHandler on_resubscribe_;
    std::string touch_sha_;
    RedisConn conn_;
    // Where conn_ goes: the configuration's address, or what the resolver
    // last said the name is (with the configured port).
    ngx_sockaddr_t address_{};
    socklen_t socklen_ = 0;
    ngx_resolver_t* resolver_ = nullptr;  // http{}'s, when it has servers and the host is a name
    ngx_msec_t resolver_timeout_ = 0;
    ngx_resolver_ctx_t* resolving_ = nullptr;
    bool resolve_failure_logged_ = false;
    LinkState state_ = LinkState::disconnected;
    ngx_event_t reconnect_timer_{};
    ngx_event_t connect_timer_{};
    core::ReconnectBackoff backoff_;  // immediate first, then 100 ms doubling to 2 s
    // Lookup connection: when each command still unanswered was sent, oldest
    // first (Redis answers in order), and how many there are. The times may
    // lack a few entries (out of memory): the oldest then reads younger than
    // it is, which only delays dead_after=.
    std::deque<ngx_msec_t> sent_at_;
    std::size_t unanswered_ = 0;
    ngx_event_t dead_timer_{};
    bool stopping_ = false;
    bool failure_logged_ = false;   // one log line per outage, not per retry
    bool subscribed_once_ = false;  // revocations: a later SUBSCRIBE is a resubscription
    bool eviction_warned_ = false;  // once per worker, not per reconnect
};

Link* g_link = nullptr;        // lookups
Link* g_subscriber = nullptr;  // revocation channel

std::int64_t elapsed_us(const timespec& since) noexcept {
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    std::int64_t us = (now.tv_sec - since.tv_sec) * 1000000 + (now.tv_nsec - since.tv_nsec) / 1000;
    return std::max<std::int64_t>(us, 0);
}

bool is_noscript(const redisReply* reply) noexcept {
    return reply != nullptr && reply->type == REDIS_REPLY_ERROR && reply->str != nullptr &&
           std::strncmp(reply->str, "NOSCRIPT", 8) == 0;
}

// --- connection lifecycle -----------------------------------------------------

void Link::connect() noexcept {
    if (stopping_ || conn_.is_open()) {
        return;
    }
    RedisPeer peer{};
    peer.sockaddr = &address_.sockaddr;
    peer.socklen = socklen_;
    peer.name = const_cast<ngx_str_t*>(&conf_->address_text);
    peer.ssl = conf_->ssl;
    peer.server_name = conf_->server_name;
    peer.verify = conf_->tls_verify != 0;
    if (!conn_.open(peer)) {
        log_failure(conn_.reason(), "");
        schedule_reconnect();
        return;
    }
    state_ = LinkState::connecting;
    forget_unanswered();
    ngx_add_timer(&connect_timer_, conf_->connect_timeout);
    send_handshake();
}

// http{}'s `resolver`, when it has servers: the name is then looked up
// again before each reconnect, so that a failover that moves a DNS name is
// followed. Without one, the address resolved at configuration load stays.
void Link::find_resolver(ngx_cycle_t* cycle) noexcept {
    if (!conf_->host_is_name) {
        return;
    }
    auto* http = reinterpret_cast<ngx_http_conf_ctx_t*>(cycle->conf_ctx[ngx_http_module.index]);
    auto* clcf =
        static_cast<ngx_http_core_loc_conf_t*>(http->loc_conf[ngx_http_core_module.ctx_index]);
    if (clcf != nullptr && clcf->resolver != nullptr && clcf->resolver->connections.nelts > 0) {
        resolver_ = clcf->resolver;
        // resolver_timeout defaults to 30 s: a reconnect should not wait
        // that long on DNS when the last known address may still work.
        resolver_timeout_ = std::min<ngx_msec_t>(clcf->resolver_timeout, kMaxResolveMs);
    }
}

void Link::resolve_then_connect() noexcept {
    if (stopping_ || conn_.is_open() || resolving_ != nullptr) {
        return;
    }
    if (resolver_ == nullptr) {
        connect();
        return;
    }
    ngx_resolver_ctx_t* ctx = ngx_resolve_start(resolver_, nullptr);
    if (ctx == nullptr || ctx == NGX_NO_RESOLVER) {
        connect();
        return;
    }
    ctx->name = conf_->host;
    ctx->handler = on_resolved;
    ctx->data = this;
    ctx->timeout = resolver_timeout_;
    resolving_ = ctx;
    // The handler may run before this returns (a cached answer).
    if (ngx_resolve_name(ctx) != NGX_OK) {
        resolving_ = nullptr;  // nginx freed ctx
        connect();
    }
}

void Link::on_resolved(ngx_resolver_ctx_t* ctx) noexcept {
    auto* self = static_cast<Link*>(ctx->data);
    self->resolving_ = nullptr;
    if (ctx->state == NGX_OK && ctx->naddrs > 0 &&
        ctx->addrs[0].socklen <= static_cast<socklen_t>(sizeof(self->address_))) {
        ngx_memcpy(&self->address_, ctx->addrs[0].sockaddr, ctx->addrs[0].socklen);
        self->socklen_ = ctx->addrs[0].socklen;
        ngx_inet_set_port(&self->address_.sockaddr, static_cast<in_port_t>(self->conf_->port));
        self->resolve_failure_logged_ = false;
    } else if (!self->resolve_failure_logged_) {
        self->resolve_failure_logged_ = true;
        ngx_log_error(NGX_LOG_WARN, self->log_, 0,
                      "session_redis %V: cannot resolve \"%V\": %s, using the last known address",
                      &self->conf_->address_text, &ctx->name, ngx_resolver_strerror(ctx->state));
    }
    ngx_resolve_name_done(ctx);
    self->connect();
}

// Pipelined ahead of any lookup, so every lookup on this connection runs
// after authentication, database selection and script loading.
void Link::send_handshake() noexcept {
    static const char* kAuth = "AUTH";
    static const char* kSelect = "SELECT";
    static const char* kLoadTouch = "SCRIPT LOAD touch";

    if (conf_->password.len > 0 && conf_->user.len > 0) {
        // An ACL user (Redis 6+): AUTH user password.
        const char* argv[] = {"AUTH", reinterpret_cast<const char*>(conf_->user.data),
                              reinterpret_cast<const char*>(conf_->password.data)};
        std::size_t argvlen[] = {4, conf_->user.len, conf_->password.len};
        command(on_handshake_reply, const_cast<char*>(kAuth), 3, argv, argvlen);
    } else if (conf_->password.len > 0) {
        const char* argv[] = {"AUTH", reinterpret_cast<const char*>(conf_->password.data)};
        std::size_t argvlen[] = {4, conf_->password.len};
        command(on_handshake_reply, const_cast<char*>(kAuth), 2, argv, argvlen);
    }
    if (conf_->db >= 0) {
        u_char db[NGX_INT_T_LEN];
        std::size_t len = ngx_sprintf(db, "%i", conf_->db) - db;
        const char* argv[] = {"SELECT", reinterpret_cast<const char*>(db)};
        std::size_t argvlen[] = {6, len};
        command(on_handshake_reply, const_cast<char*>(kSelect), 2, argv, argvlen);
    }
    if (role_ == LinkRole::revocations) {
        // Two parts, no allocation: the command is encoded at once.
        u_char channel[256];
        std::size_t len = 0;
        if (conf_->prefix.len + kRevocationChannel.size() <= sizeof(channel)) {
            u_char* end = ngx_cpymem(channel, conf_->prefix.data, conf_->prefix.len);
            end = ngx_cpymem(end, kRevocationChannel.data(), kRevocationChannel.size());
            len = end - channel;
        }
        const char* argv[] = {"SUBSCRIBE", reinterpret_cast<const char*>(channel)};
        std::size_t argvlen[] = {9, len};
        // Every reply after this one is a message: all go to the callback.
        conn_.send(on_channel_message, this, 2, argv, argvlen, true);
        return;
    }
    const char* touch_argv[] = {"SCRIPT", "LOAD", core::kTouchScript.data()};
    std::size_t touch_len[] = {6, 4, core::kTouchScript.size()};
    command(on_handshake_reply, const_cast<char*>(kLoadTouch), 3, touch_argv, touch_len);
    // An allkeys-* policy may evict tombstones and bans, which un-deletes
    // users. Refused under an ACL without CONFIG: then nothing is known.
    const char* policy_argv[] = {"CONFIG", "GET", "maxmemory-policy"};
    std::size_t policy_len[] = {6, 3, 16};
    command(on_policy_reply, nullptr, 3, policy_argv, policy_len);
}

// Every command that gets exactly one reply goes through here, so that
// dead_after= knows when the oldest unanswered one was sent. SUBSCRIBE does
// not (its callback runs once per message).
bool Link::command(RedisReplyFn fn, void* privdata, int argc, const char** argv,
                   const std::size_t* argvlen) noexcept {
    if (!conn_.send(fn, privdata, argc, argv, argvlen)) {
        return false;
    }
    if (role_ != LinkRole::lookups) {
        return true;
    }
    ++unanswered_;
    try {
        sent_at_.push_back(static_cast<ngx_msec_t>(ngx_current_msec));
    } catch (...) {
        // See sent_at_: tolerated.
    }
    if (!dead_timer_.timer_set) {
        ngx_add_timer(&dead_timer_, conf_->dead_after);
    }
    return true;
}

// A reply on the current connection (nullptr: it is being closed).
void Link::note_answered(const redisReply* reply) noexcept {
    if (role_ != LinkRole::lookups || reply == nullptr || unanswered_ == 0) {
        return;
    }
    --unanswered_;
    if (sent_at_.size() > unanswered_) {
        sent_at_.pop_front();
    }
    if (unanswered_ == 0 && dead_timer_.timer_set) {
        ngx_del_timer(&dead_timer_);
    }
}

void Link::forget_unanswered() noexcept {
    sent_at_.clear();
    unanswered_ = 0;
    if (dead_timer_.timer_set) {
        ngx_del_timer(&dead_timer_);
    }
}

// Armed while anything is unanswered; re-armed for the oldest command
// rather than on every reply (a busy link answers thousands a second).
void Link::on_dead_timer(ngx_event_t* ev) noexcept {
    auto* self = static_cast<Link*>(ev->data);
    if (self->unanswered_ == 0 || !self->conn_.is_open()) {
        return;
    }
    ngx_msec_t dead_after = self->conf_->dead_after;
    ngx_msec_int_t waited =
        self->sent_at_.empty()
            ? 0
            : static_cast<ngx_msec_int_t>(ngx_current_msec - self->sent_at_.front());
    if (waited < static_cast<ngx_msec_int_t>(dead_after)) {
        ngx_add_timer(&self->dead_timer_,
                      dead_after - static_cast<ngx_msec_t>(std::max<ngx_msec_int_t>(waited, 0)));
        return;
    }
    // Nothing came back for dead_after=: the peer is gone or hung (a
    // partition, a SIGSTOPped or swapping server). Its replies, if any ever
    // come, are of no use: start over.
    char reason[96];
    u_char* end = ngx_snprintf(reinterpret_cast<u_char*>(reason), sizeof(reason) - 1,
                               "no reply for %M ms (dead_after=)", static_cast<ngx_msec_t>(waited));
    *end = '\0';
    self->log_failure("no reply within", "dead_after=");
    self->drop(reason);
}

void Link::on_policy_reply(void* link, redisReply* reply, void*) noexcept {
    auto* self = static_cast<Link*>(link);
    if (self == nullptr || reply == nullptr) {
        return;
    }
    self->note_answered(reply);
    // ["maxmemory-policy", value]; an error (NOPERM) is simply not an answer.
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[1]->type != REDIS_REPLY_STRING) {
        return;
    }
    std::string_view policy(reply->element[1]->str, reply->element[1]->len);
    if (self->eviction_warned_ || policy.substr(0, 8) != "allkeys-") {
        return;
    }
    self->eviction_warned_ = true;
    ngx_log_error(NGX_LOG_WARN, self->log_, 0,
                  "session_redis %V: maxmemory-policy is %*s: Redis may evict session tombstones "
                  "and user bans; use noeviction or volatile-*",
                  &self->conf_->address_text, policy.size(), policy.data());
}

// Closes the connection now; every pending callback runs (with no reply)
// before conn_.close() returns. Safe inside a reply callback. `reason`
// nullptr: the cause was logged already.
void Link::drop(const char* reason) noexcept {
    state_ = LinkState::disconnected;
    report_connected(false);
    forget_unanswered();
    if (connect_timer_.timer_set) {
        ngx_del_timer(&connect_timer_);
    }
    if (conn_.is_open()) {
        if (!stopping_ && reason != nullptr) {
            ngx_log_error(NGX_LOG_WARN, log_, 0, "session_redis %V: closing connection: %s",
                          &conf_->address_text, reason);
        }
        conn_.close();
    }
    schedule_reconnect();
}

void Link::schedule_reconnect() noexcept {
    if (stopping_ || reconnect_timer_.timer_set) {
        return;
    }
    // A zero timer runs on the next turn of the event loop, never inside
    // the reply callback that may have brought us here.
    ngx_add_timer(&reconnect_timer_, static_cast<ngx_msec_t>(backoff_.next_delay_ms()));
}

void Link::log_failure(const char* what, const char* detail) noexcept {
    if (failure_logged_ || stopping_) {
        return;
    }
    failure_logged_ = true;
    ngx_log_error(NGX_LOG_ERR, log_, 0, "session_redis %V: %s%s%s (retrying in the background)",
                  &conf_->address_text, what, detail[0] != '\0' ? " " : "", detail);
}

void Link::on_reconnect_timer(ngx_event_t* ev) noexcept {
    auto* self = static_cast<Link*>(ev->data);
    count_redis_reconnect();
    self->resolve_then_connect();
}

void Link::on_connect_timer(ngx_event_t* ev) noexcept {
    auto* self = static_cast<Link*>(ev->data);
    if (self->state_ == LinkState::connecting) {
        self->log_failure("connect timed out", "");
        self->drop("connect timed out");
    }
}

// TCP connected, and TLS verified when configured: the handshake commands
// already queued go out now.
void Link::on_ready(void* link) noexcept {
    auto* self = static_cast<Link*>(link);
    if (self->connect_timer_.timer_set) {
        ngx_del_timer(&self->connect_timer_);
    }
    self->state_ = LinkState::connected;
    self->report_connected(true);
}

// The connection failed or was lost; every pending command already had its
// nullptr reply.
void Link::on_lost(void* link, const char* reason, bool) noexcept {
    auto* self = static_cast<Link*>(link);
    self->state_ = LinkState::disconnected;
    self->report_connected(false);
    self->forget_unanswered();
    if (self->connect_timer_.timer_set) {
        ngx_del_timer(&self->connect_timer_);
    }
    self->log_failure(reason, "");
    self->schedule_reconnect();
}

void Link::on_handshake_reply(void* link, redisReply* reply, void* step) noexcept {
    auto* self = static_cast<Link*>(link);
    if (self == nullptr || reply == nullptr) {
        return;  // the connection is going away
    }
    self->note_answered(reply);
    if (reply->type == REDIS_REPLY_ERROR) {
        // Redis's own message names the problem (WRONGPASS, NOAUTH, ...); it
        // never contains the password.
        if (!self->failure_logged_) {
            ngx_log_error(NGX_LOG_ERR, self->log_, 0,
                          "session_redis %V: %s failed: %s (retrying in the background)",
                          &self->conf_->address_text, static_cast<const char*>(step), reply->str);
        }
        self->failure_logged_ = true;
        self->drop(nullptr);
        return;
    }
    if (std::strncmp(static_cast<const char*>(step), "SCRIPT LOAD touch", 17) == 0) {
        self->mark_healthy();
    }
}

// The whole handshake went through: the link is healthy again.
void Link::mark_healthy() noexcept {
    if (failure_logged_) {
        ngx_log_error(NGX_LOG_NOTICE, log_, 0, "session_redis %V: connected%s",
                      &conf_->address_text,
                      role_ == LinkRole::revocations ? " (revocation channel)" : "");
    }
    failure_logged_ = false;
    backoff_.reset();
}

// ["subscribe", channel, count] once, then ["message", channel, payload] per
// PUBLISH; nullptr when the connection goes away.
void Link::on_channel_message(void* link, redisReply* reply, void*) noexcept {
    auto* self = static_cast<Link*>(link);
    if (self == nullptr || reply == nullptr) {
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, self->log_, 0, "session_redis %V: SUBSCRIBE failed: %s",
                      &self->conf_->address_text, reply->str);
        self->failure_logged_ = true;
        self->drop(nullptr);
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING) {
        return;
    }
    std::string_view kind(reply->element[0]->str, reply->element[0]->len);
    if (kind == "subscribe") {
        if (self->subscribed_once_ && self->on_resubscribe_ != nullptr) {
            ngx_log_error(NGX_LOG_NOTICE, self->log_, 0,
                          "session_redis %V: revocation channel subscribed again: revocations "
                          "may have been missed, cached sessions are no longer fresh",
                          &self->conf_->address_text);
            self->on_resubscribe_();
        }
        self->subscribed_once_ = true;
        self->mark_healthy();
        return;
    }
    if (kind != "message" || reply->element[2]->type != REDIS_REPLY_STRING ||
        self->on_revocation_ == nullptr) {
        return;
    }
    std::string_view payload(reply->element[2]->str, reply->element[2]->len);
    if (auto revocation = core::parse_revocation(payload)) {
        self->on_revocation_(*revocation);
    } else {
        ngx_log_error(NGX_LOG_WARN, self->log_, 0,
                      "session_redis %V: ignored a malformed message on the revocation channel",
                      &self->conf_->address_text);
    }
}

// --- lookups --------------------------------------------------------------------

Lookup* Link::new_lookup(void* owner) noexcept {
    if (!conn_.is_open()) {
        return nullptr;
    }
    auto* lookup = new (std::nothrow) Lookup();
    if (lookup == nullptr) {
        return nullptr;
    }
    lookup->owner = owner;
    lookup->timer.handler = on_lookup_timeout;
    lookup->timer.data = lookup;
    lookup->timer.log = log_;
    // Not cancelable: a request waits on this timer, so graceful shutdown
    // must wait for it too.
    clock_gettime(CLOCK_MONOTONIC, &lookup->sent);
    return lookup;
}

// One HMGET of one key: a plain read, no script, so nothing to load on a new
// connection and nothing to run again after SCRIPT FLUSH.
template <std::size_t N>
Lookup* Link::lookup(std::string_view key, const std::array<std::string_view, N>& fields,
                     void* owner, LookupDone done) noexcept {
    Lookup* lookup = new_lookup(owner);
    if (lookup == nullptr) {
        return nullptr;
    }
    lookup->done = done;
    if (!send_hmget(on_lookup_reply, key, fields, lookup)) {
        delete lookup;
        return nullptr;
    }
    ngx_add_timer(&lookup->timer, conf_->timeout);
    return lookup;
}

// The owner gets its answer now (fail mode, or a stale entry); the lookup
// stays with the connection, whose callback discards the late reply and frees it.
// One late reply says nothing about the connection: dead_after= judges that,
// and closing here would fail every lookup pipelined behind this one.
void Link::on_lookup_timeout(ngx_event_t* ev) noexcept {
    auto* lookup = static_cast<Lookup*>(ev->data);
    count_redis_timeout();
    if (!lookup->finished) {
        lookup->finished = true;
        if (lookup->owner != nullptr) {
            if (lookup->overlay_done != nullptr) {
                lookup->overlay_done(lookup->owner, nullptr, LookupFailure::timeout);
            } else {
                lookup->done(lookup->owner, nullptr, LookupFailure::timeout);
            }
            lookup->owner = nullptr;
        }
    }
}

void Link::on_lookup_reply(void* link, redisReply* reply, void* privdata) noexcept {
    auto* lookup = static_cast<Lookup*>(privdata);
    if (auto* self = static_cast<Link*>(link); self != nullptr) {
        self->note_answered(reply);
    }
    if (lookup->timer.timer_set) {
        ngx_del_timer(&lookup->timer);
    }
    if (!lookup->finished && lookup->owner != nullptr) {
        lookup->finished = true;
        if (reply == nullptr) {
            count_redis_error();
            lookup->done(lookup->owner, nullptr, LookupFailure::connection);
        } else {
            const auto latency = static_cast<std::uint64_t>(elapsed_us(lookup->sent));
            if (reply->type == REDIS_REPLY_ERROR) count_redis_error();
            lookup->done(lookup->owner, reply, LookupFailure::none);
            // A check that went on with a second read is observed once, when
            // that one is answered.
            if (!lookup->followed) observe_lookup_latency(latency);
        }
    }
    delete lookup;
}

template <std::size_t N>
bool Link::send_hmget(RedisReplyFn fn, std::string_view key,
                      const std::array<std::string_view, N>& fields, void* privdata) noexcept {
    const char* argv[N + 2];
    std::size_t argvlen[N + 2];
    argv[0] = "HMGET";
    argvlen[0] = 5;
    argv[1] = key.data();
    argvlen[1] = key.size();
    for (std::size_t i = 0; i < N; ++i) {
        argv[i + 2] = fields[i].data();
        argvlen[i + 2] = fields[i].size();
    }
    return command(fn, privdata, static_cast<int>(N + 2), argv, argvlen);
}

Lookup* Link::overlay(std::string_view session_key, std::string_view user_key, void* owner,
                      OverlayDone done) noexcept {
    Lookup* lookup = new_lookup(owner);
    if (lookup == nullptr) {
        return nullptr;
    }
    lookup->overlay_done = done;
    if (!send_hmget(on_overlay_reply, session_key, core::kSessionFieldNames, lookup)) {
        delete lookup;
        return nullptr;
    }
    lookup->replies_pending = 1;
    if (!send_hmget(on_overlay_reply, user_key, core::kUserFieldNames, lookup)) {
        // The first reply's callback frees it; the caller fails fast.
        lookup->finished = true;
        lookup->owner = nullptr;
        return nullptr;
    }
    lookup->replies_pending = 2;
    ngx_add_timer(&lookup->timer, conf_->timeout);
    return lookup;
}

// The session's HMGET, then the user's, in order on one connection. The
// first half is kept flat in the lookup (each reply is freed after its
// callback); the second completes the record.
void Link::on_overlay_reply(void* link, redisReply* reply, void* privdata) noexcept {
    auto* lookup = static_cast<Lookup*>(privdata);
    if (auto* self = static_cast<Link*>(link); self != nullptr) {
        self->note_answered(reply);
    }
    const bool session_half = lookup->replies_pending == 2;
    --lookup->replies_pending;

    auto finish = [lookup](const core::LookupRecord* record, LookupFailure failure) {
        lookup->finished = true;
        if (lookup->timer.timer_set) {
            ngx_del_timer(&lookup->timer);
        }
        if (lookup->owner != nullptr) {
            void* owner = lookup->owner;
            lookup->owner = nullptr;
            lookup->overlay_done(owner, record, failure);
        }
    };

    if (!lookup->finished) {
        core::LookupRecord record;
        if (reply == nullptr) {
            count_redis_error();
            finish(nullptr, LookupFailure::connection);
        } else if (reply->type == REDIS_REPLY_ERROR) {
            count_redis_error();
            if (g_link != nullptr) {
                ngx_log_error(NGX_LOG_ERR, g_link->log_, 0,
                              "session_redis: overlay read failed: %*s",
                              static_cast<size_t>(reply->len), reply->str);
            }
            finish(nullptr, LookupFailure::none);
        } else if (session_half) {
            if (core::decode_session_hmget(reply, record) != core::DecodeStatus::ok) {
                count_redis_error();
                finish(nullptr, LookupFailure::none);
            } else {
                try {
                    lookup->session_part.resize(core::flat_size(record));
                    core::flat_encode(
                        record, reinterpret_cast<unsigned char*>(lookup->session_part.data()));
                } catch (...) {
                    finish(nullptr, LookupFailure::connection);
                }
            }
        } else {
            const auto* flat = reinterpret_cast<const unsigned char*>(lookup->session_part.data());
            if (!core::flat_decode(flat, lookup->session_part.size(), record) ||
                core::decode_user_hmget(reply, record) != core::DecodeStatus::ok) {
                count_redis_error();
                finish(nullptr, LookupFailure::none);
            } else {
                observe_lookup_latency(static_cast<std::uint64_t>(elapsed_us(lookup->sent)));
                finish(&record, LookupFailure::none);
            }
        }
    }
    if (lookup->replies_pending == 0) {
        if (lookup->timer.timer_set) {
            ngx_del_timer(&lookup->timer);
        }
        delete lookup;
    }
}

// A touch in flight: kept until its reply, to run it again with EVAL when
// the script cache was flushed.
struct Touch {
    std::string key;
    std::string now;
    std::string interval;
    bool retried_with_eval = false;
};

bool Link::send_touch(Touch* touch, bool with_eval) noexcept {
    std::string_view script_or_sha = with_eval ? core::kTouchScript : std::string_view(touch_sha_);
    const char* argv[] = {with_eval ? "EVAL" : "EVALSHA",
                          script_or_sha.data(),
                          "1",
                          touch->key.data(),
                          touch->now.data(),
                          touch->interval.data()};
    std::size_t argvlen[] = {with_eval ? 4u : 7u, script_or_sha.size(), 1,
                             touch->key.size(),   touch->now.size(),    touch->interval.size()};
    return command(on_touch_reply, touch, 6, argv, argvlen);
}

void Link::touch(std::string_view session_key, std::int64_t now_ms,
                 std::int64_t interval_ms) noexcept {
    if (!conn_.is_open() || state_ != LinkState::connected) {
        return;  // best effort: the next lookup of the session touches again
    }
    Touch* touch = nullptr;
    try {
        touch = new Touch{std::string(session_key), std::to_string(now_ms),
                          std::to_string(interval_ms)};
    } catch (...) {
        return;  // out of memory: skip this touch
    }
    if (send_touch(touch, false)) {
        count_touch();
    } else {
        delete touch;
    }
}

void Link::on_touch_reply(void* link, redisReply* reply, void* privdata) noexcept {
    auto* touch = static_cast<Touch*>(privdata);
    auto* self = static_cast<Link*>(link);
    if (self != nullptr) {
        self->note_answered(reply);
    }
    if (is_noscript(reply) && !touch->retried_with_eval && self != nullptr &&
        self->conn_.is_open()) {
        touch->retried_with_eval = true;
        if (self->send_touch(touch, true)) {
            return;
        }
    }
    if (reply != nullptr && reply->type == REDIS_REPLY_ERROR) {
        count_redis_error();
    }
    delete touch;
}

}  // namespace

void redis_start(ngx_cycle_t* cycle, const MainConf* conf, RevocationHandler on_revocation,
                 ResubscribeHandler on_resubscribe) noexcept {
    if (g_link != nullptr || !conf->redis.configured) {
        return;
    }
    try {
        g_link = new Link(cycle, conf, LinkRole::lookups, nullptr, nullptr);
        if (on_revocation != nullptr) {
            g_subscriber =
                new Link(cycle, conf, LinkRole::revocations, on_revocation, on_resubscribe);
        }
    } catch (...) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0, "session_redis: out of memory");
    }
    for (Link* link : {g_link, g_subscriber}) {
        if (link != nullptr) link->start();
    }
}

void redis_stop() noexcept {
    for (Link** link : {&g_link, &g_subscriber}) {
        if (*link != nullptr) {
            (*link)->stop();
            delete *link;
            *link = nullptr;
        }
    }
}

Lookup* redis_lookup(std::string_view session_key, void* owner, LookupDone done) noexcept {
    return g_link != nullptr
               ? g_link->lookup(session_key, core::kSessionReadFieldNames, owner, done)
               : nullptr;
}

Lookup* redis_lookup_user(std::string_view user_key, Lookup* first, void* owner,
                          LookupDone done) noexcept {
    if (g_link == nullptr) {
        return nullptr;
    }
    Lookup* lookup = g_link->lookup(user_key, core::kUserFieldNames, owner, done);
    if (lookup != nullptr && first != nullptr) {
        // One latency per check, from its first send to its last reply.
        lookup->sent = first->sent;
        first->followed = true;
    }
    return lookup;
}

Lookup* redis_overlay(std::string_view session_key, std::string_view user_key, void* owner,
                      OverlayDone done) noexcept {
    return g_link != nullptr ? g_link->overlay(session_key, user_key, owner, done) : nullptr;
}

void redis_detach(Lookup* lookup) noexcept {
    if (lookup != nullptr) {
        lookup->owner = nullptr;
    }
}

void redis_touch(std::string_view session_key, std::int64_t now_ms,
                 std::int64_t interval_ms) noexcept {
    if (g_link != nullptr) {
        g_link->touch(session_key, now_ms, interval_ms);
    }
}

}  // namespace session::ngx
