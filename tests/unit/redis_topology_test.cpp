#include "common/redis_topology.hpp"

#include <hiredis/hiredis.h>

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

// The RESP texts below were captured from real Redis 7.0.15 servers
// (Debian 12's redis-server) by sending the command over a socket and
// recording the bytes of the reply: a cluster of three primaries and
// three replicas made with `redis-cli --cluster create --cluster-replicas 1`
// (then slot 12182 moved to the first primary, slot 866 left migrating),
// a single cluster node with cluster-announce-hostname set, and a primary,
// a replica and a sentinel (`SENTINEL FAILOVER` for +switch-master). They
// are decoded here with hiredis's redisReader, as the I/O layers do.

namespace session::common {
namespace {

struct ReplyFree {
    void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;

ReplyPtr decode(std::string_view resp) {
    std::unique_ptr<redisReader, void (*)(redisReader*)> reader(redisReaderCreate(),
                                                                &redisReaderFree);
    EXPECT_EQ(redisReaderFeed(reader.get(), resp.data(), resp.size()), REDIS_OK);
    void* reply = nullptr;
    EXPECT_EQ(redisReaderGetReply(reader.get(), &reply), REDIS_OK);
    EXPECT_NE(reply, nullptr) << "incomplete RESP in the test";
    void* extra = nullptr;
    EXPECT_EQ(redisReaderGetReply(reader.get(), &extra), REDIS_OK);
    EXPECT_EQ(extra, nullptr) << "more than one reply in the test's RESP";
    if (extra != nullptr) freeReplyObject(extra);
    return ReplyPtr(static_cast<redisReply*>(reply));
}

std::string_view error_text(const ReplyPtr& r) {
    EXPECT_EQ(r->type, REDIS_REPLY_ERROR);
    return std::string_view(r->str, r->len);
}

// ---- key_slot --------------------------------------------------------------

TEST(RedisTopologyKeySlot, MatchesRedisClusterKeyslot) {
    // (key, CLUSTER KEYSLOT key) from a cluster-enabled redis-server 7.0.15
    // started by hand with `redis-server --cluster-enabled yes --port <free>`.
    const std::vector<std::pair<std::string, int>> oracle = {
        {"", 0},
        {"123456789", 12739},  // 0x31C3, the check value of Appendix A
        {"foo", 12182},
        {"bar", 5061},
        {"hello", 866},
        {"a", 15495},
        {"sess:abc123", 3217},
        {"user:user_2abc", 2883},
        {std::string("\x00\xff", 2), 7920},
        {std::string(200, 'x'), 9756},
        {"\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87", 10303},  // UTF-8 bytes, hashed as bytes
        // Hash tags: the first '{', the first '}' after it, non-empty between.
        {"{}", 15257},                   // empty tag: the whole key
        {"{user1000}.following", 3443},  // = "user1000"
        {"{user1000}.followers", 3443},
        {"user1000", 3443},
        {"foo{}{bar}", 8363},      // the first tag is empty: the whole key
        {"foo{{bar}}zap", 4015},   // tag "{bar"
        {"{{bar}}", 4015},         // tag "{bar"
        {"{bar", 4015},            // no '}': the whole key, "{bar"
        {"foo{bar}{zap}", 5061},   // tag "bar", the first one
        {"{bar}zap", 5061},        // tag "bar"
        {"bar}", 6624},            // no '{': the whole key
        {"{}bar", 6479},           // empty tag: the whole key
        {"foo{}", 5542},           // empty tag: the whole key
        {"{a}{b}", 15495},         // tag "a"
        {"}{a}", 15495},           // a '}' before the '{' does not count
        {"{{}}", 4092},            // tag "{"
        {"{", 4092},               // no '}': the whole key
        {"}", 12090},              //
        {"{{", 7007},              //
        {"a{b}c{d}", 3300},        // tag "b"
        {"\xff\xfe{\xff}", 7920},  // tag "\xff": CRC16 ignores a leading zero byte
    };
    for (const auto& [key, slot] : oracle) {
        EXPECT_EQ(key_slot(key), slot) << "key \"" << key << "\"";
    }
}

TEST(RedisTopologyKeySlot, AlwaysBelowSlotCount) {
    std::string key;
    for (int i = 0; i < 2000; ++i) {
        key.push_back(static_cast<char>(i * 7));
        EXPECT_LT(key_slot(key), kClusterSlots);
    }
}

// ---- SlotMap ---------------------------------------------------------------

// Three primaries (45523, 44355, 38463), replicas 43897 and 49487 (44355's
// replica had not joined yet), slot 12182 moved from 38463 to 45523.
constexpr std::string_view kClusterSlotsReply =
    "*5\r\n"
    "*4\r\n:0\r\n:5460\r\n"
    "*4\r\n$9\r\n127.0.0.1\r\n:45523\r\n$40\r\n3af952e156b0ac24747005636f36ed563460df55\r\n*0\r\n"
    "*4\r\n$9\r\n127.0.0.1\r\n:43897\r\n$40\r\n30f3eb22f33a14d2a29d8aac2c291ffe69693b21\r\n*0\r\n"
    "*3\r\n:5461\r\n:10922\r\n"
    "*4\r\n$9\r\n127.0.0.1\r\n:44355\r\n$40\r\n28cf5805b6fe6e5a94e3a1239c9a8e8f2fc28771\r\n*0\r\n"
    "*4\r\n:10923\r\n:12181\r\n"
    "*4\r\n$9\r\n127.0.0.1\r\n:38463\r\n$40\r\n458dbedbfd3fe3b8d5374836ae8fa0bc493c8c45\r\n*0\r\n"
    "*4\r\n$9\r\n127.0.0.1\r\n:49487\r\n$40\r\ne51f3a7ab292226e453470c7a123a185bead7dc2\r\n*0\r\n"
    "*4\r\n:12182\r\n:12182\r\n"
    "*4\r\n$9\r\n127.0.0.1\r\n:45523\r\n$40\r\n3af952e156b0ac24747005636f36ed563460df55\r\n*0\r\n"
    "*4\r\n$9\r\n127.0.0.1\r\n:43897\r\n$40\r\n30f3eb22f33a14d2a29d8aac2c291ffe69693b21\r\n*0\r\n"
    "*4\r\n:12183\r\n:16383\r\n"
    "*4\r\n$9\r\n127.0.0.1\r\n:38463\r\n$40\r\n458dbedbfd3fe3b8d5374836ae8fa0bc493c8c45\r\n*0\r\n"
    "*4\r\n$9\r\n127.0.0.1\r\n:49487\r\n$40\r\ne51f3a7ab292226e453470c7a123a185bead7dc2\r\n*0\r\n";

std::optional<SlotMap> map_of(std::string_view resp, std::string_view fallback = "10.0.0.9") {
    ReplyPtr reply = decode(resp);
    std::string error = "stale";
    auto map = SlotMap::from_cluster_slots(*reply, fallback, error);
    EXPECT_TRUE(map.has_value()) << error;
    EXPECT_EQ(error, "");
    return map;
}

// "none" rather than a crash when a mistake leaves the slot unserved.
std::string primary_text(const SlotMap& map, std::uint16_t slot) {
    const RedisEndpoint* p = map.primary_for(slot);
    return p == nullptr ? "none" : p->text();
}

std::string map_error(std::string_view resp) {
    ReplyPtr reply = decode(resp);
    std::string error;
    auto map = SlotMap::from_cluster_slots(*reply, "10.0.0.9", error);
    EXPECT_FALSE(map.has_value()) << resp;
    EXPECT_NE(error, "") << resp;
    return error;
}

TEST(RedisTopologySlotMap, ThreePrimariesWithAMovedSlot) {
    auto map = map_of(kClusterSlotsReply);
    ASSERT_TRUE(map);
    ASSERT_EQ(map->primaries().size(), 3u);  // 45523 owns two ranges: listed once
    EXPECT_EQ(map->primaries()[0].text(), "127.0.0.1:45523");
    EXPECT_EQ(map->primaries()[1].text(), "127.0.0.1:44355");
    EXPECT_EQ(map->primaries()[2].text(), "127.0.0.1:38463");
    EXPECT_EQ(map->covered_slots(), kClusterSlots);

    struct Case {
        std::uint16_t slot;
        std::uint16_t port;
        int index;
    };
    for (Case c : std::vector<Case>{{0, 45523, 0},
                                    {5460, 45523, 0},
                                    {5461, 44355, 1},
                                    {10922, 44355, 1},
                                    {10923, 38463, 2},
                                    {12181, 38463, 2},
                                    {12182, 45523, 0},
                                    {12183, 38463, 2},
                                    {16383, 38463, 2}}) {
        const RedisEndpoint* p = map->primary_for(c.slot);
        ASSERT_NE(p, nullptr) << c.slot;
        EXPECT_EQ(p->host, "127.0.0.1");
        EXPECT_EQ(p->port, c.port) << c.slot;
        EXPECT_EQ(map->primary_index(c.slot), c.index) << c.slot;
    }
    // Replicas never serve: 43897 and 49487 are nowhere.
    for (const auto& p : map->primaries()) {
        EXPECT_NE(p.port, 43897);
        EXPECT_NE(p.port, 49487);
    }
    // The key the cluster answered MOVED 12182 for.
    EXPECT_EQ(primary_text(*map, key_slot("foo")), "127.0.0.1:45523");
    EXPECT_EQ(map->primary_for(16384), nullptr);
    EXPECT_EQ(map->primary_index(65535), -1);
}

TEST(RedisTopologySlotMap, DefaultAndEmpty) {
    SlotMap none;
    EXPECT_EQ(none.primary_for(0), nullptr);
    EXPECT_EQ(none.primary_index(0), -1);
    EXPECT_TRUE(none.primaries().empty());
    EXPECT_EQ(none.covered_slots(), 0u);

    // A cluster node with no slot assigned yet.
    auto map = map_of("*0\r\n");
    ASSERT_TRUE(map);
    EXPECT_TRUE(map->primaries().empty());
    EXPECT_EQ(map->covered_slots(), 0u);
    EXPECT_EQ(map->primary_for(100), nullptr);
}

TEST(RedisTopologySlotMap, PreferredEndpointForms) {
    // cluster-preferred-endpoint-type hostname: the hostname first, the
    // (unknown, "") ip in the metadata map, flattened to an array in RESP2.
    auto map = map_of(
        "*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$16\r\nredis-a.internal\r\n:46675\r\n"
        "$40\r\n3120336863d559bbb4e922c2c50fae8e1716df1e\r\n*2\r\n$2\r\nip\r\n$0\r\n\r\n");
    ASSERT_TRUE(map);
    EXPECT_EQ(primary_text(*map, 42), "redis-a.internal:46675");

    // ip, on a node that never met another: "" is the host we asked.
    map = map_of(
        "*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$0\r\n\r\n:46675\r\n"
        "$40\r\n3120336863d559bbb4e922c2c50fae8e1716df1e\r\n"
        "*2\r\n$8\r\nhostname\r\n$16\r\nredis-a.internal\r\n");
    ASSERT_TRUE(map);
    EXPECT_EQ(primary_text(*map, 42), "10.0.0.9:46675");

    // unknown-endpoint: nil is the host we asked, with the port given.
    map = map_of(
        "*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$-1\r\n:46675\r\n"
        "$40\r\n3120336863d559bbb4e922c2c50fae8e1716df1e\r\n"
        "*4\r\n$2\r\nip\r\n$0\r\n\r\n$8\r\nhostname\r\n$16\r\nredis-a.internal\r\n");
    ASSERT_TRUE(map);
    EXPECT_EQ(primary_text(*map, 16383), "10.0.0.9:46675");

    // ... and with no host to fall back on, the slots have no primary.
    map = map_of("*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$0\r\n\r\n:46675\r\n", "");
    ASSERT_TRUE(map);
    EXPECT_EQ(map->primary_for(0), nullptr);
    EXPECT_EQ(map->covered_slots(), 0u);

    // An IPv6 primary, and a two-element node as Redis 3.0 wrote it.
    map = map_of("*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$3\r\n::1\r\n:7000\r\n");
    ASSERT_TRUE(map);
    ASSERT_NE(map->primary_for(0), nullptr);
    EXPECT_EQ(map->primary_for(0)->host, "::1");
    EXPECT_EQ(primary_text(*map, 0), "[::1]:7000");
}

TEST(RedisTopologySlotMap, UnknownPrimariesAreSkipped) {
    // "?": hostname preferred but none announced; port 0: not known yet.
    auto map = map_of(
        "*3\r\n"
        "*3\r\n:0\r\n:99\r\n*3\r\n$1\r\n?\r\n:7000\r\n$2\r\nid\r\n"
        "*3\r\n:100\r\n:199\r\n*2\r\n$8\r\n10.0.0.1\r\n:0\r\n"
        "*3\r\n:200\r\n:16383\r\n*2\r\n$8\r\n10.0.0.2\r\n:7002\r\n");
    ASSERT_TRUE(map);
    ASSERT_EQ(map->primaries().size(), 1u);
    EXPECT_EQ(map->primary_for(0), nullptr);
    EXPECT_EQ(map->primary_for(150), nullptr);
    EXPECT_EQ(primary_text(*map, 200), "10.0.0.2:7002");
    EXPECT_EQ(map->covered_slots(), kClusterSlots - 200);
}

TEST(RedisTopologySlotMap, UncoveredSlots) {
    auto map = map_of("*1\r\n*3\r\n:10\r\n:19\r\n*2\r\n$8\r\n10.0.0.2\r\n:7002\r\n");
    ASSERT_TRUE(map);
    EXPECT_EQ(map->covered_slots(), 10u);
    EXPECT_EQ(map->primary_for(9), nullptr);
    EXPECT_NE(map->primary_for(10), nullptr);
    EXPECT_NE(map->primary_for(19), nullptr);
    EXPECT_EQ(map->primary_for(20), nullptr);
}

TEST(RedisTopologySlotMap, Malformed) {
    EXPECT_NE(map_error("-ERR This instance has cluster support disabled\r\n")
                  .find("ERR This instance has cluster support disabled"),
              std::string::npos);
    EXPECT_NE(map_error("$2\r\nok\r\n").find("not an array"), std::string::npos);
    EXPECT_NE(map_error("*-1\r\n").find("not an array"), std::string::npos);
    EXPECT_NE(map_error("*1\r\n:5\r\n").find("entry 1"), std::string::npos);
    EXPECT_NE(map_error("*1\r\n*2\r\n:0\r\n:5\r\n").find("entry 1"), std::string::npos);

    const std::string node = "*2\r\n$8\r\n10.0.0.2\r\n:7002\r\n";
    auto range = [&](std::string_view start, std::string_view end) {
        return "*1\r\n*3\r\n" + std::string(start) + std::string(end) + node;
    };
    EXPECT_NE(map_error(range(":5\r\n", ":4\r\n")).find("slot range"), std::string::npos);
    EXPECT_NE(map_error(range(":0\r\n", ":16384\r\n")).find("slot range"), std::string::npos);
    EXPECT_NE(map_error(range(":-1\r\n", ":5\r\n")).find("slot range"), std::string::npos);
    EXPECT_NE(map_error(range("$1\r\n0\r\n", ":5\r\n")).find("slot range"), std::string::npos);

    auto with_node = [](std::string_view n) { return "*1\r\n*3\r\n:0\r\n:5\r\n" + std::string(n); };
    EXPECT_NE(map_error(with_node("$8\r\n10.0.0.2\r\n")).find("primary"), std::string::npos);
    EXPECT_NE(map_error(with_node("*1\r\n$8\r\n10.0.0.2\r\n")).find("primary"), std::string::npos);
    EXPECT_NE(map_error(with_node("*2\r\n$8\r\n10.0.0.2\r\n:70000\r\n")).find("port"),
              std::string::npos);
    EXPECT_NE(map_error(with_node("*2\r\n$8\r\n10.0.0.2\r\n:-1\r\n")).find("port"),
              std::string::npos);
    EXPECT_NE(map_error(with_node("*2\r\n:1\r\n:7000\r\n")).find("host"), std::string::npos);
    // The host is not echoed: it could carry a newline into a log line.
    EXPECT_EQ(map_error(with_node("*2\r\n$5\r\na b c\r\n:7000\r\n")),
              "CLUSTER SLOTS entry 1: the primary's host is not a valid host name or address");
    EXPECT_EQ(map_error(with_node("*2\r\n$3\r\na\nb\r\n:7000\r\n")),
              "CLUSTER SLOTS entry 1: the primary's host is not a valid host name or address");

    // Two ranges that claim the same slot, known or not.
    EXPECT_NE(map_error("*2\r\n*3\r\n:0\r\n:10\r\n" + node + "*3\r\n:10\r\n:20\r\n" + node)
                  .find("slot 10 is listed twice"),
              std::string::npos);
    EXPECT_NE(map_error("*2\r\n*3\r\n:0\r\n:10\r\n*2\r\n$1\r\n?\r\n:1\r\n*3\r\n:5\r\n:5\r\n" + node)
                  .find("slot 5 is listed twice"),
              std::string::npos);
}

// ---- parse_redirect --------------------------------------------------------

TEST(RedisTopologyRedirect, RealReplies) {
    ReplyPtr moved = decode("-MOVED 12182 127.0.0.1:38463\r\n");
    auto r = parse_redirect(error_text(moved));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->kind, RedirectKind::moved);
    EXPECT_EQ(r->slot, 12182);
    EXPECT_TRUE(r->has_endpoint());
    EXPECT_EQ(r->endpoint.host, "127.0.0.1");
    EXPECT_EQ(r->endpoint.port, 38463);
    EXPECT_EQ(r->slot, key_slot("foo"));

    ReplyPtr ask = decode("-ASK 866 127.0.0.1:44355\r\n");
    r = parse_redirect(error_text(ask));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->kind, RedirectKind::ask);
    EXPECT_EQ(r->slot, 866);
    EXPECT_EQ(r->endpoint.text(), "127.0.0.1:44355");
}

TEST(RedisTopologyRedirect, HostForms) {
    auto r = parse_redirect("MOVED 3999 ::1:6381");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->endpoint.host, "::1");
    EXPECT_EQ(r->endpoint.port, 6381);

    r = parse_redirect("ASK 3999 [::1]:6381");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->endpoint.host, "::1");
    EXPECT_EQ(r->endpoint.port, 6381);

    r = parse_redirect("MOVED 0 2001:db8::7:16383");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->slot, 0);
    EXPECT_EQ(r->endpoint.host, "2001:db8::7");
    EXPECT_EQ(r->endpoint.port, 16383);

    r = parse_redirect("MOVED 16383 redis-b.internal:6379");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->slot, 16383);
    EXPECT_EQ(r->endpoint.text(), "redis-b.internal:6379");

    // unknown-endpoint: the host the error came from.
    r = parse_redirect("MOVED 5 :6381", "10.0.0.9");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->endpoint.text(), "10.0.0.9:6381");
}

TEST(RedisTopologyRedirect, UnknownNode) {
    // Still a redirection (refresh the map), but nowhere to go.
    for (std::string_view text :
         {"MOVED 5 ?:6381", "MOVED 5 :6381", "ASK 5 10.0.0.1:0", "MOVED 5 a\x01:6381"}) {
        auto r = parse_redirect(text);
        ASSERT_TRUE(r) << text;
        EXPECT_FALSE(r->has_endpoint()) << text;
        EXPECT_EQ(r->slot, 5);
    }
    auto r = parse_redirect("MOVED 5 ?:6381", "10.0.0.9");  // "?" is not ""
    ASSERT_TRUE(r);
    EXPECT_FALSE(r->has_endpoint());
}

TEST(RedisTopologyRedirect, NotRedirections) {
    for (std::string_view text : {
             "",
             "MOVED",
             "MOVED 3999",
             "MOVED 3999 ",
             "-MOVED 3999 127.0.0.1:6381",  // hiredis strips the '-'
             "moved 3999 127.0.0.1:6381",
             "MOVED  3999 127.0.0.1:6381",
             "MOVED 3999 127.0.0.1:6381 ",
             "MOVED 3999 127.0.0.1:6381 extra",
             "MOVED 16384 127.0.0.1:6381",
             "MOVED -1 127.0.0.1:6381",
             "MOVED 0x10 127.0.0.1:6381",
             "MOVED 3999 127.0.0.1",
             "MOVED 3999 127.0.0.1:",
             "MOVED 3999 127.0.0.1:65536",
             "MOVED 3999 127.0.0.1:63a",
             "MOVED 3999 [::1]6381",
             "MOVED 3999 [::1:6381",
             "ASKING 3999 127.0.0.1:6381",
             "ERR unknown command",
             "READONLY You can't write against a read only replica.",
         }) {
        EXPECT_FALSE(parse_redirect(text)) << text;
    }
}

// ---- Sentinel --------------------------------------------------------------

TEST(RedisTopologySentinel, MasterAddr) {
    ReplyPtr reply = decode("*2\r\n$9\r\n127.0.0.1\r\n$5\r\n46529\r\n");
    std::string error = "stale";
    auto ep = parse_master_addr(*reply, "mymaster", error);
    ASSERT_TRUE(ep) << error;
    EXPECT_EQ(error, "");
    EXPECT_EQ(ep->text(), "127.0.0.1:46529");

    reply = decode("*2\r\n$3\r\n::1\r\n$4\r\n6379\r\n");
    ep = parse_master_addr(*reply, "mymaster", error);
    ASSERT_TRUE(ep) << error;
    EXPECT_EQ(ep->text(), "[::1]:6379");
}

TEST(RedisTopologySentinel, MasterAddrUnknownName) {
    ReplyPtr reply = decode("*-1\r\n");  // what the sentinel answered for "nosuch"
    std::string error;
    EXPECT_FALSE(parse_master_addr(*reply, "nosuch", error));
    EXPECT_EQ(error, "the sentinel does not monitor a primary named \"nosuch\"");
}

TEST(RedisTopologySentinel, MasterAddrMalformed) {
    for (std::string_view resp : {
             "-NOAUTH Authentication required.\r\n",
             "+OK\r\n",
             ":1\r\n",
             "*0\r\n",
             "*1\r\n$9\r\n127.0.0.1\r\n",
             "*3\r\n$9\r\n127.0.0.1\r\n$4\r\n6379\r\n$1\r\nx\r\n",
             "*2\r\n$9\r\n127.0.0.1\r\n:6379\r\n",  // port as an integer: not this reply
             "*2\r\n$9\r\n127.0.0.1\r\n$1\r\n0\r\n",
             "*2\r\n$9\r\n127.0.0.1\r\n$5\r\n65536\r\n",
             "*2\r\n$9\r\n127.0.0.1\r\n$0\r\n\r\n",
             "*2\r\n$0\r\n\r\n$4\r\n6379\r\n",
             "*2\r\n$3\r\na b\r\n$4\r\n6379\r\n",
             "*2\r\n$-1\r\n$4\r\n6379\r\n",
         }) {
        ReplyPtr reply = decode(resp);
        std::string error;
        EXPECT_FALSE(parse_master_addr(*reply, "mymaster", error)) << resp;
        EXPECT_NE(error, "") << resp;
    }
    ReplyPtr reply = decode("-NOAUTH Authentication required.\r\n");
    std::string error;
    parse_master_addr(*reply, "mymaster", error);
    EXPECT_NE(error.find("NOAUTH Authentication required."), std::string::npos) << error;
}

TEST(RedisTopologySentinel, RoleOfEachKind) {
    std::string error = "stale";
    ReplyPtr reply = decode(
        "*3\r\n$6\r\nmaster\r\n:439\r\n*1\r\n*3\r\n$9\r\n127.0.0.1\r\n$5\r\n38359\r\n$"
        "3\r\n439\r\n");
    auto role = parse_role(*reply, error);
    ASSERT_TRUE(role) << error;
    EXPECT_EQ(error, "");
    EXPECT_EQ(role->role, RedisRole::master);
    EXPECT_TRUE(role->primary.host.empty());

    reply = decode("*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n");
    role = parse_role(*reply, error);
    ASSERT_TRUE(role) << error;
    EXPECT_EQ(role->role, RedisRole::master);

    reply = decode("*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:46529\r\n$9\r\nconnected\r\n:305\r\n");
    role = parse_role(*reply, error);
    ASSERT_TRUE(role) << error;
    EXPECT_EQ(role->role, RedisRole::replica);
    EXPECT_EQ(role->primary.text(), "127.0.0.1:46529");
    EXPECT_EQ(role->link_state, "connected");

    // Just restarted as a replica: handshake, offset -1.
    reply = decode("*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:46529\r\n$9\r\nhandshake\r\n:-1\r\n");
    role = parse_role(*reply, error);
    ASSERT_TRUE(role) << error;
    EXPECT_EQ(role->role, RedisRole::replica);
    EXPECT_EQ(role->link_state, "handshake");

    reply = decode("*2\r\n$8\r\nsentinel\r\n*1\r\n$8\r\nmymaster\r\n");
    role = parse_role(*reply, error);
    ASSERT_TRUE(role) << error;
    EXPECT_EQ(role->role, RedisRole::sentinel);
}

TEST(RedisTopologySentinel, RoleMalformed) {
    for (std::string_view resp : {
             "-NOPERM this user has no permissions to run the 'role' command\r\n",
             "+OK\r\n",
             "*0\r\n",
             "*-1\r\n",
             "*1\r\n:1\r\n",
             "*1\r\n$7\r\nprimary\r\n",
             "*1\r\n$6\r\nMASTER\r\n",
             "*1\r\n$5\r\nslave\r\n",
             "*4\r\n$5\r\nslave\r\n:1\r\n:6379\r\n$9\r\nconnected\r\n",
             "*4\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:70000\r\n$9\r\nconnected\r\n",
             "*4\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n:1\r\n",
             "*4\r\n$5\r\nslave\r\n$0\r\n\r\n:6379\r\n$9\r\nconnected\r\n",
         }) {
        ReplyPtr reply = decode(resp);
        std::string error;
        EXPECT_FALSE(parse_role(*reply, error)) << resp;
        EXPECT_NE(error, "") << resp;
    }
    ReplyPtr reply = decode("*1\r\n$7\r\nprimary\r\n");
    std::string error;
    parse_role(*reply, error);
    EXPECT_EQ(error, "ROLE answered an unknown role \"primary\"");
}

TEST(RedisTopologySentinel, SwitchMaster) {
    // The message as a sentinel published it during SENTINEL FAILOVER.
    ReplyPtr msg = decode(
        "*3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n"
        "$40\r\nmymaster 127.0.0.1 38359 127.0.0.1 46529\r\n");
    ASSERT_EQ(msg->type, REDIS_REPLY_ARRAY);
    ASSERT_EQ(msg->elements, 3u);
    const redisReply* payload = msg->element[2];
    std::string error = "stale";
    auto sw = parse_switch_master(std::string_view(payload->str, payload->len), error);
    ASSERT_TRUE(sw) << error;
    EXPECT_EQ(error, "");
    EXPECT_EQ(sw->master_name, "mymaster");
    EXPECT_EQ(sw->old_primary.text(), "127.0.0.1:38359");
    EXPECT_EQ(sw->new_primary.text(), "127.0.0.1:46529");

    sw = parse_switch_master("cache ::1 6379 2001:db8::2 6380", error);
    ASSERT_TRUE(sw) << error;
    EXPECT_EQ(sw->new_primary.host, "2001:db8::2");
    EXPECT_EQ(sw->new_primary.port, 6380);
}

TEST(RedisTopologySentinel, SwitchMasterMalformed) {
    for (std::string_view payload : {
             "",
             "mymaster",
             "mymaster 127.0.0.1 38359 127.0.0.1",
             "mymaster 127.0.0.1 38359 127.0.0.1 46529 extra",
             "mymaster  127.0.0.1 38359 127.0.0.1 46529",
             "mymaster 127.0.0.1 38359 127.0.0.1 46529 ",
             " mymaster 127.0.0.1 38359 127.0.0.1 46529",
             "mymaster 127.0.0.1 38359 127.0.0.1 0",
             "mymaster 127.0.0.1 38359 127.0.0.1 65536",
             "mymaster 127.0.0.1 x 127.0.0.1 46529",
             "mymaster 127.0.0.1 38359 127.0.0.1 -1",
             "mymaster 127.0.0.1 38359 [::1] 46529",
             "mymaster 127.0.0.1 38359 127.0.0.1\t46529",
         }) {
        std::string error;
        EXPECT_FALSE(parse_switch_master(payload, error)) << payload;
        EXPECT_NE(error, "") << payload;
    }
}

// ---- SentinelRotation ------------------------------------------------------

std::vector<RedisEndpoint> sentinels(std::initializer_list<std::uint16_t> ports) {
    std::vector<RedisEndpoint> out;
    for (std::uint16_t port : ports) {
        RedisEndpoint ep;
        ep.host = "10.0.0.1";
        ep.port = port;
        out.push_back(ep);
    }
    return out;
}

std::vector<std::uint16_t> ports_of(const SentinelRotation& r) {
    std::vector<std::uint16_t> out;
    for (const auto& ep : r.order()) out.push_back(ep.port);
    return out;
}

TEST(RedisTopologyRotation, StartsAtTheFirstAndMovesOnFailure) {
    SentinelRotation r(sentinels({1, 2, 3}));
    EXPECT_EQ(r.size(), 3u);
    EXPECT_FALSE(r.exhausted());
    EXPECT_EQ(r.current().port, 1);
    r.failed();
    EXPECT_EQ(r.current().port, 2);
    EXPECT_FALSE(r.exhausted());
    r.failed();
    EXPECT_EQ(r.current().port, 3);
    EXPECT_FALSE(r.exhausted());
    r.failed();
    EXPECT_TRUE(r.exhausted());  // all three failed in this round
    EXPECT_EQ(r.current().port, 1);
    EXPECT_EQ(ports_of(r), (std::vector<std::uint16_t>{1, 2, 3}));  // failures reorder nothing
    r.new_round();
    EXPECT_FALSE(r.exhausted());
    EXPECT_EQ(r.current().port, 1);
}

TEST(RedisTopologyRotation, TheOneThatAnsweredGoesToTheFront) {
    SentinelRotation r(sentinels({1, 2, 3, 4}));
    r.failed();
    r.failed();
    EXPECT_EQ(r.current().port, 3);
    r.succeeded();
    EXPECT_EQ(ports_of(r), (std::vector<std::uint16_t>{3, 1, 2, 4}));
    EXPECT_EQ(r.current().port, 3);  // the next discovery starts with it
    EXPECT_FALSE(r.exhausted());

    // 3 fails later (its host died): 1 answers and leads from then on.
    r.failed();
    EXPECT_EQ(r.current().port, 1);
    r.succeeded();
    EXPECT_EQ(ports_of(r), (std::vector<std::uint16_t>{1, 3, 2, 4}));

    // Success at the front changes nothing.
    r.succeeded();
    EXPECT_EQ(ports_of(r), (std::vector<std::uint16_t>{1, 3, 2, 4}));

    // The last one, after a wrap-around.
    r.failed();
    r.failed();
    r.failed();
    EXPECT_EQ(r.current().port, 4);
    r.succeeded();
    EXPECT_EQ(ports_of(r), (std::vector<std::uint16_t>{4, 1, 3, 2}));
}

TEST(RedisTopologyRotation, SuccessResetsTheFailureCount) {
    SentinelRotation r(sentinels({1, 2}));
    r.failed();
    r.succeeded();
    r.failed();
    EXPECT_FALSE(r.exhausted());
    r.failed();
    EXPECT_TRUE(r.exhausted());
}

TEST(RedisTopologyRotation, EmptyAndSingle) {
    SentinelRotation none;
    EXPECT_EQ(none.size(), 0u);
    EXPECT_TRUE(none.exhausted());
    none.failed();  // no-ops, no crash
    none.succeeded();
    none.new_round();
    EXPECT_TRUE(none.exhausted());

    SentinelRotation one(sentinels({7}));
    EXPECT_EQ(one.current().port, 7);
    one.failed();
    EXPECT_TRUE(one.exhausted());
    EXPECT_EQ(one.current().port, 7);
    one.succeeded();
    EXPECT_FALSE(one.exhausted());
}

// ---- Error replies ---------------------------------------------------------

TEST(RedisTopologyErrors, ReadOnly) {
    // A write sent to a replica, and a script's write (Redis 7 keeps the code).
    ReplyPtr plain = decode("-READONLY You can't write against a read only replica.\r\n");
    ReplyPtr script = decode(
        "-READONLY You can't write against a read only replica. script: "
        "ff967d0ae0e68b4f9e360fa91c54598bc25ad9b6, on @user_script:1.\r\n");
    EXPECT_TRUE(is_readonly_error(error_text(plain)));
    EXPECT_TRUE(is_readonly_error(error_text(script)));
    EXPECT_EQ(error_code(error_text(plain)), "READONLY");
    EXPECT_FALSE(is_retry_later_error(error_text(plain)));
    // Redis 6 and older wrapped a script's error in ERR.
    EXPECT_TRUE(is_readonly_error(
        "ERR Error running script (call to f_ff967d0ae0e68b4f9e360fa91c54598bc25ad9b6): "
        "@user_script:1: @user_script: 1: -READONLY You can't write against a read only "
        "replica. "));
    EXPECT_TRUE(is_readonly_error("READONLY"));

    for (std::string_view text :
         {"", "READONLYX", "readonly You can't", "ERR READONLY", "ERR wrong number of arguments",
          "MOVED 1 h:1", "LOADING Redis is loading the dataset in memory"}) {
        EXPECT_FALSE(is_readonly_error(text)) << text;
    }
}

TEST(RedisTopologyErrors, RetryLater) {
    ReplyPtr masterdown = decode(
        "-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.\r\n");
    EXPECT_TRUE(is_retry_later_error(error_text(masterdown)));
    for (std::string_view text :
         {"LOADING Redis is loading the dataset in memory",
          "TRYAGAIN Multiple keys request during rehashing of slot",
          "CLUSTERDOWN The cluster is down", "CLUSTERDOWN Hash slot not served", "LOADING"}) {
        EXPECT_TRUE(is_retry_later_error(text)) << text;
        EXPECT_FALSE(is_readonly_error(text)) << text;
    }
    for (std::string_view text : {"", "ERR LOADING", "LOADINGX", "loading", "MOVED 1 h:1",
                                  "NOAUTH Authentication required.",
                                  "READONLY You can't write against a read only replica."}) {
        EXPECT_FALSE(is_retry_later_error(text)) << text;
    }
    EXPECT_EQ(error_code("ERR"), "ERR");
    EXPECT_EQ(error_code(""), "");
}

}  // namespace
}  // namespace session::common
