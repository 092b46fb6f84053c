// cluster:// (see redis_cluster.hpp): the slot map, one Link per primary,
// and the redirections.
#include "nginx/redis_cluster.hpp"

#include "nginx/redis_link_impl.hpp"

#include <memory>
#include <optional>
#include <utility>
#include <vector>

namespace session::ngx {
namespace link_detail {
namespace {

// A node we know of (a seed, or a primary a map or a redirection named),
// and its lookup connection once something was sent to it.
struct Node {
    SentinelPrimary addr{};
    Link* link = nullptr;
};

bool same_address(const SentinelPrimary& a, const SentinelPrimary& b) noexcept {
    return a.socklen == b.socklen && ngx_memcmp(&a.sockaddr, &b.sockaddr, a.socklen) == 0;
}

}  // namespace

class Cluster {
  public:
    Cluster(ngx_cycle_t* cycle, const MainConf* conf, RevocationHandler on_revocation,
            ResubscribeHandler on_resubscribe)
        : cycle_(cycle),
          mconf_(conf),
          conf_(&conf->redis),
          log_(cycle->log),
          on_revocation_(on_revocation),
          on_resubscribe_(on_resubscribe),
          fetch_(cycle->log, this, on_fetch_ready, on_fetch_lost) {
        for (ngx_event_t* ev : {&fetch_timer_, &retry_timer_}) {
            ev->data = this;
            ev->log = log_;
            ev->cancelable = 1;  // graceful shutdown does not wait for these
        }
        fetch_timer_.handler = on_fetch_timeout;
        retry_timer_.handler = on_retry_timer;
    }

    // The seed nodes, resolved at configuration load. May throw bad_alloc.
    void add_seeds() {
        const auto* seeds = static_cast<const RedisNodeAddr*>(conf_->nodes->elts);
        for (ngx_uint_t i = 0; i < conf_->nodes->nelts; ++i) {
            const RedisNodeAddr& seed = seeds[i];
            Node node;
            ngx_memcpy(&node.addr.sockaddr, seed.addr.sockaddr,
                       std::min<std::size_t>(seed.addr.socklen, sizeof(node.addr.sockaddr)));
            node.addr.socklen = seed.addr.socklen;
            ngx_memcpy(node.addr.text, seed.text.data,
                       std::min<std::size_t>(seed.text.len, sizeof(node.addr.text) - 1));
            ngx_memcpy(node.addr.host, seed.host.data,
                       std::min<std::size_t>(seed.host.len, sizeof(node.addr.host) - 1));
            nodes_.push_back(node);
        }
    }

    void start() noexcept {
        if (on_revocation_ != nullptr && !nodes_.empty()) {
            try {
                subscriber_ = new Link(cycle_, mconf_, LinkRole::revocations, on_revocation_,
                                       on_resubscribe_, &nodes_[0].addr);
                subscriber_->start();
            } catch (...) {
                ngx_log_error(NGX_LOG_ALERT, log_, 0, "session_redis: out of memory");
            }
        }
        fetch();
    }

    void stop() noexcept {
        stopping_ = true;
        for (ngx_event_t* ev : {&fetch_timer_, &retry_timer_}) {
            if (ev->timer_set) ngx_del_timer(ev);
        }
        fetch_active_ = false;
        fetch_.close();
        for (Node& node : nodes_) {
            if (node.link != nullptr) {
                node.link->stop();
                delete node.link;
                node.link = nullptr;
            }
        }
        if (subscriber_ != nullptr) {
            subscriber_->stop();
            delete subscriber_;
            subscriber_ = nullptr;
        }
    }

    Lookup* lookup(std::string_view key, FieldSet fields, Lookup* first, void* owner,
                   LookupDone done) noexcept {
        Link* link = link_for_key(key);
        Lookup* lookup = link != nullptr ? link->new_lookup(owner) : nullptr;
        if (lookup == nullptr) {
            return nullptr;
        }
        lookup->done = done;
        if (!prepare(lookup, 0, key, fields) || !send(link, &lookup->parts[0], false)) {
            delete lookup;
            return nullptr;
        }
        ngx_add_timer(&lookup->timer, conf_->timeout);
        if (first != nullptr) {
            // One latency per check, from its first send to its last reply.
            lookup->sent = first->sent;
            first->followed = true;
        }
        return lookup;
    }

    // Both HMGETs at once, each to its own shard: still one round trip.
    Lookup* overlay(std::string_view session_key, std::string_view user_key, void* owner,
                    OverlayDone done) noexcept {
        Link* session_link = link_for_key(session_key);
        Link* user_link = link_for_key(user_key);
        if (session_link == nullptr || user_link == nullptr || !user_link->conn_.is_open()) {
            return nullptr;
        }
        Lookup* lookup = session_link->new_lookup(owner);
        if (lookup == nullptr) {
            return nullptr;
        }
        lookup->overlay_done = done;
        if (!prepare(lookup, 0, session_key, FieldSet::session) ||
            !prepare(lookup, 1, user_key, FieldSet::user) ||
            !send(session_link, &lookup->parts[0], false)) {
            delete lookup;
            return nullptr;
        }
        lookup->replies_pending = 1;
        if (!send(user_link, &lookup->parts[1], false)) {
            // The first reply's callback frees it; the caller fails fast.
            lookup->finished = true;
            lookup->owner = nullptr;
            return nullptr;
        }
        lookup->replies_pending = 2;
        ngx_add_timer(&lookup->timer, conf_->timeout);
        return lookup;
    }

    void touch(std::string_view key, std::int64_t now_ms, std::int64_t interval_ms) noexcept {
        if (Link* link = link_for_key(key); link != nullptr) {
            link->touch(key, now_ms, interval_ms);
        }
    }

    void redirected(const common::Redirect& redirect) noexcept {
        if (redirect.kind == common::RedirectKind::moved) {
            count_moved();
            refresh();
        } else {
            count_ask();
        }
    }

    // Once per part, only while someone waits for the answer.
    bool follow(Lookup::Part* part, const common::Redirect& redirect) noexcept {
        Lookup* lookup = part->lookup;
        if (part->redirected || lookup->finished || lookup->owner == nullptr ||
            !redirect.has_endpoint()) {
            return false;
        }
        part->redirected = true;
        return send(link_for(redirect.endpoint), part, redirect.kind == common::RedirectKind::ask);
    }

    // One CLUSTER SLOTS in flight at a time; a retry already scheduled
    // (after failures) is not hurried.
    void refresh() noexcept {
        if (!stopping_ && !fetch_active_ && !retry_timer_.timer_set) {
            fetch();
        }
    }

    bool next_channel_node(SentinelPrimary* next) noexcept {
        if (stopping_ || nodes_.size() < 2) {
            return false;
        }
        channel_next_ = (channel_next_ + 1) % nodes_.size();
        *next = nodes_[channel_next_].addr;
        return true;
    }

    // The current map (or, before the first, the seeds) names it: a
    // node that is no longer a primary keeps reconnecting, but does not
    // make the map be asked for again.
    bool serves_slots(const SentinelPrimary& node) const noexcept {
        if (stopping_) {
            return false;
        }
        if (!map_) {
            return true;
        }
        for (int index : by_primary_) {
            if (index >= 0 && same_address(nodes_[index].addr, node)) return true;
        }
        return false;
    }

    static void on_reply(void* link, redisReply* reply, void* privdata) noexcept;

  private:
    static bool prepare(Lookup* lookup, int i, std::string_view key, FieldSet fields) noexcept {
        Lookup::Part& part = lookup->parts[i];
        part.lookup = lookup;
        part.fields = static_cast<std::uint8_t>(fields);
        try {
            part.key.assign(key.data(), key.size());
        } catch (...) {
            return false;
        }
        return true;
    }

    // The primary of the key's slot; before the first map (or for a slot
    // the map has no primary for), the node that last answered CLUSTER
    // SLOTS: a MOVED then says where the key lives.
    Link* link_for_key(std::string_view key) noexcept {
        if (stopping_ || nodes_.empty()) {
            return nullptr;
        }
        if (map_) {
            int i = map_->primary_index(common::key_slot(key));
            if (i >= 0 && static_cast<std::size_t>(i) < by_primary_.size() && by_primary_[i] >= 0) {
                return open(nodes_[by_primary_[i]]);
            }
        }
        return open(nodes_[fetch_next_ % nodes_.size()]);
    }

    Link* link_for(const common::RedisEndpoint& endpoint) noexcept {
        SentinelPrimary addr{};
        if (!to_primary(endpoint, addr)) {
            return nullptr;  // a host name: nodes announce addresses here
        }
        int i = find_or_add(addr);
        return i >= 0 ? open(nodes_[i]) : nullptr;
    }

    int find_or_add(const SentinelPrimary& addr) noexcept {
        for (std::size_t i = 0; i < nodes_.size(); ++i) {
            if (same_address(nodes_[i].addr, addr)) return static_cast<int>(i);
        }
        try {
            nodes_.push_back(Node{addr, nullptr});
        } catch (...) {
            return -1;
        }
        return static_cast<int>(nodes_.size() - 1);
    }

    // Opened on first use, then kept (reconnecting with backoff) until
    // the worker exits.
    Link* open(Node& node) noexcept {
        if (node.link == nullptr) {
            try {
                node.link =
                    new Link(cycle_, mconf_, LinkRole::lookups, nullptr, nullptr, &node.addr);
            } catch (...) {
                return nullptr;
            }
            node.link->start();
        }
        return node.link;
    }

    static bool send(Link* link, Lookup::Part* part, bool asking) noexcept {
        if (link == nullptr || !link->conn_.is_open()) {
            return false;
        }
        if (asking) {
            // Valid for the next command on this connection only.
            const char* argv[] = {"ASKING"};
            std::size_t argvlen[] = {6};
            if (!link->command(on_asking_reply, nullptr, 1, argv, argvlen)) return false;
        }
        switch (static_cast<FieldSet>(part->fields)) {
            case FieldSet::session_read:
                return link->send_hmget(on_reply, part->key, core::kSessionReadFieldNames, part);
            case FieldSet::user:
                return link->send_hmget(on_reply, part->key, core::kUserFieldNames, part);
            case FieldSet::session:
                return link->send_hmget(on_reply, part->key, core::kSessionFieldNames, part);
            case FieldSet::string:
                return link->send_get(on_reply, part->key, part);
        }
        return false;
    }

    static void on_asking_reply(void* link, redisReply* reply, void*) noexcept {
        if (auto* self = static_cast<Link*>(link); self != nullptr) self->note_answered(reply);
    }

    static void complete(Link* link, redisReply* reply, Lookup::Part* part) noexcept {
        if (part->lookup->overlay_done != nullptr) {
            overlay_part(link, reply, part);
        } else {
            Link::on_lookup_reply(link, reply, part->lookup);
        }
    }

    static void overlay_part(Link* link, redisReply* reply, Lookup::Part* part) noexcept;

    // --- the slot map -------------------------------------------------------------

    void fetch() noexcept;
    void fetch_failed(const char* reason) noexcept;
    void use_map(common::SlotMap map) noexcept;
    void poll_while_unreachable() noexcept;
    static constexpr ngx_msec_t kUnreachablePollMs = 250;
    static void on_fetch_ready(void*) noexcept {}
    static void on_fetch_lost(void* owner, const char* reason, bool) noexcept {
        static_cast<Cluster*>(owner)->fetch_failed(reason);
    }
    static void on_fetch_auth(void* owner, redisReply* reply, void*) noexcept;
    static void on_slots(void* owner, redisReply* reply, void*) noexcept;
    static void on_fetch_timeout(ngx_event_t* ev) noexcept {
        static_cast<Cluster*>(ev->data)->fetch_failed("timed out");
    }
    static void on_retry_timer(ngx_event_t* ev) noexcept {
        static_cast<Cluster*>(ev->data)->fetch();
    }

    ngx_cycle_t* cycle_;
    const MainConf* mconf_;
    const RedisConf* conf_;
    ngx_log_t* log_;
    RevocationHandler on_revocation_;
    ResubscribeHandler on_resubscribe_;
    std::vector<Node> nodes_;  // seeds first
    std::optional<common::SlotMap> map_;
    std::vector<int> by_primary_;  // map_->primaries()[i] is nodes_[by_primary_[i]] (-1: none)
    Link* subscriber_ = nullptr;
    std::size_t channel_next_ = 0;
    // CLUSTER SLOTS: asked of nodes_[fetch_next_], on a connection of its own.
    RedisConn fetch_;
    SentinelPrimary fetch_node_{};
    ngx_str_t fetch_name_{};
    bool fetch_active_ = false;
    std::size_t fetch_next_ = 0;
    std::size_t fetch_failures_ = 0;
    ngx_event_t fetch_timer_{};
    ngx_event_t retry_timer_{};
    core::ReconnectBackoff backoff_;
    bool failure_logged_ = false;
    bool hostname_warned_ = false;
    bool stopping_ = false;
};

void Cluster::on_reply(void* link, redisReply* reply, void* privdata) noexcept {
    auto* part = static_cast<Lookup::Part*>(privdata);
    auto* from = static_cast<Link*>(link);
    if (reply != nullptr && reply->type == REDIS_REPLY_ERROR && reply->str != nullptr) {
        std::string_view text(reply->str, reply->len);
        auto redirect = common::parse_redirect(
            text, from != nullptr ? std::string_view(from->primary_.host) : std::string_view());
        if (redirect || common::is_retry_later_error(text)) {
            if (from != nullptr) from->note_answered(reply);
            if (redirect && g_cluster != nullptr) {
                g_cluster->redirected(*redirect);
                if (g_cluster->follow(part, *redirect)) return;
            }
            // Not followed (twice redirected, the node unknown, TRYAGAIN,
            // CLUSTERDOWN): a failure, never an answer.
            complete(nullptr, nullptr, part);
            return;
        }
    }
    complete(from, reply, part);
}

// Either half may answer first (two shards): the first is kept flat in the
// lookup, the second completes the record.
void Cluster::overlay_part(Link* link, redisReply* reply, Lookup::Part* part) noexcept {
    Lookup* lookup = part->lookup;
    if (link != nullptr) link->note_answered(reply);
    --lookup->replies_pending;

    auto finish = [lookup](const core::LookupRecord* record, LookupFailure failure) {
        finish_overlay(lookup, record, failure);
    };

    if (!lookup->finished) {
        core::LookupRecord record;
        const bool session_half = part->fields == static_cast<std::uint8_t>(FieldSet::session);
        if (reply == nullptr) {
            count_redis_error();
            finish(nullptr, LookupFailure::connection);
        } else if (reply->type == REDIS_REPLY_ERROR) {
            count_redis_error();
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0, "session_redis: overlay read failed: %*s",
                          static_cast<size_t>(reply->len), reply->str);
            finish(nullptr, LookupFailure::none);
        } else {
            const auto* flat = reinterpret_cast<const unsigned char*>(lookup->session_part.data());
            bool ok = !lookup->half_stored ||
                      core::flat_decode(flat, lookup->session_part.size(), record);
            ok = ok &&
                 (session_half ? core::decode_session_hmget(reply, record)
                               : core::decode_user_hmget(reply, record)) == core::DecodeStatus::ok;
            if (!ok) {
                count_redis_error();
                finish(nullptr, LookupFailure::none);
            } else if (lookup->half_stored) {
                observe_lookup_latency(static_cast<std::uint64_t>(elapsed_us(lookup->sent)));
                finish(&record, LookupFailure::none);
            } else {
                try {
                    lookup->session_part.resize(core::flat_size(record));
                    core::flat_encode(
                        record, reinterpret_cast<unsigned char*>(lookup->session_part.data()));
                    lookup->half_stored = true;
                } catch (...) {
                    finish(nullptr, LookupFailure::connection);
                }
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

// --- the slot map -----------------------------------------------------------------

void Cluster::fetch() noexcept {
    if (stopping_ || fetch_active_ || nodes_.empty()) {
        return;
    }
    fetch_next_ %= nodes_.size();
    // A copy: nodes_ may grow (and move) while the question is out.
    fetch_node_ = nodes_[fetch_next_].addr;
    fetch_name_ = {ngx_strlen(fetch_node_.text), reinterpret_cast<u_char*>(fetch_node_.text)};
    RedisPeer peer{};
    peer.sockaddr = &fetch_node_.sockaddr.sockaddr;
    peer.socklen = fetch_node_.socklen;
    peer.name = &fetch_name_;
    peer.ssl = conf_->ssl;
    peer.server_name = conf_->server_name;
    if (conf_->server_name.len == 0) {
        peer.server_name = {ngx_strlen(fetch_node_.host),
                            reinterpret_cast<u_char*>(fetch_node_.host)};
    }
    peer.verify = conf_->tls_verify != 0;
    fetch_active_ = true;
    if (!fetch_.open(peer)) {
        fetch_failed(fetch_.reason());
        return;
    }
    ngx_add_timer(&fetch_timer_, conf_->connect_timeout + conf_->timeout);
    if (conf_->password.len > 0) {
        const char* argv[] = {"AUTH", reinterpret_cast<const char*>(conf_->user.data),
                              reinterpret_cast<const char*>(conf_->password.data)};
        std::size_t argvlen[] = {4, conf_->user.len, conf_->password.len};
        if (conf_->user.len > 0) {
            fetch_.send(on_fetch_auth, nullptr, 3, argv, argvlen);
        } else {
            argv[1] = argv[2];
            argvlen[1] = argvlen[2];
            fetch_.send(on_fetch_auth, nullptr, 2, argv, argvlen);
        }
    }
    const char* argv[] = {"CLUSTER", "SLOTS"};
    std::size_t argvlen[] = {7, 5};
    if (!fetch_.send(on_slots, nullptr, 2, argv, argvlen)) {
        fetch_failed("cannot send CLUSTER SLOTS");
    }
}

void Cluster::on_fetch_auth(void* owner, redisReply* reply, void*) noexcept {
    auto* self = static_cast<Cluster*>(owner);
    if (reply != nullptr && reply->type == REDIS_REPLY_ERROR && self->fetch_active_) {
        // Redis's message (WRONGPASS, ...) never holds the password.
        char reason[160];
        u_char* end = ngx_snprintf(reinterpret_cast<u_char*>(reason), sizeof(reason) - 1,
                                   "AUTH failed: %*s", static_cast<size_t>(reply->len), reply->str);
        *end = '\0';
        self->fetch_failed(reason);
    }
}

void Cluster::on_slots(void* owner, redisReply* reply, void*) noexcept {
    auto* self = static_cast<Cluster*>(owner);
    if (!self->fetch_active_) {
        return;  // closed by us (failure already handled, or stopping)
    }
    if (reply == nullptr) {
        return;  // on_fetch_lost follows, with the reason
    }
    std::string error;
    auto map = common::SlotMap::from_cluster_slots(*reply, self->fetch_node_.host, error);
    if (!map) {
        if (reply->type == REDIS_REPLY_ERROR && reply->str != nullptr) {
            error.assign(reply->str, reply->len);
        }
        self->fetch_failed(error.empty() ? "not a CLUSTER SLOTS reply" : error.c_str());
        return;
    }
    self->fetch_active_ = false;
    if (self->fetch_timer_.timer_set) {
        ngx_del_timer(&self->fetch_timer_);
    }
    self->fetch_.close();  // safe in its own reply callback
    self->fetch_failures_ = 0;
    self->backoff_.reset();
    if (self->failure_logged_) {
        ngx_log_error(NGX_LOG_NOTICE, self->log_, 0, "session_redis %V: slot map from %s",
                      &self->conf_->address_text, self->fetch_node_.text);
        self->failure_logged_ = false;
    }
    self->use_map(std::move(*map));
    self->poll_while_unreachable();
}

// A map that still names a primary this worker cannot reach is probably
// the map of a failover in progress: the cluster promotes a replica after
// cluster-node-timeout, and only a new CLUSTER SLOTS tells. Ask again soon,
// rather than at the dead node's next reconnect attempt (up to the 2 s
// backoff cap later): a few cheap reads per second, only meanwhile.
void Cluster::poll_while_unreachable() noexcept {
    if (stopping_ || retry_timer_.timer_set) {
        return;
    }
    for (int index : by_primary_) {
        if (index < 0) {
            continue;
        }
        const Link* link = nodes_[index].link;
        if (link != nullptr && !link->conn_.is_ready()) {
            ngx_add_timer(&retry_timer_, kUnreachablePollMs);
            return;
        }
    }
}

void Cluster::fetch_failed(const char* reason) noexcept {
    if (!fetch_active_) {
        return;
    }
    fetch_active_ = false;
    if (fetch_timer_.timer_set) {
        ngx_del_timer(&fetch_timer_);
    }
    fetch_.close();
    if (stopping_) {
        return;
    }
    if (!failure_logged_) {
        failure_logged_ = true;
        ngx_log_error(NGX_LOG_ERR, log_, 0,
                      "session_redis %V: CLUSTER SLOTS from %s failed: %s (trying the next node)",
                      &conf_->address_text, fetch_node_.text, reason);
    }
    // The next node now; once every node has failed, back off.
    fetch_next_ = (fetch_next_ + 1) % nodes_.size();
    ++fetch_failures_;
    ngx_msec_t delay = 0;
    if (fetch_failures_ % nodes_.size() == 0) {
        delay = static_cast<ngx_msec_t>(backoff_.next_delay_ms());
    }
    ngx_add_timer(&retry_timer_, delay);
}

void Cluster::use_map(common::SlotMap map) noexcept {
    std::vector<int> by_primary;
    try {
        by_primary.reserve(map.primaries().size());
        for (const common::RedisEndpoint& endpoint : map.primaries()) {
            SentinelPrimary addr{};
            int index = -1;
            if (to_primary(endpoint, addr)) {
                index = find_or_add(addr);
            } else if (!hostname_warned_) {
                hostname_warned_ = true;
                ngx_log_error(NGX_LOG_WARN, log_, 0,
                              "session_redis %V: a cluster node announces a host name, not an "
                              "address: its slots are reached by redirection only",
                              &conf_->address_text);
            }
            by_primary.push_back(index);
        }
        map_ = std::move(map);
    } catch (...) {
        return;  // out of memory: keep the old map
    }
    by_primary_ = std::move(by_primary);
}

void cluster_node_lost(const SentinelPrimary& node) noexcept {
    if (g_cluster != nullptr && g_cluster->serves_slots(node)) {
        g_cluster->refresh();
    }
}

bool cluster_next_channel_node(SentinelPrimary* next) noexcept {
    return g_cluster != nullptr && g_cluster->next_channel_node(next);
}

void cluster_note_redirect(const char* node_host, const redisReply* reply) noexcept {
    if (g_cluster == nullptr || reply == nullptr || reply->str == nullptr) {
        return;
    }
    if (auto redirect =
            common::parse_redirect(std::string_view(reply->str, reply->len), node_host)) {
        g_cluster->redirected(*redirect);
    }
}

}  // namespace link_detail

using link_detail::Cluster;
using link_detail::g_cluster;

void cluster_start(ngx_cycle_t* cycle, const MainConf* conf, RevocationHandler on_revocation,
                   ResubscribeHandler on_resubscribe) noexcept {
    if (g_cluster != nullptr) {
        return;
    }
    try {
        auto cluster = std::make_unique<Cluster>(cycle, conf, on_revocation, on_resubscribe);
        cluster->add_seeds();
        g_cluster = cluster.release();
    } catch (...) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0, "session_redis: out of memory");
        return;
    }
    g_cluster->start();
}

void cluster_stop() noexcept {
    if (Cluster* cluster = g_cluster; cluster != nullptr) {
        // Pending lookups get their failure during stop(): none is
        // redirected any more.
        g_cluster = nullptr;
        cluster->stop();
        delete cluster;
    }
}

Lookup* cluster_lookup(std::string_view key, link_detail::FieldSet fields, Lookup* first,
                       void* owner, LookupDone done) noexcept {
    return g_cluster != nullptr ? g_cluster->lookup(key, fields, first, owner, done) : nullptr;
}

Lookup* cluster_overlay(std::string_view session_key, std::string_view user_key, void* owner,
                        OverlayDone done) noexcept {
    return g_cluster != nullptr ? g_cluster->overlay(session_key, user_key, owner, done) : nullptr;
}

void cluster_touch(std::string_view session_key, std::int64_t now_ms,
                   std::int64_t interval_ms) noexcept {
    if (g_cluster != nullptr) {
        g_cluster->touch(session_key, now_ms, interval_ms);
    }
}

}  // namespace session::ngx
