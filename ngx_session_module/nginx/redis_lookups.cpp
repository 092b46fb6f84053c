// The link's reads and writes: the opaque check's HMGETs, the JWT overlay's
// two HMGETs, and the sliding-expiry touch (see redis_link.hpp).
#include "nginx/redis_link_impl.hpp"

#include "nginx/redis_cluster.hpp"

namespace session::ngx {
namespace link_detail {

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
        finish_overlay(lookup, record, failure);
    };

    if (!lookup->finished) {
        core::LookupRecord record;
        if (reply == nullptr) {
            count_redis_error();
            finish(nullptr, LookupFailure::connection);
        } else if (reply->type == REDIS_REPLY_ERROR) {
            count_redis_error();
            if (auto* self = static_cast<Link*>(link); self != nullptr) {
                ngx_log_error(NGX_LOG_ERR, self->log_, 0, "session_redis: overlay read failed: %*s",
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

// The key set's GET: a lookup like the check's, minus the latency
// histogram (`followed`: it is not a check).
Lookup* Link::get(std::string_view key, void* owner, LookupDone done) noexcept {
    Lookup* lookup = new_lookup(owner);
    if (lookup == nullptr) {
        return nullptr;
    }
    lookup->done = done;
    lookup->followed = true;
    if (!send_get(on_lookup_reply, key, lookup)) {
        delete lookup;
        return nullptr;
    }
    ngx_add_timer(&lookup->timer, conf_->timeout);
    return lookup;
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
        if (self != nullptr && self->cluster_node_) {
            // Not sent again (the next lookup touches), but a MOVED still
            // says the map is stale.
            cluster_note_redirect(self->primary_.host, reply);
        }
        if (self != nullptr && self->sentinel_ &&
            common::is_readonly_error(std::string_view(reply->str, reply->len))) {
            // A write reached a replica: the node we hold as the primary
            // was demoted. Leave it and ask the sentinels.
            self->log_failure("READONLY: the primary was demoted", "(failover)");
            self->drop(nullptr);
        }
    }
    delete touch;
}

}  // namespace link_detail

using link_detail::g_link;

Lookup* redis_lookup(std::string_view session_key, void* owner, LookupDone done) noexcept {
    if (link_detail::g_cluster != nullptr) {
        return cluster_lookup(session_key, link_detail::FieldSet::session_read, nullptr, owner,
                              done);
    }
    return g_link != nullptr
               ? g_link->lookup(session_key, core::kSessionReadFieldNames, owner, done)
               : nullptr;
}

Lookup* redis_lookup_user(std::string_view user_key, Lookup* first, void* owner,
                          LookupDone done) noexcept {
    if (link_detail::g_cluster != nullptr) {
        return cluster_lookup(user_key, link_detail::FieldSet::user, first, owner, done);
    }
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
    if (link_detail::g_cluster != nullptr) {
        return cluster_overlay(session_key, user_key, owner, done);
    }
    return g_link != nullptr ? g_link->overlay(session_key, user_key, owner, done) : nullptr;
}

Lookup* redis_get(std::string_view key, void* owner, LookupDone done) noexcept {
    if (link_detail::g_cluster != nullptr) {
        Lookup* lookup = cluster_lookup(key, link_detail::FieldSet::string, nullptr, owner, done);
        if (lookup != nullptr) lookup->followed = true;  // not a check: no latency
        return lookup;
    }
    return g_link != nullptr ? g_link->get(key, owner, done) : nullptr;
}

Lookup* redis_lookup_string(std::string_view key, void* owner, LookupDone done) noexcept {
    Lookup* lookup = redis_get(key, owner, done);
    if (lookup != nullptr) lookup->followed = false;  // a check: its latency counts
    return lookup;
}

void redis_detach(Lookup* lookup) noexcept {
    if (lookup != nullptr) {
        lookup->owner = nullptr;
    }
}

void redis_touch(std::string_view session_key, std::int64_t now_ms,
                 std::int64_t interval_ms) noexcept {
    if (link_detail::g_cluster != nullptr) {
        cluster_touch(session_key, now_ms, interval_ms);
    } else if (g_link != nullptr) {
        g_link->touch(session_key, now_ms, interval_ms);
    }
}

}  // namespace session::ngx
