// Redis for syncd: argument vectors only (never a formatted command
// string), over syncd's own connection (plain, TLS, Unix socket; through
// the sentinels for sentinel://; one per primary, routed by hash slot, for
// cluster://), plus the few operations the projection needs.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "core/metrics.hpp"
#include "core/projection.hpp"
#include "daemon/redis_cluster.hpp"
#include "daemon/redis_conn.hpp"

namespace syncd {

class Redis {
  public:
    // Connects, authenticates and selects the database; for sentinel://,
    // asks the sentinels in turn for the primary and checks its ROLE; for
    // cluster://, fetches the slot map from a seed (each primary is
    // connected when a command first goes there). Throws RedisError; the
    // message names the server without its password. `metrics`, when
    // given, is told the primary and counts redirections, TLS handshake
    // failures and failovers; a failover counted there (SentinelWatch's
    // +switch-master) makes this connection stale: broken().
    Redis(const RedisSettings& settings, std::chrono::milliseconds timeout,
          Metrics* metrics = nullptr);

    // One command; throws RedisError on I/O failure or an error reply.
    RedisReplyPtr command(const std::vector<std::string>& argv);

    // Several commands in one round trip; every reply is checked.
    std::vector<RedisReplyPtr> pipeline(const std::vector<std::vector<std::string>>& commands);

    // Makes the key match `state` atomically (MULTI/EXEC): DEL, then HSET
    // and the expiry when the key should be present. A session key is
    // written by one EVAL that does the same but keeps the stored
    // last_active_at when it is newer than the projected one.
    void apply(const KeyState& state);

    // Reads the key back as a KeyState (fields and whether it has a TTL) to
    // compare with the desired one.
    KeyState read(const std::string& key, bool& has_ttl);

    // The same for many keys in one round trip (HGETALL and PTTL each).
    struct Stored {
        KeyState state;
        bool has_ttl = false;
    };
    std::vector<Stored> read_many(const std::vector<std::string>& keys);
    // Each key read as the kind `like` says it should be: SMEMBERS for a set
    // (user_sessions:), HGETALL for a hash.
    std::vector<Stored> read_many(const std::vector<KeyState>& like);

    // PUBLISH; returns the number of subscribers that received it.
    long long publish(const std::string& channel, const std::string& message);

    // True once the connection failed, the server turned out a replica
    // (READONLY: a failover) or the sentinels announced a new primary: open
    // a new Redis, which finds the primary (or the cluster's slot map).
    bool broken() const;

  private:
    std::unique_ptr<RedisConn> open(const session::common::RedisEndpoint& endpoint);
    session::common::RedisEndpoint ask_sentinel(const session::common::RedisEndpoint& sentinel);
    void connect_through_sentinels();
    // Every command goes through here: READONLY marks the connection
    // broken, and behind sentinels the writes wait for a replica (WAIT); in
    // a cluster each command goes to its slot's primary.
    std::vector<RedisReplyPtr> exchange(const std::vector<std::vector<std::string>>& commands);
    // A failover was announced since this connection was made.
    bool stale() const;

    const RedisSettings settings_;
    std::chrono::milliseconds timeout_;
    SslCtxPtr ssl_ctx_;  // before conn_: outlives it
    std::unique_ptr<RedisConn> conn_;
    std::unique_ptr<ClusterLinks> cluster_;  // cluster:// instead of conn_
    Metrics* metrics_ = nullptr;
    std::uint64_t failovers_at_connect_ = 0;
    // Sentinel: the primary had replicas when connected; each exchange then
    // waits until one has the writes, so that a failover cannot lose what
    // the outbox already let go of.
    bool wait_for_replica_ = false;
    bool demoted_ = false;
};

// syncd's own key (docs/redis-contract.md): present once a full
// reconciliation has reached Redis, so that a Redis that lost its data
// (restart without persistence, FLUSHALL) is told from one that has it.
std::string marker_key(const std::string& prefix);

// The script for session keys, and the commands apply() sends (unit tests).
// A set (KeyState::is_set) is replaced like a hash: MULTI, DEL, SADD,
// PEXPIREAT, EXEC.
extern const char* const kApplySessionScript;
std::vector<std::vector<std::string>> apply_commands(const KeyState& state);

// Contract version 2, each command on one key (no script or MULTI spans a
// session key and a user key: Redis Cluster puts them on different slots).
//
// Rewrites the user's fields (session_user_fields) in a live session hash
// of that user in place, after a user change that leaves its sessions live
// (role, roles, email, db_id): deletes every copied field, then sets
// `copies`. A missing key, a tombstone or another user's hash is left
// alone (0): the session's own projection writes it whole when it is live.
extern const char* const kCopyUserFieldsScript;
std::vector<std::string> copy_user_fields_command(const std::string& session_key,
                                                  const std::string& clerk_user_id,
                                                  const Fields& copies);

// One session's change to its user's set: SADD and an expiry moved forward
// to the session's (never back: the set lives as long as its longest
// session), or SREM. `now_ms` turns the expiry into the TTL compared with
// the stored one.
extern const char* const kAddToSessionSetScript;
std::vector<std::string> session_set_command(const SessionSetChange& change, std::int64_t now_ms);

}  // namespace syncd
