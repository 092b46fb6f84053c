// Counters in shared memory, summed over all workers, and the
// `session_metrics` handler that exposes them.
#pragma once

#include "nginx/ngx.hpp"

#include <cstdint>
#include <string_view>

#include "core/record.hpp"

namespace session::ngx {

// Creates the metrics zone (called by session_redis). Counters survive
// reloads: the new cycle adopts the old zone's memory.
ngx_shm_zone_t* add_metrics_zone(ngx_conf_t* cf) noexcept;

// Every function below is a no-op until bind_metrics() ran in this worker.
void bind_metrics(ngx_shm_zone_t* zone) noexcept;

void count_check(core::Outcome outcome) noexcept;
void count_cache(bool hit) noexcept;
void count_redis_error() noexcept;
void count_redis_timeout() noexcept;
void count_redis_reconnect() noexcept;
void count_tls_handshake_failure() noexcept;
void count_touch() noexcept;
void observe_lookup_latency(std::uint64_t microseconds) noexcept;
void count_moved() noexcept;
void count_ask() noexcept;

// sentinel://: this worker verified (ROLE master) its primary at `address`
// (host:port). A primary other than the last one any worker verified is
// one failover, counted once however many workers follow it.
void note_primary(std::string_view address) noexcept;

// This worker's row in the per-worker table (claimed in init_process,
// released in exit_process): whether its Redis connection is up.
void register_worker() noexcept;
void set_worker_connected(bool connected) noexcept;
void unregister_worker() noexcept;

// Content handler of `session_metrics`.
ngx_int_t metrics_handler(ngx_http_request_t* r) noexcept;

}  // namespace session::ngx
