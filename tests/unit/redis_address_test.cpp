#include "common/redis_address.hpp"

#include <gtest/gtest.h>

namespace session::common {
namespace {

RedisAddress parse_ok(std::string_view text) {
    std::string error;
    auto a = parse_redis_address(text, error);
    EXPECT_TRUE(a.has_value()) << text << ": " << error;
    EXPECT_EQ(error, "");
    return a.value_or(RedisAddress{});
}

std::string parse_error(std::string_view text) {
    std::string error;
    auto a = parse_redis_address(text, error);
    EXPECT_FALSE(a.has_value()) << text;
    EXPECT_NE(error, "") << text;
    return error;
}

TEST(RedisAddress, ShortForms) {
    RedisAddress a = parse_ok("127.0.0.1:6380");
    EXPECT_EQ(a.topology, RedisTopology::standalone);
    EXPECT_FALSE(a.tls);
    ASSERT_EQ(a.endpoints.size(), 1u);
    EXPECT_EQ(a.endpoints[0].host, "127.0.0.1");
    EXPECT_EQ(a.endpoints[0].port, 6380);
    EXPECT_EQ(a.db, -1);
    EXPECT_EQ(a.redacted(), "redis://127.0.0.1:6380");

    a = parse_ok("[::1]:7000");
    EXPECT_EQ(a.endpoints[0].host, "::1");
    EXPECT_EQ(a.endpoints[0].text(), "[::1]:7000");

    a = parse_ok("redis.internal:6379");
    EXPECT_EQ(a.endpoints[0].host, "redis.internal");

    for (std::string_view text : {"unix:/run/redis.sock", "unix:///run/redis.sock"}) {
        a = parse_ok(text);
        ASSERT_EQ(a.endpoints.size(), 1u);
        EXPECT_TRUE(a.endpoints[0].is_unix());
        EXPECT_EQ(a.endpoints[0].unix_path, "/run/redis.sock");
        EXPECT_EQ(a.redacted(), "unix:/run/redis.sock");
    }
}

TEST(RedisAddress, RedisUrls) {
    RedisAddress a = parse_ok("redis://h:1/2");
    EXPECT_EQ(a.endpoints[0].host, "h");
    EXPECT_EQ(a.endpoints[0].port, 1);
    EXPECT_EQ(a.db, 2);
    EXPECT_TRUE(a.user.empty());
    EXPECT_TRUE(a.password.empty());

    a = parse_ok("redis://cache.internal");
    EXPECT_EQ(a.endpoints[0].port, kRedisDefaultPort);

    a = parse_ok("rediss://app:s3cr%40t@redis.example.com:6380/0");
    EXPECT_TRUE(a.tls);
    EXPECT_EQ(a.user, "app");
    EXPECT_EQ(a.password, "s3cr@t");
    EXPECT_EQ(a.db, 0);
    EXPECT_EQ(a.redacted(), "rediss://app@redis.example.com:6380/0");

    // No user: AUTH <password> for the default user. An unencoded '@' in
    // the password: the credentials end at the last one.
    a = parse_ok("redis://:p@ss@10.0.0.1:6379");
    EXPECT_EQ(a.user, "");
    EXPECT_EQ(a.password, "p@ss");
    EXPECT_EQ(a.redacted().find("p@ss"), std::string::npos);
}

TEST(RedisAddress, Sentinel) {
    RedisAddress a = parse_ok("sentinel://u:pw@10.0.0.1,10.0.0.2:26380,[::1]/mymaster/3");
    EXPECT_EQ(a.topology, RedisTopology::sentinel);
    ASSERT_EQ(a.endpoints.size(), 3u);
    EXPECT_EQ(a.endpoints[0].port, kSentinelDefaultPort);
    EXPECT_EQ(a.endpoints[1].port, 26380);
    EXPECT_EQ(a.endpoints[2].host, "::1");
    EXPECT_EQ(a.master_name, "mymaster");
    EXPECT_EQ(a.db, 3);
    EXPECT_EQ(a.user, "u");
    EXPECT_EQ(a.redacted(), "sentinel://u@10.0.0.1:26379,10.0.0.2:26380,[::1]:26379/mymaster/3");

    a = parse_ok("sentinel://h1:26379/primary");
    EXPECT_EQ(a.db, -1);
    EXPECT_EQ(a.master_name, "primary");
    EXPECT_NE(parse_error("sentinel://h1:26379").find("primary's name"), std::string::npos);
    EXPECT_NE(parse_error("sentinel://h1:26379/").find("primary's name"), std::string::npos);
}

TEST(RedisAddress, Cluster) {
    RedisAddress a = parse_ok("cluster://n1:7000,n2:7001,n3");
    EXPECT_EQ(a.topology, RedisTopology::cluster);
    ASSERT_EQ(a.endpoints.size(), 3u);
    EXPECT_EQ(a.endpoints[2].port, kRedisDefaultPort);
    EXPECT_EQ(a.redacted(), "cluster://n1:7000,n2:7001,n3:6379");
    EXPECT_NE(parse_error("cluster://n1:7000/1").find("database"), std::string::npos);
}

TEST(RedisAddress, ErrorsNameTheProblemNeverThePassword) {
    EXPECT_NE(parse_error("").find("empty"), std::string::npos);
    EXPECT_NE(parse_error("localhost").find("host:port"), std::string::npos);
    EXPECT_NE(parse_error("http://h:1").find("unknown scheme"), std::string::npos);
    EXPECT_NE(parse_error("unix:relative.sock").find("absolute"), std::string::npos);
    EXPECT_NE(parse_error("redis://h:0").find("invalid port"), std::string::npos);
    EXPECT_NE(parse_error("redis://h:65536").find("invalid port"), std::string::npos);
    EXPECT_NE(parse_error("redis://h:1/x").find("database"), std::string::npos);
    EXPECT_NE(parse_error("redis://h1:1,h2:2").find("one host"), std::string::npos);
    EXPECT_NE(parse_error("sentinel://h1,,h2/m").find("missing"), std::string::npos);
    EXPECT_NE(parse_error("::1:6379").find("brackets"), std::string::npos);
    EXPECT_NE(parse_error("[::1:6379").find("]"), std::string::npos);
    EXPECT_NE(parse_error("redis://h:1\n").find("control"), std::string::npos);
    EXPECT_NE(parse_error("redis://h!:1").find("invalid host"), std::string::npos);

    // No '@': the password reads as a host; it is not echoed.
    std::string e = parse_error("redis://:s3cret:host:1");
    EXPECT_EQ(e.find("s3cret"), std::string::npos) << e;
    EXPECT_NE(e.find("host 1"), std::string::npos) << e;
    e = parse_error("s3cret@redis://h:1");
    EXPECT_EQ(e.find("s3cret"), std::string::npos) << e;
    e = parse_error("sentinel://h1,s3cret!/m");
    EXPECT_EQ(e.find("s3cret"), std::string::npos) << e;
    EXPECT_NE(e.find("host 2: invalid host"), std::string::npos) << e;

    e = parse_error("redis://user:topsecret%zz@h:1");
    EXPECT_NE(e.find("percent"), std::string::npos);
    EXPECT_EQ(e.find("topsecret"), std::string::npos);
    e = parse_error("redis://nocolon@h:1");
    EXPECT_NE(e.find("credentials"), std::string::npos);
    EXPECT_EQ(e.find("nocolon"), std::string::npos);
    EXPECT_NE(parse_error("redis://user:@h:1").find("password is empty"), std::string::npos);
}

}  // namespace
}  // namespace session::common
