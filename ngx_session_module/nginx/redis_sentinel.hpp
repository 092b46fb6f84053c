// sentinel://: where this worker's primary is. Per worker, on nginx's own
// connections (redis_conn.hpp), never blocking:
//
// - a question, shared by every link that asks at the same time: the
//   sentinels in SentinelRotation order (common/redis_topology.hpp), each
//   asked SENTINEL GET-MASTER-ADDR-BY-NAME on a short-lived connection
//   (AUTH with the session_redis credentials only when a sentinel answers
//   NOAUTH: sentinels usually have no password, or their own);
// - a watch: one connection per worker SUBSCRIBEd to "+switch-master" on one
//   sentinel (the next one when it fails), which tells the links at once
//   that the primary moved, without waiting for their connections to fail.
//   After a resubscription the sentinels are asked again: a switch while
//   the watch was away is not announced twice.
//
// The links (redis_link.cpp) verify with ROLE that the address they were
// given is the primary, and treat a READONLY reply as a failover.
#pragma once

#include "nginx/ngx.hpp"

#include "common/redis_address.hpp"
#include "nginx/conf.hpp"

namespace session::ngx {

// A primary as the sentinels name it: an IP address (sentinels announce
// addresses unless `resolve-hostnames yes`, which is not followed here).
struct SentinelPrimary {
    ngx_sockaddr_t sockaddr;
    socklen_t socklen;
    char text[64];  // host:port, for logs and metrics
    char host[48];  // NUL-terminated: the name TLS verifies without server_name=
};

// An address as Redis announces it (an IP address; false for a host
// name): a sentinel's primary, or a cluster node in CLUSTER SLOTS or MOVED.
bool to_primary(const common::RedisEndpoint& endpoint, SentinelPrimary& out) noexcept;

// The primary, or nullptr: no sentinel could say this round (logged once
// per outage here); the caller backs off and asks again.
using PrimaryFound = void (*)(void* owner, const SentinelPrimary* primary) noexcept;
// The sentinels announced (or, after a gap in the watch, said) a primary.
using PrimarySwitched = void (*)(void* owner, const SentinelPrimary& primary) noexcept;

// init_process / exit_process, around the links.
void sentinel_start(ngx_cycle_t* cycle, const RedisConf* conf) noexcept;
void sentinel_stop() noexcept;

// `found` runs once, from the event loop (never inside this call), unless
// sentinel_cancel(owner) runs first. false: not started (out of memory).
bool sentinel_find_primary(void* owner, PrimaryFound found) noexcept;
void sentinel_cancel(void* owner) noexcept;

// `owner` hears of every switch until sentinel_unfollow(owner).
void sentinel_follow(void* owner, PrimarySwitched switched) noexcept;
void sentinel_unfollow(void* owner) noexcept;

}  // namespace session::ngx
