#include "daemon/redis.hpp"

#include <algorithm>
#include <mutex>
#include <thread>

#include "daemon/log.hpp"

namespace syncd {
namespace {

using session::common::RedisEndpoint;
using session::common::RedisTopology;

// A primary that is not yet one (ROLE says replica) is asked again this many
// times, this far apart; then the caller's own retry takes over.
constexpr int kSentinelRounds = 3;
constexpr std::chrono::milliseconds kSentinelPause(250);

std::string text_of(const redisReply* r) {
    return r->str ? std::string(r->str, r->len) : std::string();
}

bool error_starts_with(const redisReply* r, const char* prefix) {
    return r->type == REDIS_REPLY_ERROR && text_of(r).rfind(prefix, 0) == 0;
}

// The server's reply to a refused AUTH never echoes the password.
void authenticate(RedisConn& conn, const std::string& user, const std::string& password) {
    std::vector<std::string> auth = {"AUTH"};
    if (!user.empty()) auth.push_back(user);
    auth.push_back(password);
    auto reply = conn.exchange({auth});
    if (reply[0]->type == REDIS_REPLY_ERROR) {
        throw RedisError("Redis at " + conn.server() + " refused the credentials" +
                         (user.empty() ? "" : " of user " + user) + ": " + text_of(reply[0].get()));
    }
}

// Logged once per change, not per reconnection: a failover shows as one line.
void note_primary(const std::string& master, const std::string& primary,
                  const std::string& sentinel) {
    static std::mutex mu;
    static std::string last;
    std::lock_guard<std::mutex> lock(mu);
    if (primary == last) return;
    log::info("Redis primary of \"" + master + "\" is " + primary + " (from the sentinel at " +
              sentinel + ")");
    last = primary;
}

}  // namespace

Redis::Redis(const RedisSettings& settings, std::chrono::milliseconds timeout, Metrics* metrics)
    : settings_(settings), timeout_(timeout), metrics_(metrics) {
    if (settings_.tls.enabled) ssl_ctx_ = make_tls_context(settings_.tls);
    // Read before connecting: a failover announced while we connect makes
    // this connection stale rather than passing unnoticed.
    if (metrics_) failovers_at_connect_ = metrics_->redis_failovers();
    switch (settings_.address.topology) {
        case RedisTopology::standalone:
            conn_ = open(settings_.address.endpoints.at(0));
            if (metrics_) metrics_->set_redis_primary(conn_->server());
            break;
        case RedisTopology::sentinel:
            connect_through_sentinels();
            break;
        case RedisTopology::cluster:
            cluster_ = std::make_unique<ClusterLinks>(
                settings_.address.endpoints,
                [this](const RedisEndpoint& node) { return open(node); }, metrics_,
                std::chrono::milliseconds(std::max<long long>(1, timeout_.count() / 2)));
            break;
    }
}

bool Redis::stale() const {
    return metrics_ && settings_.address.topology == RedisTopology::sentinel &&
           metrics_->redis_failovers() != failovers_at_connect_;
}

bool Redis::broken() const {
    if (cluster_) return cluster_->broken();
    return !conn_ || conn_->broken() || demoted_ || stale();
}

std::unique_ptr<RedisConn> Redis::open(const RedisEndpoint& endpoint) {
    std::unique_ptr<RedisConn> conn;
    const auto& address = settings_.address;
    try {
        conn = std::make_unique<RedisConn>(endpoint, ssl_ctx_.get(), settings_.tls, timeout_);
        // Under TLS 1.3 a refused client certificate shows on the first
        // exchange: it counts as a failed handshake too, so there is one
        // here (AUTH, or a PING when there is nothing to say).
        if (!address.password.empty()) {
            authenticate(*conn, address.user, address.password);
        } else if (ssl_ctx_) {
            conn->exchange({{"PING"}});
        }
    } catch (const RedisTlsError&) {
        if (metrics_) metrics_->count_redis_tls_handshake_failure();
        throw;
    }
    if (address.db > 0) {  // never in a cluster (the grammar refuses it)
        auto reply = conn->exchange({{"SELECT", std::to_string(address.db)}});
        if (reply[0]->type == REDIS_REPLY_ERROR) {
            throw RedisError("Redis at " + conn->server() + ": SELECT " +
                             std::to_string(address.db) + ": " + text_of(reply[0].get()));
        }
    }
    return conn;
}

RedisEndpoint Redis::ask_sentinel(const RedisEndpoint& sentinel) {
    const auto& address = settings_.address;
    RedisConn conn(sentinel, ssl_ctx_.get(), settings_.tls, timeout_);
    const std::vector<std::string> ask = {"SENTINEL", "get-master-addr-by-name",
                                          address.master_name};
    auto reply = conn.exchange({ask});
    // Sentinels have a password of their own or none: AUTH only when asked
    // to, with the URL's credentials.
    if (error_starts_with(reply[0].get(), "NOAUTH") && !address.password.empty()) {
        authenticate(conn, address.user, address.password);
        reply = conn.exchange({ask});
    }
    const redisReply* r = reply[0].get();
    const std::string where = "the sentinel at " + conn.server();
    if (r->type == REDIS_REPLY_ERROR) throw RedisError(where + ": " + text_of(r));
    if (r->type == REDIS_REPLY_NIL) {
        throw RedisError(where + " knows no primary named \"" + address.master_name + "\"");
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING) {
        throw RedisError(where + ": unexpected reply to SENTINEL get-master-addr-by-name");
    }
    RedisEndpoint primary;
    primary.host = text_of(r->element[0]);
    const std::string port = text_of(r->element[1]);
    if (port.empty() || port.size() > 5 ||
        port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) == 0 ||
        std::stoi(port) > 65535) {
        throw RedisError(where + ": invalid primary port \"" + port + "\"");
    }
    primary.port = static_cast<std::uint16_t>(std::stoi(port));
    return primary;
}

void Redis::connect_through_sentinels() {
    const auto& address = settings_.address;
    std::string last = "no sentinel answered";
    for (int round = 0; round < kSentinelRounds; ++round) {
        if (round > 0) std::this_thread::sleep_for(kSentinelPause);
        // The sentinels usually agree: a primary that failed is not tried
        // again in the same round on another sentinel's word.
        std::vector<std::string> tried;
        for (const auto& sentinel : address.endpoints) {
            RedisEndpoint primary;
            try {
                primary = ask_sentinel(sentinel);
            } catch (const RedisError& e) {
                last = e.what();
                continue;
            }
            if (std::find(tried.begin(), tried.end(), primary.text()) != tried.end()) continue;
            tried.push_back(primary.text());
            try {
                auto conn = open(primary);
                auto reply = conn->exchange({{"ROLE"}});
                const redisReply* role = reply[0].get();
                if (role->type == REDIS_REPLY_ERROR) {
                    throw RedisError("Redis at " + conn->server() + ": ROLE: " + text_of(role) +
                                     " (syncd checks the primary's role: allow +role)");
                }
                if (role->type != REDIS_REPLY_ARRAY || role->elements < 1 ||
                    role->element[0]->type != REDIS_REPLY_STRING) {
                    throw RedisError("Redis at " + conn->server() + ": unexpected reply to ROLE");
                }
                const std::string name = text_of(role->element[0]);
                if (name != "master") {
                    last = "Redis at " + conn->server() + ", named primary by the sentinel at " +
                           sentinel.text() + ", is a " + name + " (a failover in progress)";
                    continue;
                }
                // ROLE of a primary: "master", offset, [[ip, port, offset], ...]
                wait_for_replica_ = role->elements >= 3 &&
                                    role->element[2]->type == REDIS_REPLY_ARRAY &&
                                    role->element[2]->elements > 0;
                conn_ = std::move(conn);
                note_primary(address.master_name, primary.text(), sentinel.text());
                // A change found here, before SentinelWatch saw it, is a
                // failover too (counted once, whoever sees it first).
                if (metrics_ && metrics_->set_redis_primary(primary.text())) {
                    failovers_at_connect_ = metrics_->redis_failovers();
                }
                return;
            } catch (const RedisError& e) {
                last = e.what();
            }
        }
    }
    throw RedisError("no Redis primary for \"" + address.master_name + "\" through " +
                     address.redacted() + ": " + last);
}

std::vector<RedisReplyPtr> Redis::exchange(const std::vector<std::vector<std::string>>& commands) {
    if (cluster_) return cluster_->exchange(commands);
    if (!conn_) throw RedisError("Redis: not connected");
    if (demoted_) throw RedisError("Redis at " + conn_->server() + " is no longer the primary");
    if (stale()) {
        // The whole batch goes to the new primary: what went to the old one
        // since may not be on the new (asynchronous replication).
        demoted_ = true;
        throw RedisError("Redis at " + conn_->server() +
                         ": the sentinels announced a new primary (+switch-master); "
                         "reconnecting through the sentinels");
    }
    static const std::vector<std::vector<std::string>> none;
    // WAIT's own timeout is shorter than the exchange's, so that its answer
    // (how many replicas have the writes) arrives before the deadline.
    const std::vector<std::vector<std::string>> wait = {
        {"WAIT", "1", std::to_string(std::max<long long>(1, timeout_.count() / 2))}};
    auto replies = conn_->exchange(commands, wait_for_replica_ ? wait : none);
    RedisReplyPtr ack;
    if (wait_for_replica_) {
        ack = std::move(replies.back());
        replies.pop_back();
    }
    for (const auto& reply : replies) {
        if (error_starts_with(reply.get(), "READONLY")) {
            demoted_ = true;
            throw RedisError("Redis at " + conn_->server() +
                             " answered READONLY: it is a replica now (a failover); reconnecting" +
                             (settings_.address.topology == RedisTopology::sentinel
                                  ? " through the sentinels"
                                  : ""));
        }
    }
    if (ack && !(ack->type == REDIS_REPLY_INTEGER && ack->integer >= 1)) {
        // Reconnecting asks ROLE again: a primary left without replicas is
        // then written without waiting.
        demoted_ = true;
        throw RedisError("Redis at " + conn_->server() +
                         ": no replica acknowledged the writes within " +
                         std::to_string(timeout_.count() / 2) + " ms");
    }
    return replies;
}

RedisReplyPtr Redis::command(const std::vector<std::string>& argv) {
    auto replies = exchange({argv});
    if (replies[0]->type == REDIS_REPLY_ERROR) {
        throw RedisError("Redis error reply: " + text_of(replies[0].get()));
    }
    return std::move(replies[0]);
}

std::vector<RedisReplyPtr> Redis::pipeline(const std::vector<std::vector<std::string>>& commands) {
    auto replies = exchange(commands);
    // Every reply has been read: the connection stays in step.
    for (const auto& reply : replies) {
        if (reply->type == REDIS_REPLY_ERROR) {
            throw RedisError("Redis error reply: " + text_of(reply.get()));
        }
    }
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
    if (state.is_set) {
        std::vector<std::string> sadd = {"SADD", state.key};
        sadd.insert(sadd.end(), state.members.begin(), state.members.end());
        cmds.push_back({"MULTI"});
        cmds.push_back({"DEL", state.key});
        cmds.push_back(std::move(sadd));
        if (state.expire_at_ms) {
            cmds.push_back({"PEXPIREAT", state.key, std::to_string(*state.expire_at_ms)});
        }
        cmds.push_back({"EXEC"});
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
    std::vector<KeyState> like(keys.size());
    for (std::size_t k = 0; k < keys.size(); ++k) like[k].key = keys[k];
    return read_many(like);
}

std::vector<Redis::Stored> Redis::read_many(const std::vector<KeyState>& like) {
    std::vector<std::vector<std::string>> commands;
    commands.reserve(like.size() * 2);
    for (const auto& want : like) {
        commands.push_back({want.is_set ? "SMEMBERS" : "HGETALL", want.key});
        commands.push_back({"PTTL", want.key});
    }
    auto replies = pipeline(commands);
    std::vector<Stored> out(like.size());
    for (std::size_t k = 0; k < like.size(); ++k) {
        KeyState& state = out[k].state;
        state.key = like[k].key;
        state.is_set = like[k].is_set;
        const redisReply* all = replies[2 * k].get();
        if (all->type == REDIS_REPLY_ARRAY && state.is_set) {
            for (size_t i = 0; i < all->elements; ++i) {
                state.members.emplace_back(all->element[i]->str, all->element[i]->len);
            }
            std::sort(state.members.begin(), state.members.end());
        } else if (all->type == REDIS_REPLY_ARRAY) {
            for (size_t i = 0; i + 1 < all->elements; i += 2) {
                state.fields.emplace_back(
                    std::string(all->element[i]->str, all->element[i]->len),
                    std::string(all->element[i + 1]->str, all->element[i + 1]->len));
            }
        }
        state.present = !state.fields.empty() || !state.members.empty();
        const redisReply* ttl = replies[2 * k + 1].get();
        out[k].has_ttl = ttl->type == REDIS_REPLY_INTEGER && ttl->integer >= 0;
    }
    return out;
}

// KEYS[1] the session key; ARGV[1] the user id the hash must name,
// ARGV[2] n, ARGV[3..2+n] the copied field names to delete, ARGV[3+n..]
// field/value pairs (user_status always among them). A tombstone has no
// user_id and a missing key none either: both answer 0 untouched.
const char* const kCopyUserFieldsScript =
    "if redis.call('HGET', KEYS[1], 'user_id') ~= ARGV[1] then return 0 end\n"
    "local n = tonumber(ARGV[2])\n"
    "redis.call('HDEL', KEYS[1], unpack(ARGV, 3, 2 + n))\n"
    "redis.call('HSET', KEYS[1], unpack(ARGV, 3 + n))\n"
    "return 1\n";

std::vector<std::string> copy_user_fields_command(const std::string& session_key,
                                                  const std::string& clerk_user_id,
                                                  const Fields& copies) {
    std::vector<std::string> eval = {"EVAL", kCopyUserFieldsScript, "1", session_key,
                                     clerk_user_id};
    eval.push_back(std::to_string(std::size(kSessionUserFieldNames)));
    for (const char* name : kSessionUserFieldNames) eval.emplace_back(name);
    for (const auto& [field, value] : copies) {
        eval.push_back(field);
        eval.push_back(value);
    }
    return eval;
}

// KEYS[1] the user's set; ARGV[1] the session id, ARGV[2] the session's
// expiry (PEXPIREAT ms), ARGV[3] the same as a TTL in ms from now. PTTL is
// -1 on the set SADD has just created: it gets the session's expiry.
const char* const kAddToSessionSetScript =
    "redis.call('SADD', KEYS[1], ARGV[1])\n"
    "local ttl = redis.call('PTTL', KEYS[1])\n"
    "if ttl < tonumber(ARGV[3]) then redis.call('PEXPIREAT', KEYS[1], ARGV[2]) end\n"
    "return 1\n";

std::vector<std::string> session_set_command(const SessionSetChange& change, std::int64_t now_ms) {
    if (!change.add) return {"SREM", change.key, change.session_id};
    return {"EVAL",
            kAddToSessionSetScript,
            "1",
            change.key,
            change.session_id,
            std::to_string(change.expire_at_ms),
            std::to_string(change.expire_at_ms - now_ms)};
}

long long Redis::publish(const std::string& channel, const std::string& message) {
    auto reply = command({"PUBLISH", channel, message});
    return reply->type == REDIS_REPLY_INTEGER ? reply->integer : 0;
}

}  // namespace syncd
