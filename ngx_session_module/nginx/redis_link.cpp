#include "nginx/redis_link.hpp"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <time.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <new>
#include <string>

#include "core/flat_record.hpp"
#include "core/redis_scripts.hpp"
#include "core/revocation.hpp"
#include "nginx/metrics_zone.hpp"
#include "nginx/redis_events.hpp"

namespace session::ngx {

struct Lookup {
    void* owner = nullptr;  // nullptr once detached
    LookupDone done = nullptr;
    OverlayDone overlay_done = nullptr;  // set for an overlay read instead of `done`
    int replies_pending = 0;             // overlay: replies still to come
    std::string session_part;            // overlay: the session half, flat
    std::string key;
    ngx_event_t timer{};
    timespec sent{};
    bool finished = false;  // `done` already ran (timeout or failure)
    bool retried_with_eval = false;
};

namespace {

// The first reconnect after a loss is immediate (a restart or a failover is
// usually over by then); the ones after it back off.
constexpr ngx_msec_t kFirstBackoffMs = 100;
constexpr ngx_msec_t kMaxBackoffMs = 2000;

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
          lookup_script_(core::kLookupScript),
          lookup_sha_(core::script_sha1(core::kLookupScript)),
          flagged_sha_(lookup_sha_),
          legacy_sha_(core::script_sha1(core::kLookupScriptLegacy)),
          touch_sha_(core::script_sha1(core::kTouchScript)) {
        init_timer(&reconnect_timer_, on_reconnect_timer);
        init_timer(&connect_timer_, on_connect_timer);
        init_timer(&dead_timer_, on_dead_timer);
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
        drop("worker exiting");
    }

    Lookup* lookup(std::string_view session_key, void* owner, LookupDone done) noexcept;
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
    bool attach(redisAsyncContext* ac) noexcept;
    void send_handshake() noexcept;
    void load_lookup_script() noexcept;
    void drop(const char* reason) noexcept;
    void schedule_reconnect() noexcept;
    bool send_lookup(Lookup* lookup, bool with_eval) noexcept;
    template <std::size_t N>
    bool send_hmget(std::string_view key, const std::array<std::string_view, N>& fields,
                    void* privdata) noexcept;
    void log_failure(const char* what, const char* detail) noexcept;
    bool command(redisCallbackFn* fn, void* privdata, int argc, const char** argv,
                 const std::size_t* argvlen) noexcept;
    void note_answered(const redisAsyncContext* ac, const redisReply* reply) noexcept;
    void forget_unanswered() noexcept;

    static void on_reconnect_timer(ngx_event_t* ev) noexcept;
    static void on_connect_timer(ngx_event_t* ev) noexcept;
    static void on_dead_timer(ngx_event_t* ev) noexcept;
    static void on_lookup_timeout(ngx_event_t* ev) noexcept;
    static void on_policy_reply(redisAsyncContext* ac, void* reply, void* privdata) noexcept;
    static void on_connect(const redisAsyncContext* ac, int status) noexcept;
    static void on_disconnect(const redisAsyncContext* ac, int status) noexcept;
    static void on_handshake_reply(redisAsyncContext* ac, void* reply, void* step) noexcept;
    static void on_lookup_reply(redisAsyncContext* ac, void* reply, void* privdata) noexcept;
    static void on_overlay_reply(redisAsyncContext* ac, void* reply, void* privdata) noexcept;
    Lookup* new_lookup(void* owner) noexcept;
    static void on_touch_reply(redisAsyncContext* ac, void* reply, void* privdata) noexcept;
    bool send_touch(Touch* touch, bool with_eval) noexcept;
    static void on_channel_message(redisAsyncContext* ac, void* reply, void* privdata) noexcept;
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
    std::string_view lookup_script_;  // kLookupScript, or the legacy one
    std::string lookup_sha_;
    std::string flagged_sha_;
    std::string legacy_sha_;
    std::string touch_sha_;
    redisAsyncContext* ac_ = nullptr;
    LinkState state_ = LinkState::disconnected;
    ngx_event_t reconnect_timer_{};
    ngx_event_t connect_timer_{};
    ngx_msec_t backoff_ = 0;  // the next reconnect's delay
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
    if (stopping_ || ac_ != nullptr) {
        return;
    }
    redisAsyncContext* ac =
        conf_->unix_path.len > 0
            ? redisAsyncConnectUnix(reinterpret_cast<const char*>(conf_->unix_path.data))
            : redisAsyncConnect(reinterpret_cast<const char*>(conf_->host.data),
                                static_cast<int>(conf_->port));
    if (ac == nullptr) {
        log_failure("cannot allocate a connection", "");
        schedule_reconnect();
        return;
    }
    if (ac->err != 0) {
        log_failure("connect failed", ac->errstr);
        redisAsyncFree(ac);
        schedule_reconnect();
        return;
    }
    if (!attach(ac)) {
        redisAsyncFree(ac);
        schedule_reconnect();
        return;
    }
    ac_ = ac;
    state_ = LinkState::connecting;
    forget_unanswered();
    ngx_add_timer(&connect_timer_, conf_->connect_timeout);
    // The server may have been upgraded: try the flagged script again.
    lookup_script_ = core::kLookupScript;
    lookup_sha_ = flagged_sha_;
    send_handshake();
}

bool Link::attach(redisAsyncContext* ac) noexcept {
    // The subscriber only listens: without TCP keepalive a peer that vanished
    // (failover, partition without RST) would go unnoticed for good.
    if (ac->c.connection_type == REDIS_CONN_TCP) {
        redisEnableKeepAlive(&ac->c);
    }
    if (!attach_to_event_loop(ac, log_)) {
        log_failure("no free nginx connection for", "worker_connections exhausted");
        return false;
    }
    ac->data = this;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    return true;
}

// Pipelined ahead of any lookup, so every lookup on this connection runs
// after authentication, database selection and script loading.
void Link::send_handshake() noexcept {
    static const char* kAuth = "AUTH";
    static const char* kSelect = "SELECT";
    static const char* kLoadTouch = "SCRIPT LOAD touch";

    if (conf_->password.len > 0) {
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
        // Two parts, no allocation: hiredis copies the arguments.
        u_char channel[256];
        std::size_t len = 0;
        if (conf_->prefix.len + kRevocationChannel.size() <= sizeof(channel)) {
            u_char* end = ngx_cpymem(channel, conf_->prefix.data, conf_->prefix.len);
            end = ngx_cpymem(end, kRevocationChannel.data(), kRevocationChannel.size());
            len = end - channel;
        }
        const char* argv[] = {"SUBSCRIBE", reinterpret_cast<const char*>(channel)};
        std::size_t argvlen[] = {9, len};
        redisAsyncCommandArgv(ac_, on_channel_message, this, 2, argv, argvlen);
        return;
    }
    load_lookup_script();
    const char* touch_argv[] = {"SCRIPT", "LOAD", core::kTouchScript.data()};
    std::size_t touch_len[] = {6, 4, core::kTouchScript.size()};
    command(on_handshake_reply, const_cast<char*>(kLoadTouch), 3, touch_argv, touch_len);
    // An allkeys-* policy may evict tombstones and bans, which un-deletes
    // users. Refused under an ACL without CONFIG: then nothing is known.
    const char* policy_argv[] = {"CONFIG", "GET", "maxmemory-policy"};
    std::size_t policy_len[] = {6, 3, 16};
    command(on_policy_reply, nullptr, 3, policy_argv, policy_len);
}

void Link::load_lookup_script() noexcept {
    static const char* kLoadLookup = "SCRIPT LOAD lookup";
    const char* argv[] = {"SCRIPT", "LOAD", lookup_script_.data()};
    std::size_t argvlen[] = {6, 4, lookup_script_.size()};
    command(on_handshake_reply, const_cast<char*>(kLoadLookup), 3, argv, argvlen);
}

// Every command that gets exactly one reply goes through here, so that
// dead_after= knows when the oldest unanswered one was sent. SUBSCRIBE does
// not (its callback runs once per message).
bool Link::command(redisCallbackFn* fn, void* privdata, int argc, const char** argv,
                   const std::size_t* argvlen) noexcept {
    if (redisAsyncCommandArgv(ac_, fn, privdata, argc, argv, argvlen) != REDIS_OK) {
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

// A reply on the current connection (nullptr: it is being freed).
void Link::note_answered(const redisAsyncContext* ac, const redisReply* reply) noexcept {
    if (role_ != LinkRole::lookups || ac != ac_ || reply == nullptr || unanswered_ == 0) {
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
    if (self->unanswered_ == 0 || self->ac_ == nullptr) {
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

void Link::on_policy_reply(redisAsyncContext* ac, void* reply_ptr, void*) noexcept {
    auto* self = static_cast<Link*>(ac->data);
    auto* reply = static_cast<redisReply*>(reply_ptr);
    if (self == nullptr || reply == nullptr) {
        return;
    }
    self->note_answered(ac, reply);
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

// Frees the connection now. Every pending callback runs (with no reply)
// before redisAsyncFree returns. Never called from inside a hiredis callback.
void Link::drop(const char* reason) noexcept {
    redisAsyncContext* ac = ac_;
    ac_ = nullptr;
    state_ = LinkState::disconnected;
    report_connected(false);
    forget_unanswered();
    if (connect_timer_.timer_set) {
        ngx_del_timer(&connect_timer_);
    }
    if (ac != nullptr) {
        if (!stopping_) {
            ngx_log_error(NGX_LOG_WARN, log_, 0, "session_redis %V: closing connection: %s",
                          &conf_->address_text, reason);
        }
        redisAsyncFree(ac);
    }
    schedule_reconnect();
}

void Link::schedule_reconnect() noexcept {
    if (stopping_ || reconnect_timer_.timer_set) {
        return;
    }
    // A zero timer runs on the next turn of the event loop, never inside
    // the hiredis callback that may have brought us here.
    ngx_add_timer(&reconnect_timer_, backoff_);
    backoff_ = backoff_ == 0 ? kFirstBackoffMs : std::min(backoff_ * 2, kMaxBackoffMs);
}

void Link::log_failure(const char* what, const char* detail) noexcept {
    if (failure_logged_ || stopping_) {
        return;
    }
    failure_logged_ = true;
    ngx_log_error(NGX_LOG_ERR, log_, 0, "session_redis %V: %s %s (retrying in the background)",
                  &conf_->address_text, what, detail);
}

void Link::on_reconnect_timer(ngx_event_t* ev) noexcept {
    auto* self = static_cast<Link*>(ev->data);
    count_redis_reconnect();
    self->connect();
}

void Link::on_connect_timer(ngx_event_t* ev) noexcept {
    auto* self = static_cast<Link*>(ev->data);
    if (self->state_ == LinkState::connecting) {
        self->log_failure("connect timed out", "");
        self->drop("connect timed out");
    }
}

void Link::on_connect(const redisAsyncContext* ac, int status) noexcept {
    auto* self = static_cast<Link*>(ac->data);
    if (self == nullptr || ac != self->ac_) {
        return;
    }
    if (self->connect_timer_.timer_set) {
        ngx_del_timer(&self->connect_timer_);
    }
    if (status != REDIS_OK) {
        // hiredis frees the context when this callback returns.
        self->log_failure("connect failed", ac->errstr);
        self->ac_ = nullptr;
        self->state_ = LinkState::disconnected;
        self->forget_unanswered();
        self->schedule_reconnect();
        return;
    }
    self->state_ = LinkState::connected;
    self->report_connected(true);
}

void Link::on_disconnect(const redisAsyncContext* ac, int status) noexcept {
    auto* self = static_cast<Link*>(ac->data);
    if (self == nullptr || ac != self->ac_) {
        return;  // dropped on purpose
    }
    self->ac_ = nullptr;
    self->state_ = LinkState::disconnected;
    self->report_connected(false);
    self->forget_unanswered();
    if (status != REDIS_OK) {
        self->log_failure("connection lost:", ac->errstr);
    }
    self->schedule_reconnect();
}

void Link::on_handshake_reply(redisAsyncContext* ac, void* reply_ptr, void* step) noexcept {
    auto* self = static_cast<Link*>(ac->data);
    auto* reply = static_cast<redisReply*>(reply_ptr);
    if (self == nullptr || reply == nullptr) {
        return;  // the connection is going away
    }
    self->note_answered(ac, reply);
    if (reply->type == REDIS_REPLY_ERROR &&
        std::strcmp(static_cast<const char*>(step), "SCRIPT LOAD lookup") == 0 &&
        self->lookup_script_.data() != core::kLookupScriptLegacy.data() &&
        std::strstr(reply->str, "compiling") != nullptr) {
        // Redis before 7 has no script flags: use the plain script from now
        // on (lookups already sent on this connection fail once).
        ngx_log_error(NGX_LOG_NOTICE, self->log_, 0,
                      "session_redis %V: no script flags (Redis < 7), using the plain script",
                      &self->conf_->address_text);
        self->lookup_script_ = core::kLookupScriptLegacy;
        self->lookup_sha_ = self->legacy_sha_;
        self->load_lookup_script();
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        // Redis's own message names the problem (WRONGPASS, NOAUTH, ...); it
        // never contains the password.
        if (!self->failure_logged_) {
            ngx_log_error(NGX_LOG_ERR, self->log_, 0,
                          "session_redis %V: %s failed: %s (retrying in the background)",
                          &self->conf_->address_text, static_cast<const char*>(step), reply->str);
        }
        self->failure_logged_ = true;
        redisAsyncDisconnect(ac);  // safe inside a callback, unlike free
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
    backoff_ = 0;
}

// ["subscribe", channel, count] once, then ["message", channel, payload] per
// PUBLISH; nullptr when the connection goes away.
void Link::on_channel_message(redisAsyncContext* ac, void* reply_ptr, void*) noexcept {
    auto* self = static_cast<Link*>(ac->data);
    auto* reply = static_cast<redisReply*>(reply_ptr);
    if (self == nullptr || reply == nullptr) {
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, self->log_, 0, "session_redis %V: SUBSCRIBE failed: %s",
                      &self->conf_->address_text, reply->str);
        self->failure_logged_ = true;
        redisAsyncDisconnect(ac);
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

bool Link::send_lookup(Lookup* lookup, bool with_eval) noexcept {
    std::string_view prefix = to_view(conf_->prefix);
    std::string_view script_or_sha = with_eval ? lookup_script_ : std::string_view(lookup_sha_);
    const char* argv[] = {with_eval ? "EVAL" : "EVALSHA", script_or_sha.data(), "1",
                          lookup->key.data(), prefix.data() != nullptr ? prefix.data() : ""};
    std::size_t argvlen[] = {with_eval ? 4u : 7u, script_or_sha.size(), 1, lookup->key.size(),
                             prefix.size()};
    return command(on_lookup_reply, lookup, 5, argv, argvlen);
}

Lookup* Link::new_lookup(void* owner) noexcept {
    if (ac_ == nullptr) {
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

Lookup* Link::lookup(std::string_view session_key, void* owner, LookupDone done) noexcept {
    Lookup* lookup = new_lookup(owner);
    if (lookup == nullptr) {
        return nullptr;
    }
    try {
        lookup->key.assign(session_key);
    } catch (...) {
        delete lookup;
        return nullptr;
    }
    lookup->done = done;
    if (!send_lookup(lookup, false)) {
        delete lookup;
        return nullptr;
    }
    ngx_add_timer(&lookup->timer, conf_->timeout);
    return lookup;
}

// The owner gets its answer now (fail mode, or a stale entry); the lookup
// stays with hiredis, whose callback discards the late reply and frees it.
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

void Link::on_lookup_reply(redisAsyncContext* ac, void* reply_ptr, void* privdata) noexcept {
    auto* lookup = static_cast<Lookup*>(privdata);
    auto* reply = static_cast<redisReply*>(reply_ptr);
    auto* self = static_cast<Link*>(ac->data);
    if (self != nullptr) {
        self->note_answered(ac, reply);
    }

    if (is_noscript(reply) && !lookup->retried_with_eval && !lookup->finished && self != nullptr &&
        ac == self->ac_) {
        // Someone ran SCRIPT FLUSH: EVAL runs the script and loads it again.
        lookup->retried_with_eval = true;
        if (self->send_lookup(lookup, true)) {
            return;
        }
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
            observe_lookup_latency(static_cast<std::uint64_t>(elapsed_us(lookup->sent)));
            if (reply->type == REDIS_REPLY_ERROR) count_redis_error();
            lookup->done(lookup->owner, reply, LookupFailure::none);
        }
    }
    delete lookup;
}

template <std::size_t N>
bool Link::send_hmget(std::string_view key, const std::array<std::string_view, N>& fields,
                      void* privdata) noexcept {
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
    return command(on_overlay_reply, privdata, static_cast<int>(N + 2), argv, argvlen);
}

Lookup* Link::overlay(std::string_view session_key, std::string_view user_key, void* owner,
                      OverlayDone done) noexcept {
    Lookup* lookup = new_lookup(owner);
    if (lookup == nullptr) {
        return nullptr;
    }
    lookup->overlay_done = done;
    if (!send_hmget(session_key, core::kSessionFieldNames, lookup)) {
        delete lookup;
        return nullptr;
    }
    lookup->replies_pending = 1;
    if (!send_hmget(user_key, core::kUserFieldNames, lookup)) {
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
// first half is kept flat in the lookup (hiredis frees each reply after its
// callback); the second completes the record.
void Link::on_overlay_reply(redisAsyncContext* ac, void* reply_ptr, void* privdata) noexcept {
    auto* lookup = static_cast<Lookup*>(privdata);
    auto* reply = static_cast<redisReply*>(reply_ptr);
    if (auto* self = static_cast<Link*>(ac->data); self != nullptr) {
        self->note_answered(ac, reply);
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
    if (ac_ == nullptr || state_ != LinkState::connected) {
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

void Link::on_touch_reply(redisAsyncContext* ac, void* reply_ptr, void* privdata) noexcept {
    auto* reply = static_cast<redisReply*>(reply_ptr);
    auto* touch = static_cast<Touch*>(privdata);
    auto* self = static_cast<Link*>(ac->data);
    if (self != nullptr) {
        self->note_answered(ac, reply);
    }
    if (is_noscript(reply) && !touch->retried_with_eval && self != nullptr && ac == self->ac_) {
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
    return g_link != nullptr ? g_link->lookup(session_key, owner, done) : nullptr;
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
