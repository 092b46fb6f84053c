#include "daemon/redis.hpp"

#include <sys/time.h>

namespace syncd {
namespace {

timeval to_timeval(std::chrono::milliseconds ms) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
    return tv;
}

void check_reply(const redisContext* ctx, const redisReply* r) {
    if (!r) {
        throw RedisError(std::string("Redis: ") + (ctx->err ? ctx->errstr : "no reply"));
    }
    if (r->type == REDIS_REPLY_ERROR) {
        throw RedisError(std::string("Redis error reply: ") + std::string(r->str, r->len));
    }
}

struct Argv {
    std::vector<const char*> ptrs;
    std::vector<size_t> lens;
    explicit Argv(const std::vector<std::string>& argv) {
        for (const auto& a : argv) {
            ptrs.push_back(a.data());
            lens.push_back(a.size());
        }
    }
};

}  // namespace

Redis::Redis(const RedisUrl& url, std::chrono::milliseconds timeout) {
    timeval tv = to_timeval(timeout);
    ctx_.reset(url.unix_socket ? redisConnectUnixWithTimeout(url.host.c_str(), tv)
                               : redisConnectWithTimeout(url.host.c_str(), url.port, tv));
    if (!ctx_) throw RedisError("Redis: out of memory");
    if (ctx_->err) {
        throw RedisError("cannot connect to Redis at " + url.redacted() + ": " + ctx_->errstr);
    }
    redisSetTimeout(ctx_.get(), tv);
    if (!url.password.empty()) {
        std::vector<std::string> auth = {"AUTH"};
        if (!url.user.empty()) auth.push_back(url.user);
        auth.push_back(url.password);
        try {
            command(auth);
        } catch (const RedisError&) {
            // The reply text is the server's; it never echoes the password.
            throw RedisError("Redis at " + url.redacted() + " refused the credentials");
        }
    }
    if (url.db != 0) command({"SELECT", std::to_string(url.db)});
}

RedisReplyPtr Redis::command(const std::vector<std::string>& argv) {
    Argv a(argv);
    RedisReplyPtr reply(static_cast<redisReply*>(redisCommandArgv(
        ctx_.get(), static_cast<int>(a.ptrs.size()), a.ptrs.data(), a.lens.data())));
    check_reply(ctx_.get(), reply.get());
    return reply;
}

std::vector<RedisReplyPtr> Redis::pipeline(const std::vector<std::vector<std::string>>& commands) {
    for (const auto& argv : commands) {
        Argv a(argv);
        if (redisAppendCommandArgv(ctx_.get(), static_cast<int>(a.ptrs.size()), a.ptrs.data(),
                                   a.lens.data()) != REDIS_OK) {
            throw RedisError(std::string("Redis: ") + ctx_->errstr);
        }
    }
    std::vector<RedisReplyPtr> replies;
    std::string first_error;
    for (std::size_t i = 0; i < commands.size(); ++i) {
        void* raw = nullptr;
        if (redisGetReply(ctx_.get(), &raw) != REDIS_OK) {
            throw RedisError(std::string("Redis: ") + ctx_->errstr);
        }
        RedisReplyPtr reply(static_cast<redisReply*>(raw));
        // Read every reply before throwing so the connection stays in step.
        if (reply->type == REDIS_REPLY_ERROR && first_error.empty()) {
            first_error = std::string(reply->str, reply->len);
        }
        replies.push_back(std::move(reply));
    }
    if (!first_error.empty()) throw RedisError("Redis error reply: " + first_error);
    return replies;
}

std::string marker_key(const std::string& prefix) {
    return prefix + "syncd:marker";
}

// KEYS[1] the key; ARGV[1] PEXPIREAT milliseconds, ARGV[2] the projected
// last_active_at ("" when none), ARGV[3..] field/value pairs. Values are
// arguments, never part of the script text.
const char* const kApplySessionScript =
    "local stored = redis.call('HGET', KEYS[1], 'last_active_at')\n"
    "local last = ARGV[2]\n"
    "if stored and tonumber(stored) and (last == '' or tonumber(stored) > tonumber(last)) then\n"
    "  last = stored\n"
    "end\n"
    "redis.call('DEL', KEYS[1])\n"
    "redis.call('HSET', KEYS[1], unpack(ARGV, 3))\n"
    "if last ~= '' then redis.call('HSET', KEYS[1], 'last_active_at', last) end\n"
    "redis.call('PEXPIREAT', KEYS[1], ARGV[1])\n"
    "return 1\n";

std::vector<std::vector<std::string>> apply_commands(const KeyState& state) {
    std::vector<std::vector<std::string>> cmds;
    if (!state.present) {
        cmds.push_back({"DEL", state.key});
        return cmds;
    }
    if (state.keep_newer_last_active && state.expire_at_ms) {
        std::vector<std::string> eval = {
            "EVAL", kApplySessionScript, "1", state.key, std::to_string(*state.expire_at_ms), ""};
        for (const auto& [field, value] : state.fields) {
            if (field == "last_active_at") {
                eval[5] = value;
            } else {
                eval.push_back(field);
                eval.push_back(value);
            }
        }
        cmds.push_back(std::move(eval));
        return cmds;
    }
    cmds.push_back({"MULTI"});
    cmds.push_back({"DEL", state.key});
    std::vector<std::string> hset = {"HSET", state.key};
    for (const auto& [field, value] : state.fields) {
        hset.push_back(field);
        hset.push_back(value);
    }
    cmds.push_back(std::move(hset));
    if (state.expire_at_ms) {
        cmds.push_back({"PEXPIREAT", state.key, std::to_string(*state.expire_at_ms)});
    } else if (state.ttl_seconds) {
        cmds.push_back({"EXPIRE", state.key, std::to_string(*state.ttl_seconds)});
    }
    cmds.push_back({"EXEC"});
    return cmds;
}

void Redis::apply(const KeyState& state) {
    auto replies = pipeline(apply_commands(state));
    const redisReply* last = replies.back().get();
    // EXEC answers nil when the transaction was aborted; EVAL either ran
    // whole or failed with an error reply (thrown by pipeline()).
    if (state.present && replies.size() > 1 && last->type != REDIS_REPLY_ARRAY) {
        throw RedisError("Redis: transaction aborted for a projected key");
    }
}

KeyState Redis::read(const std::string& key, bool& has_ttl) {
    auto stored = read_many({key});
    has_ttl = stored.front().has_ttl;
    return std::move(stored.front().state);
}

std::vector<Redis::Stored> Redis::read_many(const std::vector<std::string>& keys) {
    std::vector<std::vector<std::string>> commands;
    commands.reserve(keys.size() * 2);
    for (const auto& key : keys) {
        commands.push_back({"HGETALL", key});
        commands.push_back({"PTTL", key});
    }
    auto replies = pipeline(commands);
    std::vector<Stored> out(keys.size());
    for (std::size_t k = 0; k < keys.size(); ++k) {
        KeyState& state = out[k].state;
        state.key = keys[k];
        const redisReply* all = replies[2 * k].get();
        if (all->type == REDIS_REPLY_ARRAY) {
            for (size_t i = 0; i + 1 < all->elements; i += 2) {
                state.fields.emplace_back(
                    std::string(all->element[i]->str, all->element[i]->len),
                    std::string(all->element[i + 1]->str, all->element[i + 1]->len));
            }
        }
        state.present = !state.fields.empty();
        const redisReply* ttl = replies[2 * k + 1].get();
        out[k].has_ttl = ttl->type == REDIS_REPLY_INTEGER && ttl->integer >= 0;
    }
    return out;
}

long long Redis::publish(const std::string& channel, const std::string& message) {
    auto reply = command({"PUBLISH", channel, message});
    return reply->type == REDIS_REPLY_INTEGER ? reply->integer : 0;
}

}  // namespace syncd
