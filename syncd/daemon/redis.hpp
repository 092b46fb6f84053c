// hiredis with RAII and argument vectors only (never a formatted command
// string), plus the few operations the projection needs.
#pragma once

#include <hiredis/hiredis.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "core/projection.hpp"

namespace syncd {

struct RedisContextDeleter {
    void operator()(redisContext* c) const noexcept { redisFree(c); }
};
struct RedisReplyDeleter {
    void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using RedisContextPtr = std::unique_ptr<redisContext, RedisContextDeleter>;
using RedisReplyPtr = std::unique_ptr<redisReply, RedisReplyDeleter>;

class RedisError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

class Redis {
  public:
    // Connects, authenticates and selects the database. Throws RedisError;
    // the message names the server without its password.
    Redis(const RedisUrl& url, std::chrono::milliseconds timeout);

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

    // PUBLISH; returns the number of subscribers that received it.
    long long publish(const std::string& channel, const std::string& message);

    bool broken() const { return ctx_->err != 0; }

  private:
    RedisContextPtr ctx_;
};

// syncd's own key (docs/redis-contract.md): present once a full
// reconciliation has reached Redis, so that a Redis that lost its data
// (restart without persistence, FLUSHALL) is told from one that has it.
std::string marker_key(const std::string& prefix);

// The script for session keys, and the commands apply() sends (unit tests).
extern const char* const kApplySessionScript;
std::vector<std::vector<std::string>> apply_commands(const KeyState& state);

}  // namespace syncd
