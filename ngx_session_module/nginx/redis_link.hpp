// This worker's one Redis connection, on nginx's own connection machinery
// (redis_conn.hpp: TCP, unix or TLS). Opened in init_process (never in the master), lookups
// pipelined on it, a timeout per lookup on an nginx timer (a late reply is
// discarded; only dead_after= of silence closes the connection),
// reconnection with backoff, and a clean close in exit_process.
#pragma once

#include "nginx/ngx.hpp"

#include <cstdint>
#include <string_view>

#include "core/record.hpp"
#include "core/revocation.hpp"
#include "nginx/conf.hpp"

struct redisReply;

namespace session::ngx {

enum class LookupFailure {
    none,        // `reply` is Redis's answer (possibly an error reply)
    timeout,     // no answer within session_redis timeout=
    connection,  // not connected, or the connection failed
};

// Called at most once per lookup, from the event loop, never after
// redis_detach(). `reply` is valid only during the call.
using LookupDone = void (*)(void* owner, const redisReply* reply, LookupFailure failure) noexcept;

// The JWT overlay's answer: `record` holds both hashes (views valid only
// during the call), or is nullptr with LookupFailure::none when Redis
// answered with an error (WRONGTYPE, ...) or a shape HMGET never returns.
using OverlayDone = void (*)(void* owner, const core::LookupRecord* record,
                             LookupFailure failure) noexcept;

struct Lookup;  // owned by the link

// <prefix> + this: the channel writers publish revocations on.
inline constexpr std::string_view kRevocationChannel = "session:revocations";

// Called for each well-formed message on the revocation channel.
using RevocationHandler = void (*)(const core::Revocation& revocation) noexcept;

// Called when the revocation channel is subscribed again after its
// connection was lost: messages published in between were missed.
using ResubscribeHandler = void (*)() noexcept;

// init_process / exit_process. redis_start never fails the worker: when it
// cannot connect it retries with backoff. With `on_revocation`, a second
// connection subscribes to the revocation channel, and `on_resubscribe`
// runs on each subscription after the first.
void redis_start(ngx_cycle_t* cycle, const MainConf* conf, RevocationHandler on_revocation,
                 ResubscribeHandler on_resubscribe) noexcept;
void redis_stop() noexcept;

// The opaque check's one-key read: HMGET of `session_key`'s fields
// core::kSessionReadFieldNames (the session's own and, under contract
// version 2, its user's copies), decoded by core::decode_session_read.
// nullptr when the request cannot be sent now (no connection: the caller
// fails fast); `done` is then never called. A connection still being opened
// counts as one: the lookup waits for it within its own timeout.
Lookup* redis_lookup(std::string_view session_key, void* owner, LookupDone done) noexcept;

// The same check's second read, for a session hash without the user's
// copies: HMGET of `user_key`'s core::kUserFieldNames (decode_user_hmget).
// A lookup of its own (its own timeout, redis_detach), but the check's
// latency is observed once, from `first`'s send to this reply. Call it from
// within `first`'s `done`, while `first` is still alive.
Lookup* redis_lookup_user(std::string_view user_key, Lookup* first, void* owner,
                          LookupDone done) noexcept;

// JWT mode: HMGET of the session's fields (core::kSessionFieldNames) and of
// the user's (kUserFieldNames), pipelined: one round trip of plain
// single-key reads, no script. nullptr when it cannot be sent now.
Lookup* redis_overlay(std::string_view session_key, std::string_view user_key, void* owner,
                      OverlayDone done) noexcept;

// session_jwt_keys redis: GET of `key` (the key set, a STRING), with the
// same contract as redis_lookup (nullptr when it cannot be sent now).
Lookup* redis_get(std::string_view key, void* owner, LookupDone done) noexcept;

// better-auth mode's check: GET of `key` (a session's JSON), as redis_get
// but observed in the lookup latency histogram as any check is.
Lookup* redis_lookup_string(std::string_view key, void* owner, LookupDone done) noexcept;

// The owner is going away: `done` will not be called for this lookup. The
// link frees the lookup when its reply (or failure) arrives.
void redis_detach(Lookup* lookup) noexcept;

// Sliding expiry, fire-and-forget (see kTouchScript).
void redis_touch(std::string_view session_key, std::int64_t now_ms,
                 std::int64_t interval_ms) noexcept;

}  // namespace session::ngx
