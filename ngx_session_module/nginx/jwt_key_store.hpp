// session_jwt_keys redis: the key set at <prefix>jwks (docs/redis-contract.md),
// read on the worker's Redis link, never blocking. The worker that reads
// a new set stores its text in a shared zone and bumps a generation
// number; every worker parses the set again (EVP_PKEYs are per process)
// when it sees a new generation. One `keys` message on the revocation
// channel costs one GET in total: only the subscribing worker reads.
#pragma once

#include "nginx/ngx.hpp"

#include <array>
#include <cstdint>
#include <string_view>

#include "core/jwt.hpp"
#include "nginx/access.hpp"
#include "nginx/conf.hpp"

namespace session::ngx {

// Called by session_jwt_keys for `redis`: the zone (one per configuration,
// whatever the number of locations). Survives reloads with its set.
ngx_shm_zone_t* add_jwks_zone(ngx_conf_t* cf) noexcept;

// init_process, after redis_start: reads the set as soon as the link is up,
// retrying with backoff until Redis answers. exit_process: before redis_stop.
void jwks_start(ngx_cycle_t* cycle, const MainConf* conf) noexcept;
void jwks_stop() noexcept;

// The subscribing worker: a `keys` message, or the channel subscribed again
// (a message may have been missed): read the set again.
void jwks_reload() noexcept;

// The shared zone's counters (0 without session_jwt_keys redis).
void jwks_counters(std::uint64_t& reads, std::uint64_t& failures) noexcept;

// What a location verifies with: its files' keys, plus (with `redis`) this
// worker's copy of the Redis set. `verifier` binds cached verdicts to that
// combination (see JwtConf::verifier).
struct VerifyKeys {
    const core::JwtKeys* keys;
    const std::array<unsigned char, 32>* verifier;
    bool kidless;  // some key has no kid (core::may_be_unknown_kid)
};
VerifyKeys jwt_verify_keys(const LocConf* lcf) noexcept;

// The rest of the check, once the read the request waited for has ended
// (answered, failed or timed out), from the read's callback.
using KeysReadResume = void (*)(ngx_http_request_t* r, RequestCtx* ctx, std::string_view token,
                                bool from_cookie) noexcept;

// A token's kid is in no key held: wait for a read of <prefix>jwks (the one
// in flight, or a new one when this worker has not read it for
// core::kUnknownKidReadIntervalMs). True: the request waits (answer
// NGX_AGAIN) and `resume` runs later; `token` must outlive the request's
// wait (it points into the request's headers). False: refuse now.
bool jwks_wait_for_read(ngx_http_request_t* r, RequestCtx* ctx, std::string_view token,
                        bool from_cookie, KeysReadResume resume) noexcept;

}  // namespace session::ngx
