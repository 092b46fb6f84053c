#include "nginx/jwt_key_store.hpp"

#include <hiredis/hiredis.h>

#include <functional>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "core/backoff.hpp"
#include "core/jwt_key_source.hpp"
#include "core/overlay.hpp"
#include "nginx/redis_link.hpp"

namespace session::ngx {
namespace {

// Two copies of the largest set (the old one is freed after the new one is
// in) and the slab's own pages.
constexpr std::size_t kZoneSize = 4 * core::kMaxRedisJwksLength + 64 * 1024;

ngx_str_t g_zone_name = ngx_string("ngx_session_module_jwks");

// Plain data only: it lives in shared memory. `text` points into the same
// zone, which every worker maps at the same address (forked from the master).
struct JwksShared {
    ngx_atomic_t generation;  // bumped with each new set; 0: none yet
    ngx_atomic_t tickets;     // GETs begun, by every worker: orders their answers
    // Under the slab mutex:
    ngx_atomic_uint_t stored_ticket;  // the ticket of the read that stored `text`
    u_char* text;
    std::size_t len;
    ngx_atomic_t reads;     // GETs answered: nginx_session_jwks_reads_total
    ngx_atomic_t failures;  // failed, or refused as malformed: _failures_total
};

ngx_int_t init_jwks_zone(ngx_shm_zone_t* zone, void* old_data) noexcept {
    if (old_data != nullptr) {
        zone->data = old_data;  // reload: keep the set
        return NGX_OK;
    }
    auto* shpool = reinterpret_cast<ngx_slab_pool_t*>(zone->shm.addr);
    if (zone->shm.exists) {
        zone->data = shpool->data;
        return NGX_OK;
    }
    void* mem = ngx_slab_calloc(shpool, sizeof(JwksShared));
    if (mem == nullptr) {
        return NGX_ERROR;
    }
    shpool->data = mem;
    zone->data = mem;
    return NGX_OK;
}

// A request waiting for a read, in the request pool; its pool cleanup
// unlinks it when the request goes away first.
struct Waiter {
    ngx_queue_t queue;
    bool queued;
    ngx_http_request_t* r;
    RequestCtx* ctx;
    std::string_view token;
    bool from_cookie;
    KeysReadResume resume;
};

void unlink_waiter(void* data) noexcept {
    auto* waiter = static_cast<Waiter*>(data);
    if (waiter->queued) {
        ngx_queue_remove(&waiter->queue);
        waiter->queued = false;
    }
}

// The keys of one location's files combined with this worker's Redis set,
// rebuilt when the set's generation changes.
struct Combined {
    const core::JwtKeys* files;
    std::string role_claim;
    ngx_atomic_uint_t generation = 0;
    bool built = false;
    core::JwtKeys keys;
    std::array<unsigned char, 32> verifier{};
    bool kidless = false;
};

class Store {
  public:
    Store(ngx_cycle_t* cycle, const MainConf* conf, std::string key)
        : shpool_(reinterpret_cast<ngx_slab_pool_t*>(conf->jwks_zone->shm.addr)),
          shared_(static_cast<JwksShared*>(conf->jwks_zone->data)),
          log_(cycle->log),
          key_(std::move(key)) {
        key_text_ = {key_.size(), reinterpret_cast<u_char*>(key_.data())};
        ngx_queue_init(&waiters_);
        retry_timer_.handler = on_retry_timer;
        retry_timer_.data = this;
        retry_timer_.log = log_;
        retry_timer_.cancelable = 1;  // graceful shutdown does not wait for it
    }

    void start() noexcept { request_read(); }

    void stop() noexcept {
        stopping_ = true;  // no read from here on: the store is about to go
        if (retry_timer_.timer_set) {
            ngx_del_timer(&retry_timer_);
        }
        if (in_flight_ != nullptr) {
            redis_detach(in_flight_);
            in_flight_ = nullptr;
        }
        wake_waiters();
    }

    // A read that must happen (start, a message): retried until answered.
    void request_read() noexcept {
        wanted_ = true;
        if (in_flight_ != nullptr) {
            // That read may have been sent before the SET: read once more.
            again_ = true;
        } else if (!start_read()) {
            schedule_retry();
        }
    }

    bool wait(ngx_http_request_t* r, RequestCtx* ctx, std::string_view token, bool from_cookie,
              KeysReadResume resume) noexcept {
        // Once per request: a read that took longer than the interval must
        // not start another for the same request.
        for (ngx_pool_cleanup_t* cln = r->pool->cleanup; cln != nullptr; cln = cln->next) {
            if (cln->handler == unlink_waiter) return false;
        }
        switch (gate_.on_unknown_kid(now_ms())) {
            case core::KeyReadGate::Decision::refuse:
                return false;
            case core::KeyReadGate::Decision::read:
                if (!start_read()) return false;  // not connected: refuse now
                break;
            case core::KeyReadGate::Decision::join:
                break;
        }
        ngx_pool_cleanup_t* cln = ngx_pool_cleanup_add(r->pool, sizeof(Waiter));
        if (cln == nullptr) {
            return false;
        }
        auto* waiter = static_cast<Waiter*>(cln->data);
        *waiter = Waiter{{}, true, r, ctx, token, from_cookie, resume};
        ngx_queue_insert_tail(&waiters_, &waiter->queue);
        cln->handler = unlink_waiter;
        // Notice a client that goes away meanwhile (as a lookup does).
        r->read_event_handler = ngx_http_test_reading;
        r->write_event_handler = ngx_http_request_empty_handler;
        return true;
    }

    VerifyKeys keys_for(const LocConf* lcf) noexcept {
        sync();
        Combined* entry = nullptr;
        for (auto& candidate : combined_) {
            if (candidate->files == lcf->jwt.keys &&
                candidate->role_claim == to_view(lcf->jwt.role_claim)) {
                entry = candidate.get();
                break;
            }
        }
        try {
            if (entry == nullptr) {
                combined_.push_back(std::make_unique<Combined>());
                entry = combined_.back().get();
                entry->files = lcf->jwt.keys;
                entry->role_claim.assign(to_view(lcf->jwt.role_claim));
            }
            if (!entry->built || entry->generation != generation_) {
                entry->built = false;
                entry->keys = core::combine_keys(lcf->jwt.keys, redis_keys_);
                if (!core::token_digest(entry->keys.fingerprint(), entry->role_claim,
                                        entry->verifier)) {
                    throw std::bad_alloc();
                }
                entry->kidless = core::has_kidless_key(entry->keys);
                entry->generation = generation_;
                entry->built = true;
            }
        } catch (...) {
            // Out of memory: the files' keys alone, bound to their own verifier.
            return VerifyKeys{lcf->jwt.keys, &lcf->jwt.verifier, false};
        }
        return VerifyKeys{&entry->keys, &entry->verifier, entry->kidless};
    }

    void counters(std::uint64_t& reads, std::uint64_t& failures) const noexcept {
        reads = shared_->reads;
        failures = shared_->failures;
    }

  private:
    bool start_read() noexcept {
        if (stopping_) {
            return false;
        }
        Lookup* lookup = redis_get(key_, this, on_read_done);
        if (lookup == nullptr) {
            return false;
        }
        in_flight_ = lookup;
        ticket_ = ngx_atomic_fetch_add(&shared_->tickets, 1) + 1;
        gate_.started(now_ms());
        return true;
    }

    void schedule_retry() noexcept {
        if (!retry_timer_.timer_set && !ngx_exiting && !stopping_) {
            ngx_add_timer(&retry_timer_, static_cast<ngx_msec_t>(backoff_.next_delay_ms()));
        }
    }

    static void on_retry_timer(ngx_event_t* ev) noexcept {
        auto* self = static_cast<Store*>(ev->data);
        if (self->wanted_ && self->in_flight_ == nullptr && !self->start_read()) {
            self->schedule_retry();
        }
    }

    static void on_read_done(void* owner, const redisReply* reply, LookupFailure failure) noexcept {
        auto* self = static_cast<Store*>(owner);
        self->in_flight_ = nullptr;
        self->gate_.finished();
        const bool answered = self->absorb(reply, failure);
        // Waiters first: they find the set just read, and a read started
        // below is not theirs to wait for.
        self->wake_waiters();
        if (answered) {
            self->backoff_.reset();
            if (self->again_) {
                self->again_ = false;
                self->request_read();
            } else {
                self->wanted_ = false;
            }
        } else if (self->wanted_) {
            self->again_ = false;
            self->schedule_retry();
        }
    }

    // True when Redis answered (whatever the answer); false on a timeout or
    // a lost connection, which a wanted read retries.
    bool absorb(const redisReply* reply, LookupFailure failure) noexcept {
        if (failure != LookupFailure::none || reply == nullptr) {
            ngx_atomic_fetch_add(&shared_->failures, 1);
            if (!failure_logged_) {
                failure_logged_ = true;
                ngx_log_error(NGX_LOG_WARN, log_, 0,
                              "session_jwt_keys: reading \"%V\" from Redis %s: the keys held "
                              "keep verifying",
                              &key_text_,
                              failure == LookupFailure::timeout ? "timed out" : "failed");
            }
            return false;
        }
        failure_logged_ = false;
        ngx_atomic_fetch_add(&shared_->reads, 1);
        if (reply->type == REDIS_REPLY_NIL) {
            if (!missing_logged_) {
                missing_logged_ = true;
                ngx_log_error(
                    NGX_LOG_NOTICE, log_, 0, "session_jwt_keys: \"%V\" is not set in Redis: %s",
                    &key_text_,
                    generation_ == 0 ? "no key from Redis yet" : "keeping the keys read before");
            }
            return true;
        }
        missing_logged_ = false;
        if (reply->type == REDIS_REPLY_ERROR) {
            ngx_atomic_fetch_add(&shared_->failures, 1);
            log_malformed(std::string_view(reply->str, reply->len), "Redis answered an error");
            return true;
        }
        if (reply->type != REDIS_REPLY_STRING) {
            ngx_atomic_fetch_add(&shared_->failures, 1);
            log_malformed("", "not a STRING");
            return true;
        }
        adopt(std::string_view(reply->str, reply->len));
        return true;
    }

    // The set just read: stored for every worker unless it is the one held,
    // or a read begun after this one stored already.
    void adopt(std::string_view text) noexcept {
        ngx_shmtx_lock(&shpool_->mutex);
        bool same = shared_->text != nullptr && shared_->len == text.size() &&
                    ngx_memcmp(shared_->text, text.data(), text.size()) == 0;
        bool superseded = shared_->stored_ticket > ticket_;
        ngx_shmtx_unlock(&shpool_->mutex);
        if (same || superseded) {
            sync();
            return;
        }
        core::JwtKeys parsed;
        std::string error;
        if (Parsed result = parse_set(text, parsed, error); result != Parsed::ok) {
            ngx_atomic_fetch_add(&shared_->failures, 1);
            log_malformed(text, result == Parsed::malformed ? error.c_str() : "out of memory");
            return;
        }
        ngx_atomic_uint_t generation = 0;
        ngx_shmtx_lock(&shpool_->mutex);
        if (shared_->stored_ticket <= ticket_) {
            auto* copy = static_cast<u_char*>(ngx_slab_alloc_locked(shpool_, text.size()));
            if (copy != nullptr) {
                ngx_memcpy(copy, text.data(), text.size());
                if (shared_->text != nullptr) ngx_slab_free_locked(shpool_, shared_->text);
                shared_->text = copy;
                shared_->len = text.size();
                shared_->stored_ticket = ticket_;
                generation = ngx_atomic_fetch_add(&shared_->generation, 1) + 1;
            }
        }
        ngx_shmtx_unlock(&shpool_->mutex);
        if (generation == 0) {
            sync();  // superseded meanwhile, or the zone is full (cannot be: see kZoneSize)
            return;
        }
        install(std::move(parsed), generation);
        bad_logged_ = 0;
        ngx_log_error(NGX_LOG_NOTICE, log_, 0, "session_jwt_keys: %uz keys read from \"%V\"",
                      redis_keys_.size(), &key_text_);
    }

    // Another worker stored a new set: parse it here too.
    void sync() noexcept {
        ngx_atomic_uint_t generation = shared_->generation;
        if (generation == generation_) {
            return;
        }
        std::string text;
        try {
            ngx_shmtx_lock(&shpool_->mutex);
            generation = shared_->generation;
            text.assign(reinterpret_cast<const char*>(shared_->text), shared_->len);
            ngx_shmtx_unlock(&shpool_->mutex);
        } catch (...) {
            ngx_shmtx_unlock(&shpool_->mutex);
            return;  // out of memory: the next request tries again
        }
        core::JwtKeys parsed;
        std::string error;
        switch (parse_set(text, parsed, error)) {
            case Parsed::ok:
                install(std::move(parsed), generation);
                break;
            case Parsed::malformed:
                generation_ = generation;  // stored only after it parsed: cannot happen
                break;
            case Parsed::out_of_memory:
                break;  // the next request tries again
        }
    }

    enum class Parsed { ok, malformed, out_of_memory };

    // No exception leaves: an allocation failure is told apart, since the
    // same set may parse on a later try.
    static Parsed parse_set(std::string_view text, core::JwtKeys& parsed,
                            std::string& error) noexcept {
        try {
            return core::parse_redis_jwks(text, parsed, error) ? Parsed::ok : Parsed::malformed;
        } catch (...) {
            return Parsed::out_of_memory;
        }
    }

    void install(core::JwtKeys parsed, ngx_atomic_uint_t generation) noexcept {
        redis_keys_ = std::move(parsed);
        generation_ = generation;
    }

    // Once per distinct bad content (never the content: it may be anything).
    void log_malformed(std::string_view text, const char* why) noexcept {
        std::size_t digest = std::hash<std::string_view>{}(text) | 1;
        if (digest == bad_logged_) {
            return;
        }
        bad_logged_ = digest;
        ngx_log_error(NGX_LOG_ERR, log_, 0,
                      "session_jwt_keys: the key set at \"%V\" in Redis is refused (%s): keeping "
                      "the %uz keys held",
                      &key_text_, why, redis_keys_.size());
    }

    void wake_waiters() noexcept {
        // Taken out first: a resumed request never joins this list again
        // (the read it waited for is recent), but stay safe if it does.
        ngx_queue_t ready;
        ngx_queue_init(&ready);
        if (!ngx_queue_empty(&waiters_)) {
            ready = waiters_;
            ready.next->prev = &ready;
            ready.prev->next = &ready;
            ngx_queue_init(&waiters_);
        }
        while (!ngx_queue_empty(&ready)) {
            ngx_queue_t* q = ngx_queue_head(&ready);
            ngx_queue_remove(q);
            auto* waiter = ngx_queue_data(q, Waiter, queue);
            waiter->queued = false;
            waiter->resume(waiter->r, waiter->ctx, waiter->token, waiter->from_cookie);
        }
    }

    ngx_slab_pool_t* shpool_;
    JwksShared* shared_;
    ngx_log_t* log_;
    std::string key_;  // <prefix>jwks
    ngx_str_t key_text_{};
    Lookup* in_flight_ = nullptr;
    ngx_atomic_uint_t ticket_ = 0;  // of the read in flight (or the last one)
    core::KeyReadGate gate_;
    bool wanted_ = false;  // a read must be answered (start, message)
    bool again_ = false;   // a message came while a read was in flight
    ngx_event_t retry_timer_{};
    core::ReconnectBackoff backoff_;
    ngx_queue_t waiters_{};
    ngx_atomic_uint_t generation_ = 0;  // of redis_keys_
    core::JwtKeys redis_keys_;
    std::vector<std::unique_ptr<Combined>> combined_;
    bool stopping_ = false;
    bool failure_logged_ = false;
    bool missing_logged_ = false;
    std::size_t bad_logged_ = 0;
};

Store* g_store = nullptr;

}  // namespace

ngx_shm_zone_t* add_jwks_zone(ngx_conf_t* cf) noexcept {
    ngx_shm_zone_t* zone = ngx_shared_memory_add(cf, &g_zone_name, kZoneSize, &ngx_session_module);
    if (zone == nullptr) {
        return nullptr;
    }
    zone->init = init_jwks_zone;
    zone->noreuse = 0;
    return zone;
}

void jwks_start(ngx_cycle_t* cycle, const MainConf* conf) noexcept {
    if (g_store != nullptr || conf->jwks_zone == nullptr || conf->jwks_zone->data == nullptr) {
        return;
    }
    try {
        std::string key(reinterpret_cast<const char*>(conf->redis.prefix.data),
                        conf->redis.prefix.len);
        key += "jwks";
        g_store = new Store(cycle, conf, std::move(key));
    } catch (...) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0, "session_jwt_keys: out of memory");
        return;
    }
    g_store->start();
}

void jwks_stop() noexcept {
    if (g_store != nullptr) {
        g_store->stop();
        delete g_store;
        g_store = nullptr;
    }
}

void jwks_reload() noexcept {
    if (g_store != nullptr) {
        g_store->request_read();
    }
}

void jwks_counters(std::uint64_t& reads, std::uint64_t& failures) noexcept {
    if (g_store != nullptr) g_store->counters(reads, failures);
}

VerifyKeys jwt_verify_keys(const LocConf* lcf) noexcept {
    if (!lcf->jwt.redis_keys || g_store == nullptr) {
        return VerifyKeys{lcf->jwt.keys, &lcf->jwt.verifier, false};
    }
    return g_store->keys_for(lcf);
}

bool jwks_wait_for_read(ngx_http_request_t* r, RequestCtx* ctx, std::string_view token,
                        bool from_cookie, KeysReadResume resume) noexcept {
    return g_store != nullptr && g_store->wait(r, ctx, token, from_cookie, resume);
}

}  // namespace session::ngx
