// Redis Cluster for syncd (cluster://): one blocking connection per primary,
// opened when a command first goes there; the slot map from CLUSTER SLOTS;
// each command routed by the hash slot of its key; a pipeline split per
// node and its replies put back in the caller's order; MOVED followed
// after a refresh of the map and ASK with ASKING, once each. The pure parts
// (key_slot, SlotMap, parse_redirect) are common/redis_topology.hpp.
// As behind Sentinel, a primary that has replicas is sent WAIT 1 after each
// batch: a write is acknowledged (and its outbox entry deleted) only once a
// replica holds it, so that the replica promoted when the primary dies has
// it too.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/redis_topology.hpp"
#include "daemon/redis_conn.hpp"

namespace syncd {

class Metrics;

// The key that places a command in the cluster, for the commands syncd
// sends: argv[1], or EVAL/EVALSHA's first key (argv[3]). nullopt for a
// command that any node answers (PUBLISH reaches every node's subscribers;
// PING, CONFIG, ...) and for MULTI/EXEC/DISCARD, which take their
// transaction's slot.
std::optional<std::string_view> routing_key(const std::vector<std::string>& argv);

// A unit of a pipeline that goes to one node: one command, or MULTI up to
// its EXEC (or DISCARD) with the commands between.
struct CommandGroup {
    std::size_t first = 0;  // index of its first command
    std::size_t count = 0;
    int slot = -1;  // -1: no key, any node
};

// Cuts `commands` into groups, in order. Throws RedisError when the keys of
// one transaction (or of one EVAL: only its first key routes) fall in
// different slots: Redis Cluster would refuse it (CROSSSLOT).
std::vector<CommandGroup> group_by_slot(const RedisConn::Commands& commands);

class ClusterLinks {
  public:
    // Opens an authenticated connection to a node (the caller's TLS, AUTH).
    using Open =
        std::function<std::unique_ptr<RedisConn>(const session::common::RedisEndpoint& endpoint)>;

    // Fetches the slot map from the first seed that answers CLUSTER SLOTS.
    // Throws RedisError naming the seeds tried and the last cause.
    // `wait_timeout`: WAIT's own, shorter than an exchange's deadline.
    ClusterLinks(std::vector<session::common::RedisEndpoint> seeds, Open open, Metrics* metrics,
                 std::chrono::milliseconds wait_timeout);

    // The commands, routed; one reply per command, in their order. Error
    // replies are returned (a redirection still there after its one retry
    // among them); a connection failure throws and leaves this broken.
    std::vector<RedisReplyPtr> exchange(const RedisConn::Commands& commands);

    bool broken() const { return broken_; }

  private:
    using Endpoint = session::common::RedisEndpoint;
    // One node's share of a round: groups, each sent after ASKING or not.
    struct Batch {
        Endpoint node;
        std::vector<std::pair<std::size_t, bool>> groups;  // (group index, asking)
    };

    struct Link {
        std::unique_ptr<RedisConn> conn;
        bool wait = false;  // the node had replicas when connected (ROLE)
    };
    Link& link(const Endpoint& node);
    // From `first` when given (the node a MOVED named), then the nodes
    // connected, then the seeds; the first valid map wins.
    void refresh_map(const std::optional<Endpoint>& first);
    const Endpoint& node_for(int slot);
    void send(const RedisConn::Commands& commands, const std::vector<CommandGroup>& groups,
              std::map<std::string, Batch>& batches, std::vector<RedisReplyPtr>& replies);

    std::vector<Endpoint> seeds_;
    Open open_;
    Metrics* metrics_;
    std::chrono::milliseconds wait_timeout_;
    session::common::SlotMap map_;
    // host:port -> its connection; a node left out of the map keeps its
    // connection until this object goes (the projector renews it often).
    std::map<std::string, Link> links_;
    bool broken_ = false;
};

}  // namespace syncd
