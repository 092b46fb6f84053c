// Inside the per-worker Redis link (redis_link.hpp): the Link class, shared
// by redis_link.cpp (connection lifecycle, handshake, Sentinel) and
// redis_lookups.cpp (lookups, the JWT overlay, touches). Not for other files.
#pragma once

#include "nginx/redis_link.hpp"

#include <hiredis/hiredis.h>
#include <time.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <new>
#include <string>

#include "common/redis_topology.hpp"
#include "core/backoff.hpp"
#include "core/flat_record.hpp"
#include "core/redis_scripts.hpp"
#include "core/revocation.hpp"
#include "nginx/metrics_zone.hpp"
#include "nginx/redis_conn.hpp"
#include "nginx/redis_sentinel.hpp"

namespace session::ngx {

struct Lookup {
    // cluster://: one HMGET of the lookup (two for an overlay), kept to be
    // sent again on the node a MOVED or ASK names (redis_cluster.cpp).
    struct Part {
        Lookup* lookup = nullptr;
        std::string key;
        std::uint8_t fields = 0;  // which field list (redis_cluster.cpp's FieldSet)
        bool redirected = false;  // followed once already
    };

    void* owner = nullptr;  // nullptr once detached
    LookupDone done = nullptr;
    OverlayDone overlay_done = nullptr;  // set for an overlay read instead of `done`
    int replies_pending = 0;             // overlay: replies still to come
    std::string session_part;            // overlay: the session half, flat
    ngx_event_t timer{};
    timespec sent{};           // the check's first send (a second read inherits it)
    bool finished = false;     // `done` already ran (timeout or failure)
    bool followed = false;     // a second read goes on with the check (redis_lookup_user)
    bool half_stored = false;  // cluster overlay: the first half to answer is in session_part
    Part parts[2];             // cluster:// only
};

// The overlay's answer, once: the timer stops and the owner (if still
// there) gets `record` (nullptr with a failure). Used by both halves'
// replies, standalone (redis_lookups.cpp) and across shards (redis_cluster.cpp).
inline void finish_overlay(Lookup* lookup, const core::LookupRecord* record,
                           LookupFailure failure) noexcept {
    lookup->finished = true;
    if (lookup->timer.timer_set) {
        ngx_del_timer(&lookup->timer);
    }
    if (lookup->owner != nullptr) {
        void* owner = lookup->owner;
        lookup->owner = nullptr;
        lookup->overlay_done(owner, record, failure);
    }
}

namespace link_detail {

constexpr ngx_msec_t kMaxResolveMs = 5000;

enum class LinkState { disconnected, connecting, connected };

// What a connection is for: lookups and touches, or listening on the
// revocation channel (a subscribed connection can send nothing else).
enum class LinkRole { lookups, revocations };

struct Touch;
class Cluster;

class Link {
  public:
    // `node`: a cluster node's connection (redis_cluster.cpp), to that
    // address rather than the configured one.
    Link(ngx_cycle_t* cycle, const MainConf* conf, LinkRole role, RevocationHandler on_revocation,
         ResubscribeHandler on_resubscribe, const SentinelPrimary* node = nullptr)
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
        if (node != nullptr) {
            cluster_node_ = true;
            use_primary(*node);
        } else if (sentinel_) {
            primary_name_ = ngx_string("?");
        } else {
            ngx_memcpy(&address_, conf_->addr.sockaddr, conf_->addr.socklen);
            socklen_ = conf_->addr.socklen;
            find_resolver(cycle);
        }
    }

    void start() noexcept {
        if (sentinel_) {
            sentinel_follow(this, on_switch);
            resolve_then_connect();  // asks the sentinels first
        } else {
            connect();  // the address resolved at configuration load
        }
    }

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
        if (sentinel_) {
            sentinel_cancel(this);
            sentinel_unfollow(this);
        }
        drop("worker exiting");
    }

    template <std::size_t N>
    Lookup* lookup(std::string_view key, const std::array<std::string_view, N>& fields, void* owner,
                   LookupDone done) noexcept;
    Lookup* overlay(std::string_view session_key, std::string_view user_key, void* owner,
                    OverlayDone done) noexcept;
    Lookup* get(std::string_view key, void* owner, LookupDone done) noexcept;
    void touch(std::string_view session_key, std::int64_t now_ms,
               std::int64_t interval_ms) noexcept;

  private:
    friend class Cluster;

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
    static void on_primary_found(void* link, const SentinelPrimary* primary) noexcept;
    static void on_switch(void* link, const SentinelPrimary& primary) noexcept;
    static void on_role_reply(void* link, redisReply* reply, void*) noexcept;
    void use_primary(const SentinelPrimary& primary) noexcept;
    void send_handshake() noexcept;
    void drop(const char* reason) noexcept;
    void schedule_reconnect() noexcept;
    // One HMGET of `key`'s `fields`.
    template <std::size_t N>
    bool send_hmget(RedisReplyFn fn, std::string_view key,
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
    // GET of `key` (session_jwt_keys redis).
    bool send_get(RedisReplyFn fn, std::string_view key, void* privdata) noexcept {
        const char* argv[] = {"GET", key.data()};
        std::size_t argvlen[] = {3, key.size()};
        return command(fn, privdata, 2, argv, argvlen);
    }
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
    // Who the log lines are about: the configured address, or for a
    // cluster node, that node.
    const ngx_str_t* log_name() const noexcept {
        return cluster_node_ ? &primary_name_ : &conf_->address_text;
    }
    // The metrics' connection state follows the lookup connection only.
    void report_connected(bool connected) noexcept {
        if (role_ == LinkRole::lookups) set_worker_connected(connected);
    }

    const RedisConf* conf_;
    ngx_log_t* log_;
    LinkRole role_;
    // sentinel://: address_ is what the sentinels last named, verified by
    // ROLE in the handshake; primary_known_ while it is fresh (a +switch-
    // master), else the next connection asks the sentinels first.
    const bool sentinel_ = conf_->topology == RedisTopologyKind::sentinel;
    bool primary_known_ = false;
    // cluster://: one node's connection; primary_ is that node, and the
    // revocation channel moves to another node on each reconnect.
    bool cluster_node_ = false;
    bool asking_ = false;
    SentinelPrimary primary_{};
    ngx_str_t primary_name_{};  // primary_.text, for RedisConn's messages
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

inline Link* g_link = nullptr;        // lookups
inline Link* g_subscriber = nullptr;  // revocation channel

inline std::int64_t elapsed_us(const timespec& since) noexcept {
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    std::int64_t us = (now.tv_sec - since.tv_sec) * 1000000 + (now.tv_nsec - since.tv_nsec) / 1000;
    return std::max<std::int64_t>(us, 0);
}

inline bool is_noscript(const redisReply* reply) noexcept {
    return reply != nullptr && reply->type == REDIS_REPLY_ERROR && reply->str != nullptr &&
           std::strncmp(reply->str, "NOSCRIPT", 8) == 0;
}

}  // namespace link_detail
}  // namespace session::ngx
