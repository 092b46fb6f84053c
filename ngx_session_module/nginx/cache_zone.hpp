// The session cache: a shared-memory zone (session_cache_zone) that all
// workers read and write, in the manner of limit_req's zones: a red-black
// tree keyed by a keyed digest of the token (the token itself is never
// stored), an LRU queue, a TTL per entry, negative entries with their own TTL
// and their own bounded share of the zone, a stale window for when Redis
// cannot answer, and an index of entries by user for user revocations. A
// reload that points session_redis at another address, db or prefix empties
// the zone.
#pragma once

#include "nginx/ngx.hpp"

#include <string_view>

namespace session::ngx {

// Keys: an opaque token as it is; JWT mode's entries under a tag byte that
// no token starts with (tokens are printable).
inline constexpr char kOverlayKeyTag = '\x01';  // + session id: core::overlay_flat_*
inline constexpr char kClaimsKeyTag = '\x02';   // + token digest: flat claims
// + <key_prefix><token>: a better-auth session, core::overlay_flat_* of its
// session id and record (better_auth_access.cpp)
inline constexpr char kBetterAuthKeyTag = '\x03';

// Parses `session_cache_zone NAME:SIZE [ttl=] [negative_ttl=] [stale=]`;
// `conf` is the MainConf, whose cache_zones lists every zone.
char* cache_zone_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept;

enum class CacheState {
    miss,
    fresh,  // within its TTL: use it
    stale,  // past its TTL but within stale=: use only if Redis cannot answer
};

struct CacheRead {
    CacheState state = CacheState::miss;
    const unsigned char* flat = nullptr;  // copy in the request pool
    std::size_t flat_len = 0;
};

// Looks `token` up; a hit is copied into `pool` (the lock is held only for
// the copy). A pool allocation failure reads as a miss.
CacheRead cache_get(ngx_shm_zone_t* zone, std::string_view token, ngx_pool_t* pool) noexcept;

// Counts the revocations the zone has applied. A lookup notes it before
// asking Redis and hands it back to cache_put: a revocation that lands while
// the lookup is in flight may have dropped what the lookup is about to store
// (Redis may have answered before the revoking write), so then nothing is
// stored.
ngx_atomic_uint_t cache_generation(ngx_shm_zone_t* zone) noexcept;

// Stores (or replaces) the flat record of `token`, unless the zone applied a
// revocation since `generation`. `negative`: the session does not exist,
// kept for negative_ttl, within an eighth of the zone where negative entries
// evict each other and never a positive one. A positive entry is indexed
// under its user (the session's user_id, an overlay entry's subject).
// Failure to allocate is not an error: the entry is simply not cached.
// An opaque token's record is stored only when free of control bytes
// (access.cpp checks before), so that a hit need not be scanned again.
void cache_put(ngx_shm_zone_t* zone, std::string_view token, const unsigned char* flat,
               std::size_t flat_len, bool negative, ngx_atomic_uint_t generation) noexcept;

// Replaces the record of an existing entry and keeps its expiry (used after
// a touch, so that the cache does not touch again, nor live longer); as
// cache_put, not after a revocation since `generation`.
void cache_replace_keep_expiry(ngx_shm_zone_t* zone, std::string_view token,
                               const unsigned char* flat, std::size_t flat_len,
                               ngx_atomic_uint_t generation) noexcept;

// Stores the verified claims of a token for `ttl_ms` (until the token's exp
// plus leeway): no stale window, and no revocation applies to them (the
// overlay entry carries the session's state).
void cache_put_for(ngx_shm_zone_t* zone, std::string_view key, const unsigned char* flat,
                   std::size_t flat_len, ngx_msec_t ttl_ms) noexcept;

// Drops the entry of one session (a revocation message): the opaque
// token's and the JWT overlay's.
void cache_remove(ngx_shm_zone_t* zone, std::string_view token) noexcept;

// Revocations may have been missed (the subscriber's connection was lost):
// every entry stored until now is no longer fresh. Each may still serve as
// `stale` (within stale=) while Redis cannot answer; the next lookup that
// Redis answers replaces it.
void cache_expire_all(ngx_shm_zone_t* zone) noexcept;

// Drops every entry of one user (banned, deleted, roles changed): visits
// only that user's entries, through the zone's index by user.
void cache_remove_user(ngx_shm_zone_t* zone, std::string_view user_id) noexcept;

}  // namespace session::ngx
