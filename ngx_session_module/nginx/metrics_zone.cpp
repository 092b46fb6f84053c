#include "nginx/metrics_zone.hpp"

#include <signal.h>

#include <algorithm>
#include <new>
#include <string>

#include "core/metrics_text.hpp"
#include "nginx/conf.hpp"
#include "nginx/jwt_key_store.hpp"

namespace session::ngx {
namespace {

constexpr std::size_t kWorkerSlots = 256;
// host:port of a primary: an IPv6 address with a port fits.
constexpr std::size_t kAddressSize = 64;

struct WorkerSlot {
    ngx_atomic_t pid;            // 0: free
    ngx_atomic_t connected;      // Redis connection up
    char primary[kAddressSize];  // sentinel://: the primary last verified; under primary_lock
};

// Plain data only: it lives in shared memory, mapped at a different address
// in each process.
struct MetricsShared {
    ngx_atomic_t checks[core::kOutcomeCount];
    ngx_atomic_t cache_hits;
    ngx_atomic_t cache_misses;
    ngx_atomic_t redis_errors;
    ngx_atomic_t redis_timeouts;
    ngx_atomic_t redis_reconnects;
    ngx_atomic_t touches;
    ngx_atomic_t tls_handshake_failures;
    ngx_atomic_t latency_buckets[core::kLatencyBucketCount];
    ngx_atomic_t latency_sum_us;
    ngx_atomic_t failovers;
    ngx_atomic_t moved;
    ngx_atomic_t ask;
    // Guards the primaries' text (a spinlock: held for a copy of 64 bytes).
    ngx_atomic_t primary_lock;
    char primary[kAddressSize];  // the last primary any worker verified
    WorkerSlot workers[kWorkerSlots];
};

MetricsShared* g_metrics = nullptr;
WorkerSlot* g_my_slot = nullptr;

ngx_str_t g_zone_name = ngx_string("ngx_session_module_metrics");

ngx_int_t init_metrics_zone(ngx_shm_zone_t* zone, void* old_data) noexcept {
    if (old_data != nullptr) {
        zone->data = old_data;  // reload: keep counting
        return NGX_OK;
    }
    auto* shpool = reinterpret_cast<ngx_slab_pool_t*>(zone->shm.addr);
    if (zone->shm.exists) {
        zone->data = shpool->data;
        return NGX_OK;
    }
    void* mem = ngx_slab_calloc(shpool, sizeof(MetricsShared));
    if (mem == nullptr) {
        return NGX_ERROR;
    }
    shpool->data = mem;
    zone->data = mem;
    return NGX_OK;
}

void add(ngx_atomic_t& counter, ngx_atomic_int_t n = 1) noexcept {
    if (g_metrics != nullptr) {
        ngx_atomic_fetch_add(&counter, n);
    }
}

bool process_alive(ngx_atomic_uint_t pid) noexcept {
    return pid != 0 && (kill(static_cast<pid_t>(pid), 0) == 0 || ngx_errno != NGX_ESRCH);
}

void lock_primaries() noexcept {
    ngx_spinlock(&g_metrics->primary_lock, static_cast<ngx_atomic_int_t>(ngx_pid), 1024);
}

void unlock_primaries() noexcept {
    ngx_atomic_cmp_set(&g_metrics->primary_lock, static_cast<ngx_atomic_uint_t>(ngx_pid), 0);
}

// One more worker on this slot's primary, if it has one.
void add_primary(core::MetricsSnapshot& s, const WorkerSlot& slot) noexcept {
    char primary[kAddressSize];
    lock_primaries();
    ngx_memcpy(primary, slot.primary, kAddressSize);
    unlock_primaries();
    primary[kAddressSize - 1] = '\0';
    std::string_view address(primary);
    if (address.empty()) {
        return;
    }
    try {
        for (auto& entry : s.primaries) {
            if (entry.first == address) {
                ++entry.second;
                return;
            }
        }
        s.primaries.emplace_back(std::string(address), 1);
    } catch (...) {
        // Out of memory: this worker's primary is left out of the scrape.
    }
}

core::MetricsSnapshot snapshot() noexcept {
    core::MetricsSnapshot s;
    if (g_metrics == nullptr) {
        return s;
    }
    for (std::size_t i = 0; i < core::kOutcomeCount; ++i) {
        s.checks[i] = g_metrics->checks[i];
    }
    s.cache_hits = g_metrics->cache_hits;
    s.cache_misses = g_metrics->cache_misses;
    s.redis_errors = g_metrics->redis_errors;
    s.redis_timeouts = g_metrics->redis_timeouts;
    s.redis_reconnects = g_metrics->redis_reconnects;
    s.touches = g_metrics->touches;
    s.tls_handshake_failures = g_metrics->tls_handshake_failures;
    for (std::size_t i = 0; i < core::kLatencyBucketCount; ++i) {
        s.latency_buckets[i] = g_metrics->latency_buckets[i];
    }
    s.latency_sum_us = g_metrics->latency_sum_us;
    s.redis_failovers = g_metrics->failovers;
    s.redis_moved = g_metrics->moved;
    s.redis_ask = g_metrics->ask;
    jwks_counters(s.jwks_reads, s.jwks_failures);
    // A worker that died without exit_process leaves its row behind; count
    // only rows whose process still runs.
    for (auto& slot : g_metrics->workers) {
        ngx_atomic_uint_t pid = slot.pid;
        if (process_alive(pid)) {
            ++s.redis_workers;
            if (slot.connected) {
                ++s.redis_connected_workers;
            }
            add_primary(s, slot);
        }
    }
    return s;
}

}  // namespace

ngx_shm_zone_t* add_metrics_zone(ngx_conf_t* cf) noexcept {
    ngx_shm_zone_t* zone = ngx_shared_memory_add(
        cf, &g_zone_name, 8 * ngx_pagesize + sizeof(MetricsShared), &ngx_session_module);
    if (zone == nullptr) {
        return nullptr;
    }
    zone->init = init_metrics_zone;
    return zone;
}

void bind_metrics(ngx_shm_zone_t* zone) noexcept {
    g_metrics = zone != nullptr ? static_cast<MetricsShared*>(zone->data) : nullptr;
}

void count_check(core::Outcome outcome) noexcept {
    if (g_metrics != nullptr) {
        add(g_metrics->checks[static_cast<std::size_t>(outcome)]);
    }
}

void count_cache(bool hit) noexcept {
    if (g_metrics != nullptr) {
        add(hit ? g_metrics->cache_hits : g_metrics->cache_misses);
    }
}

void count_redis_error() noexcept {
    if (g_metrics != nullptr) add(g_metrics->redis_errors);
}

void count_redis_timeout() noexcept {
    if (g_metrics != nullptr) add(g_metrics->redis_timeouts);
}

void count_redis_reconnect() noexcept {
    if (g_metrics != nullptr) add(g_metrics->redis_reconnects);
}

void count_tls_handshake_failure() noexcept {
    if (g_metrics != nullptr) add(g_metrics->tls_handshake_failures);
}

void count_touch() noexcept {
    if (g_metrics != nullptr) add(g_metrics->touches);
}

void observe_lookup_latency(std::uint64_t microseconds) noexcept {
    if (g_metrics == nullptr) {
        return;
    }
    add(g_metrics->latency_buckets[core::latency_bucket(microseconds)]);
    add(g_metrics->latency_sum_us, static_cast<ngx_atomic_int_t>(microseconds));
}

void count_moved() noexcept {
    if (g_metrics != nullptr) add(g_metrics->moved);
}

void count_ask() noexcept {
    if (g_metrics != nullptr) add(g_metrics->ask);
}

void note_primary(std::string_view address) noexcept {
    if (g_metrics == nullptr) {
        return;
    }
    char text[kAddressSize] = {};
    ngx_memcpy(text, address.data(), std::min(address.size(), kAddressSize - 1));
    lock_primaries();
    if (g_my_slot != nullptr) {
        ngx_memcpy(g_my_slot->primary, text, kAddressSize);
    }
    const bool changed =
        g_metrics->primary[0] != '\0' && ngx_strncmp(g_metrics->primary, text, kAddressSize) != 0;
    ngx_memcpy(g_metrics->primary, text, kAddressSize);
    unlock_primaries();
    if (changed) {
        add(g_metrics->failovers);
    }
}

void register_worker() noexcept {
    if (g_metrics == nullptr) {
        return;
    }
    auto self = static_cast<ngx_atomic_uint_t>(ngx_pid);
    for (auto& slot : g_metrics->workers) {
        ngx_atomic_uint_t pid = slot.pid;
        if ((pid == 0 || !process_alive(pid)) && ngx_atomic_cmp_set(&slot.pid, pid, self)) {
            slot.connected = 0;
            lock_primaries();
            slot.primary[0] = '\0';
            unlock_primaries();
            g_my_slot = &slot;
            return;
        }
    }
}

void set_worker_connected(bool connected) noexcept {
    if (g_my_slot != nullptr) {
        g_my_slot->connected = connected ? 1 : 0;
    }
}

void unregister_worker() noexcept {
    if (g_my_slot != nullptr) {
        g_my_slot->connected = 0;
        g_my_slot->pid = 0;
        g_my_slot = nullptr;
    }
}

ngx_int_t metrics_handler(ngx_http_request_t* r) noexcept {
    if (!(r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }
    ngx_int_t rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    std::string text;
    try {
        text = core::format_prometheus(snapshot());
    } catch (const std::bad_alloc&) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    static ngx_str_t content_type = ngx_string("text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_type = content_type;
    r->headers_out.content_type_len = content_type.len;
    r->headers_out.content_length_n = static_cast<off_t>(text.size());

    if (r->method == NGX_HTTP_HEAD) {
        return ngx_http_send_header(r);
    }

    ngx_buf_t* b = ngx_create_temp_buf(r->pool, text.size() > 0 ? text.size() : 1);
    if (b == nullptr) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    b->last = ngx_cpymem(b->last, text.data(), text.size());
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }
    ngx_chain_t out{b, nullptr};
    return ngx_http_output_filter(r, &out);
}

}  // namespace session::ngx
