#include "nginx/redis_link_impl.hpp"

#include "nginx/redis_cluster.hpp"

namespace session::ngx {
namespace link_detail {

// --- connection lifecycle -----------------------------------------------------

void Link::connect() noexcept {
    if (stopping_ || conn_.is_open()) {
        return;
    }
    RedisPeer peer{};
    peer.sockaddr = &address_.sockaddr;
    peer.socklen = socklen_;
    const bool named = sentinel_ || cluster_node_;  // an address Redis gave us
    peer.name = named ? &primary_name_ : const_cast<ngx_str_t*>(&conf_->address_text);
    peer.ssl = conf_->ssl;
    peer.server_name = conf_->server_name;
    if (named && conf_->server_name.len == 0) {
        peer.server_name = {ngx_strlen(primary_.host), reinterpret_cast<u_char*>(primary_.host)};
    }
    peer.verify = conf_->tls_verify != 0;
    // One connection per answer: a failed one asks the sentinels again.
    primary_known_ = false;
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
    if (cluster_node_) {
        // The revocation channel hears every node's PUBLISH: after a
        // failure, any other node will do (the failed one may be gone).
        SentinelPrimary next{};
        if (role_ == LinkRole::revocations && cluster_next_channel_node(&next)) {
            use_primary(next);
        }
        connect();
        return;
    }
    if (sentinel_) {
        if (primary_known_) {
            connect();
        } else if (!asking_) {
            asking_ = sentinel_find_primary(this, on_primary_found);
            if (!asking_) schedule_reconnect();
        }
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

void Link::use_primary(const SentinelPrimary& primary) noexcept {
    primary_ = primary;
    primary_name_ = {ngx_strlen(primary_.text), reinterpret_cast<u_char*>(primary_.text)};
    ngx_memcpy(&address_, &primary.sockaddr, primary.socklen);
    socklen_ = primary.socklen;
    primary_known_ = true;
}

void Link::on_primary_found(void* link, const SentinelPrimary* primary) noexcept {
    auto* self = static_cast<Link*>(link);
    self->asking_ = false;
    if (primary == nullptr) {
        self->schedule_reconnect();  // the sentinels logged why
        return;
    }
    self->use_primary(*primary);
    self->connect();
}

// The sentinels announced a primary: leave the old one now rather than
// wait for its connection to fail (a demoted primary stays up and answers
// reads with stale data). Nothing to do when it is the one we are on.
void Link::on_switch(void* link, const SentinelPrimary& primary) noexcept {
    auto* self = static_cast<Link*>(link);
    if (self->conn_.is_open() && self->socklen_ == primary.socklen &&
        ngx_memcmp(&self->address_, &primary.sockaddr, primary.socklen) == 0) {
        return;
    }
    if (self->asking_) {
        sentinel_cancel(self);
        self->asking_ = false;
    }
    if (self->reconnect_timer_.timer_set) {
        ngx_del_timer(&self->reconnect_timer_);
    }
    self->backoff_.reset();
    const bool was_open = self->conn_.is_open();
    self->drop(nullptr);
    if (was_open) {
        ngx_log_error(NGX_LOG_NOTICE, self->log_, 0,
                      "session_redis %V: leaving %V for the new primary %s%s",
                      &self->conf_->address_text, &self->primary_name_, primary.text,
                      self->role_ == LinkRole::revocations ? " (revocation channel)" : "");
    }
    self->use_primary(primary);
}

// ROLE on the node itself: only it proves that the address the sentinels
// gave is (still) the primary.
void Link::on_role_reply(void* link, redisReply* reply, void*) noexcept {
    auto* self = static_cast<Link*>(link);
    if (self == nullptr || reply == nullptr) {
        return;
    }
    self->note_answered(reply);
    std::string error;
    auto role = common::parse_role(*reply, error);
    if (role && role->role == common::RedisRole::master) {
        if (self->role_ == LinkRole::lookups) {
            note_primary(self->primary_.text);
        }
        return;
    }
    if (!self->failure_logged_) {
        ngx_log_error(NGX_LOG_WARN, self->log_, 0,
                      "session_redis %V: %V is not the primary (%s): asking the sentinels again",
                      &self->conf_->address_text, &self->primary_name_,
                      role ? "ROLE is not master" : error.c_str());
    }
    self->failure_logged_ = true;
    self->drop(nullptr);
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
    if (sentinel_) {
        const char* argv[] = {"ROLE"};
        std::size_t argvlen[] = {4};
        // The revocation channel too: SUBSCRIBE on a demoted primary
        // would hear nothing once writers follow the new one.
        command(on_role_reply, nullptr, 1, argv, argvlen);
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
        // better-auth mode: Redis's notifications of deleted and expired
        // keys (notify-keyspace-events with E, g and x), whose message is
        // the key. Keyevent rather than keyspace channels: only these two
        // events reach us, not one message per write to the database.
        // Subscribing costs nothing when notifications are off.
        u_char del[64], expired[64];
        int db = conf_->db >= 0 ? static_cast<int>(conf_->db) : 0;
        std::size_t del_len = ngx_sprintf(del, "__keyevent@%d__:del", db) - del;
        std::size_t expired_len = ngx_sprintf(expired, "__keyevent@%d__:expired", db) - expired;
        const char* argv[] = {"SUBSCRIBE", reinterpret_cast<const char*>(channel),
                              reinterpret_cast<const char*>(del),
                              reinterpret_cast<const char*>(expired)};
        std::size_t argvlen[] = {9, len, del_len, expired_len};
        // Every reply after this one is a message: all go to the callback.
        conn_.send(on_channel_message, this, conf_->key_events ? 4 : 2, argv, argvlen, true);
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
                  self->log_name(), policy.size(), policy.data());
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
                          log_name(), reason);
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
    if (cluster_node_ && role_ == LinkRole::lookups) {
        // Lost, or could not connect: a failover may have moved its slots
        // (asked again on each retry, at the backoff's pace, until it has).
        cluster_node_lost(primary_);
    }
}

void Link::log_failure(const char* what, const char* detail) noexcept {
    if (failure_logged_ || stopping_) {
        return;
    }
    failure_logged_ = true;
    ngx_log_error(NGX_LOG_ERR, log_, 0, "session_redis %V: %s%s%s (retrying in the background)",
                  log_name(), what, detail[0] != '\0' ? " " : "", detail);
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
                          self->log_name(), static_cast<const char*>(step), reply->str);
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
        ngx_log_error(NGX_LOG_NOTICE, log_, 0, "session_redis %V: connected%s", log_name(),
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
                      self->log_name(), reply->str);
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
        if (reply->element[2]->type == REDIS_REPLY_INTEGER && reply->element[2]->integer > 1) {
            return;  // the keyevent channels of the same SUBSCRIBE (better-auth mode)
        }
        if (self->subscribed_once_ && self->on_resubscribe_ != nullptr) {
            ngx_log_error(NGX_LOG_NOTICE, self->log_, 0,
                          "session_redis %V: revocation channel subscribed again: revocations "
                          "may have been missed, cached sessions are no longer fresh",
                          self->log_name());
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
    if (reply->element[1]->type == REDIS_REPLY_STRING &&
        std::string_view(reply->element[1]->str, reply->element[1]->len).substr(0, 11) ==
            "__keyevent@") {
        self->on_revocation_(core::Revocation{core::RevocationKind::deleted_key, payload});
        return;
    }
    if (auto revocation = core::parse_revocation(payload)) {
        self->on_revocation_(*revocation);
    } else {
        ngx_log_error(NGX_LOG_WARN, self->log_, 0,
                      "session_redis %V: ignored a malformed message on the revocation channel",
                      self->log_name());
    }
}

}  // namespace link_detail

using link_detail::g_link;
using link_detail::g_subscriber;
using link_detail::Link;
using link_detail::LinkRole;

void redis_start(ngx_cycle_t* cycle, const MainConf* conf, RevocationHandler on_revocation,
                 ResubscribeHandler on_resubscribe) noexcept {
    if (g_link != nullptr || !conf->redis.configured) {
        return;
    }
    if (conf->redis.topology == RedisTopologyKind::cluster) {
        cluster_start(cycle, conf, on_revocation, on_resubscribe);
        return;
    }
    sentinel_start(cycle, &conf->redis);
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
    cluster_stop();
    for (Link** link : {&g_link, &g_subscriber}) {
        if (*link != nullptr) {
            (*link)->stop();
            delete *link;
            *link = nullptr;
        }
    }
    sentinel_stop();
}
}  // namespace session::ngx
