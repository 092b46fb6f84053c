// How syncd's pipelines are cut for Redis Cluster (daemon/redis_cluster.hpp):
// each command or transaction goes to its key's slot, none spans two.
#include <gtest/gtest.h>

#include "common/redis_topology.hpp"
#include "daemon/redis.hpp"
#include "daemon/redis_cluster.hpp"

namespace syncd {
namespace {

using session::common::key_slot;

TEST(RedisCluster, RoutingKey) {
    EXPECT_EQ(routing_key({"HSET", "user:1", "f", "v"}).value(), "user:1");
    EXPECT_EQ(routing_key({"EVAL", "return 1", "1", "sess:1", "arg"}).value(), "sess:1");
    EXPECT_EQ(routing_key({"evalsha", "abc", "1", "k"}).value(), "k");
    EXPECT_FALSE(routing_key({"EVAL", "return 1", "0"}));
    EXPECT_FALSE(routing_key({"PUBLISH", "session:revocations", "user u"}));
    EXPECT_FALSE(routing_key({"CONFIG", "GET", "maxmemory-policy"}));
    EXPECT_FALSE(routing_key({"MULTI"}));
    EXPECT_FALSE(routing_key({"EXEC"}));
}

TEST(RedisCluster, GroupsFollowTransactions) {
    RedisConn::Commands cmds = {
        {"MULTI"},
        {"DEL", "user:a"},
        {"HSET", "user:a", "f", "v"},
        {"EXEC"},
        {"EVAL", "return 1", "1", "sess:b"},
        {"PUBLISH", "session:revocations", "session b"},
        {"SREM", "user_sessions:a", "b"},
    };
    auto groups = group_by_slot(cmds);
    ASSERT_EQ(groups.size(), 4u);
    EXPECT_EQ(groups[0].first, 0u);
    EXPECT_EQ(groups[0].count, 4u);
    EXPECT_EQ(groups[0].slot, key_slot("user:a"));
    EXPECT_EQ(groups[1].first, 4u);
    EXPECT_EQ(groups[1].slot, key_slot("sess:b"));
    EXPECT_EQ(groups[2].slot, -1);  // any node
    EXPECT_EQ(groups[3].first, 6u);
    EXPECT_EQ(groups[3].slot, key_slot("user_sessions:a"));
}

TEST(RedisCluster, EveryProjectionWriteIsOneSlot) {
    // What apply() sends for each kind of key: one group, on the key's slot.
    KeyState hash;
    hash.key = "p:user:u1";
    hash.present = true;
    hash.fields = {{"status", "active"}};
    hash.ttl_seconds = 60;
    KeyState set;
    set.key = "p:user_sessions:u1";
    set.present = true;
    set.is_set = true;
    set.members = {"s1", "s2"};
    set.expire_at_ms = 1;
    KeyState session;
    session.key = "p:sess:s1";
    session.present = true;
    session.keep_newer_last_active = true;
    session.expire_at_ms = 1;
    session.fields = {{"user_id", "u1"}, {"last_active_at", "5"}};
    KeyState gone;
    gone.key = "p:sess:s2";
    for (const KeyState* state : {&hash, &set, &session, &gone}) {
        auto groups = group_by_slot(apply_commands(*state));
        ASSERT_EQ(groups.size(), 1u) << state->key;
        EXPECT_EQ(groups[0].slot, key_slot(state->key)) << state->key;
    }
}

TEST(RedisCluster, TransactionAcrossSlotsIsRefused) {
    ASSERT_NE(key_slot("user:a"), key_slot("user:b"));
    EXPECT_THROW(group_by_slot({{"MULTI"}, {"DEL", "user:a"}, {"DEL", "user:b"}, {"EXEC"}}),
                 RedisError);
    // A hash tag puts both in one slot.
    auto groups = group_by_slot({{"MULTI"}, {"DEL", "{u}a"}, {"DEL", "{u}b"}, {"EXEC"}});
    ASSERT_EQ(groups.size(), 1u);
    EXPECT_EQ(groups[0].slot, key_slot("u"));
}

}  // namespace
}  // namespace syncd
