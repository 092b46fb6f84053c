#include "daemon/redis_cluster.hpp"

#include <strings.h>

#include <algorithm>

#include "core/metrics.hpp"

namespace syncd {
namespace {

using session::common::key_slot;
using session::common::parse_redirect;
using session::common::Redirect;
using session::common::RedirectKind;
using session::common::RedisEndpoint;
using session::common::SlotMap;

bool is(const std::string& word, const char* name) {
    return strcasecmp(word.c_str(), name) == 0;
}

std::string text_of(const redisReply* r) {
    return r->str ? std::string(r->str, r->len) : std::string();
}

// The first redirection among a group's replies (every command of a group
// names the same slot, so they agree).
std::optional<Redirect> redirect_in(const std::vector<RedisReplyPtr>& replies,
                                    const CommandGroup& group, const std::string& fallback_host) {
    for (std::size_t i = group.first; i < group.first + group.count; ++i) {
        const redisReply* r = replies[i].get();
        if (r == nullptr || r->type != REDIS_REPLY_ERROR) continue;
        if (auto redirect = parse_redirect(text_of(r), fallback_host)) return redirect;
    }
    return std::nullopt;
}

}  // namespace

std::optional<std::string_view> routing_key(const std::vector<std::string>& argv) {
    if (argv.size() < 2) return std::nullopt;
    const std::string& name = argv[0];
    if (is(name, "EVAL") || is(name, "EVALSHA")) {
        if (argv.size() < 4 || argv[2] == "0") return std::nullopt;
        return std::string_view(argv[3]);
    }
    for (const char* keyless : {"PUBLISH", "PING", "CONFIG", "ECHO", "INFO", "CLUSTER", "AUTH",
                                "SELECT", "WAIT", "ROLE", "SCRIPT", "CLIENT", "HELLO"}) {
        if (is(name, keyless)) return std::nullopt;
    }
    return std::string_view(argv[1]);
}

std::vector<CommandGroup> group_by_slot(const RedisConn::Commands& commands) {
    std::vector<CommandGroup> groups;
    bool in_multi = false;
    for (std::size_t i = 0; i < commands.size(); ++i) {
        const auto& argv = commands[i];
        const bool opens = !argv.empty() && is(argv[0], "MULTI");
        const bool closes = !argv.empty() && (is(argv[0], "EXEC") || is(argv[0], "DISCARD"));
        if (!in_multi || opens) groups.push_back(CommandGroup{i, 0, -1});
        CommandGroup& group = groups.back();
        ++group.count;
        if (auto key = routing_key(argv)) {
            const int slot = key_slot(*key);
            if (group.slot >= 0 && group.slot != slot) {
                throw RedisError(
                    "Redis Cluster: a transaction of syncd's touches keys in different hash "
                    "slots (" +
                    std::to_string(group.slot) + " and " + std::to_string(slot) + ")");
            }
            group.slot = slot;
        }
        if (opens) in_multi = true;
        if (closes) in_multi = false;
    }
    return groups;
}

ClusterLinks::ClusterLinks(std::vector<RedisEndpoint> seeds, Open open, Metrics* metrics,
                           std::chrono::milliseconds wait_timeout)
    : seeds_(std::move(seeds)),
      open_(std::move(open)),
      metrics_(metrics),
      wait_timeout_(wait_timeout) {
    refresh_map(std::nullopt);
}

ClusterLinks::Link& ClusterLinks::link(const Endpoint& node) {
    Link& link = links_[node.text()];
    if (!link.conn || link.conn->broken()) {
        link.conn.reset();
        link.conn = open_(node);
        // ROLE of a primary: "master", offset, [[ip, port, offset], ...]. A
        // refused ROLE (an ACL without +role) means no WAIT, as before.
        auto reply = link.conn->exchange({{"ROLE"}});
        const redisReply* role = reply[0].get();
        link.wait = role->type == REDIS_REPLY_ARRAY && role->elements >= 3 &&
                    role->element[0]->type == REDIS_REPLY_STRING &&
                    text_of(role->element[0]) == "master" &&
                    role->element[2]->type == REDIS_REPLY_ARRAY && role->element[2]->elements > 0;
    }
    return link;
}

void ClusterLinks::refresh_map(const std::optional<Endpoint>& first) {
    std::vector<Endpoint> candidates;
    if (first) candidates.push_back(*first);
    for (const auto& [text, l] : links_) {
        if (l.conn && !l.conn->broken()) candidates.push_back(l.conn->endpoint());
    }
    candidates.insert(candidates.end(), seeds_.begin(), seeds_.end());
    std::vector<std::string> tried;
    std::string last = "no node to ask";
    for (const auto& node : candidates) {
        const std::string name = node.text();
        if (std::find(tried.begin(), tried.end(), name) != tried.end()) continue;
        tried.push_back(name);
        try {
            auto reply = link(node).conn->exchange({{"CLUSTER", "SLOTS"}});
            const redisReply* r = reply[0].get();
            if (r->type == REDIS_REPLY_ERROR) {
                // "ERR This instance has cluster support disabled": a
                // cluster:// URL that names a standalone server.
                last = "Redis at " + name + ": CLUSTER SLOTS: " + text_of(r);
                continue;
            }
            std::string error;
            auto map = SlotMap::from_cluster_slots(*r, node.host, error);
            if (!map || map->covered_slots() == 0) {
                last = "Redis at " + name +
                       ": CLUSTER SLOTS: " + (map ? std::string("no slot has a primary") : error);
                continue;
            }
            map_ = std::move(*map);
            if (metrics_) {
                std::vector<std::string> primaries;
                for (const auto& p : map_.primaries()) primaries.push_back(p.text());
                metrics_->set_redis_primaries(std::move(primaries));
            }
            return;
        } catch (const RedisError& e) {
            // This node is down or unreachable: the next one may answer.
            links_.erase(name);
            last = e.what();
        }
    }
    broken_ = true;
    throw RedisError("Redis Cluster: no node gave the slot map (CLUSTER SLOTS): " + last);
}

const ClusterLinks::Endpoint& ClusterLinks::node_for(int slot) {
    if (slot < 0) {
        // Any node answers: one already connected if there is one.
        for (const auto& p : map_.primaries()) {
            auto it = links_.find(p.text());
            if (it != links_.end() && it->second.conn && !it->second.conn->broken()) return p;
        }
        return map_.primaries().front();
    }
    const auto s = static_cast<std::uint16_t>(slot);
    if (!map_.primary_for(s)) refresh_map(std::nullopt);  // being reassigned?
    if (const Endpoint* node = map_.primary_for(s)) return *node;
    throw RedisError("Redis Cluster: no primary serves hash slot " + std::to_string(slot) +
                     " (the cluster is down or being reconfigured)");
}

void ClusterLinks::send(const RedisConn::Commands& commands,
                        const std::vector<CommandGroup>& groups,
                        std::map<std::string, Batch>& batches,
                        std::vector<RedisReplyPtr>& replies) {
    for (auto& [name, batch] : batches) {
        RedisConn::Commands out;
        for (const auto& [g, asking] : batch.groups) {
            if (asking) out.push_back({"ASKING"});
            const CommandGroup& group = groups[g];
            out.insert(out.end(), commands.begin() + static_cast<std::ptrdiff_t>(group.first),
                       commands.begin() + static_cast<std::ptrdiff_t>(group.first + group.count));
        }
        std::vector<RedisReplyPtr> got;
        try {
            Link& l = link(batch.node);
            if (l.wait) out.push_back({"WAIT", "1", std::to_string(wait_timeout_.count())});
            got = l.conn->exchange(out);
            if (l.wait) {
                const redisReply* ack = got.back().get();
                if (!(ack->type == REDIS_REPLY_INTEGER && ack->integer >= 1)) {
                    // Reconnecting asks ROLE again: a primary left without
                    // replicas is then written without waiting.
                    throw RedisError("Redis at " + l.conn->server() +
                                     ": no replica acknowledged the writes within " +
                                     std::to_string(wait_timeout_.count()) + " ms");
                }
                got.pop_back();
            }
        } catch (const RedisError&) {
            // The caller (the projector) starts over on a new map; the
            // batch's outbox entries stay until then.
            broken_ = true;
            throw;
        }
        std::size_t at = 0;
        for (const auto& [g, asking] : batch.groups) {
            if (asking) ++at;  // +OK of ASKING
            const CommandGroup& group = groups[g];
            for (std::size_t i = 0; i < group.count; ++i) {
                replies[group.first + i] = std::move(got[at++]);
            }
        }
    }
}

std::vector<RedisReplyPtr> ClusterLinks::exchange(const RedisConn::Commands& commands) {
    if (broken_) throw RedisError("Redis Cluster: the connections are broken");
    const auto groups = group_by_slot(commands);
    std::vector<RedisReplyPtr> replies(commands.size());
    std::map<std::string, Batch> first_round;
    for (std::size_t g = 0; g < groups.size(); ++g) {
        const Endpoint& node = node_for(groups[g].slot);
        auto& batch = first_round[node.text()];
        batch.node = node;
        batch.groups.emplace_back(g, false);
    }
    send(commands, groups, first_round, replies);

    // A redirected command was not run: its group goes once more. Groups
    // of one key share a slot, hence a node: sent per node in the
    // pipeline's order, a later group of the key stays after an earlier.
    struct Retry {
        std::size_t group;
        bool ask;
        std::optional<Endpoint> node;  // none: where the refreshed map says
    };
    std::vector<Retry> retries;
    std::optional<Endpoint> moved_to;
    bool moved = false;
    for (const auto& [name, batch] : first_round) {
        for (const auto& [g, asking] : batch.groups) {
            auto redirect = redirect_in(replies, groups[g], batch.node.host);
            if (!redirect) continue;
            const bool ask = redirect->kind == RedirectKind::ask;
            if (metrics_) {
                if (ask) {
                    metrics_->count_redis_ask();
                } else {
                    metrics_->count_redis_moved();
                }
            }
            std::optional<Endpoint> node;
            if (redirect->has_endpoint()) node = redirect->endpoint;
            if (ask && !node) continue;  // no node to ask: the error reply stays
            if (!ask) {
                moved = true;
                if (node) moved_to = node;
            }
            retries.push_back(Retry{g, ask, node});
        }
    }
    if (retries.empty()) return replies;
    // MOVED: the slot lives elsewhere now; the node named knows it best.
    if (moved) refresh_map(moved_to);
    std::sort(retries.begin(), retries.end(),
              [](const Retry& a, const Retry& b) { return a.group < b.group; });
    std::map<std::string, Batch> second_round;
    for (const auto& retry : retries) {
        // ASK names the node importing the slot, for this command only (with
        // ASKING before it); MOVED's node is where the slot lives now.
        const Endpoint node = retry.node ? *retry.node : node_for(groups[retry.group].slot);
        auto& batch = second_round[node.text()];
        batch.node = node;
        batch.groups.emplace_back(retry.group, retry.ask);
    }
    send(commands, groups, second_round, replies);
    return replies;
}

}  // namespace syncd
