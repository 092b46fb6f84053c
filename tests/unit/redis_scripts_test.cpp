// The Lua scripts against a real redis-server, started on a free loopback
// port for this test suite and killed after it. The synchronous hiredis
// client is fine here; the module itself only talks to Redis asynchronously.
#include "core/redis_scripts.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/record.hpp"

namespace session::core {
namespace {

using namespace std::string_literals;

constexpr const char* kRedisServer = "/usr/bin/redis-server";
constexpr std::int64_t kNow = 1'700'000'000'000;

struct ReplyDeleter {
    void operator()(redisReply* reply) const {
        if (reply != nullptr) freeReplyObject(reply);
    }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

struct ContextDeleter {
    void operator()(redisContext* context) const {
        if (context != nullptr) redisFree(context);
    }
};
using ContextPtr = std::unique_ptr<redisContext, ContextDeleter>;

// A port the kernel just handed out and nobody holds: bind port 0, read it
// back, close. Another process could grab it in between; start() retries.
int pick_free_port() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    socklen_t length = sizeof address;
    int port = -1;
    if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
        port = ntohs(address.sin_port);
    }
    close(fd);
    return port;
}

class RedisServer {
  public:
    // Empty on success, else why it failed.
    std::string start() {
        if (access(kRedisServer, X_OK) != 0) {
            return std::string(kRedisServer) + " is not installed (make deps)";
        }
        std::string last_error;
        for (int attempt = 0; attempt < 5; ++attempt) {
            port_ = pick_free_port();
            if (port_ <= 0) return "cannot pick a free port";
            pid_ = spawn(port_);
            if (pid_ <= 0) return "fork failed";
            last_error = wait_until_ready();
            if (last_error.empty()) return {};
            stop();
        }
        return last_error;
    }

    void stop() {
        if (pid_ <= 0) return;
        kill(pid_, SIGTERM);
        for (int i = 0; i < 500; ++i) {
            if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
                pid_ = -1;
                return;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }

    ContextPtr connect() const {
        const timeval timeout{5, 0};
        return ContextPtr(redisConnectWithTimeout("127.0.0.1", port_, timeout));
    }

  private:
    static pid_t spawn(int port) {
        const std::string port_text = std::to_string(port);
        const pid_t pid = fork();
        if (pid != 0) return pid;
        // Child: die with the test binary even if it crashes before teardown.
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        const int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, STDOUT_FILENO);
            dup2(devnull, STDERR_FILENO);
        }
        execl(kRedisServer, kRedisServer, "--port", port_text.c_str(), "--bind", "127.0.0.1",
              "--save", "", "--appendonly", "no", "--dir", "/tmp", "--daemonize", "no",
              static_cast<char*>(nullptr));
        _exit(127);
    }

    std::string wait_until_ready() {
        for (int i = 0; i < 500; ++i) {
            if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
                pid_ = -1;
                return "redis-server exited at start (port " + std::to_string(port_) + " taken?)";
            }
            ContextPtr context = connect();
            if (context && context->err == 0) {
                ReplyPtr reply(static_cast<redisReply*>(redisCommand(context.get(), "PING")));
                if (reply && reply->type == REDIS_REPLY_STATUS &&
                    std::string(reply->str) == "PONG") {
                    return {};
                }
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        return "redis-server did not answer PING within 10 s";
    }

    pid_t pid_ = -1;
    int port_ = -1;
};

class RedisScriptsTest : public testing::Test {
  protected:
    static void SetUpTestSuite() {
        server_ = new RedisServer();
        start_error_ = new std::string(server_->start());
    }

    static void TearDownTestSuite() {
        server_->stop();
        delete server_;
        server_ = nullptr;
        delete start_error_;
        start_error_ = nullptr;
    }

    void SetUp() override {
        // A missing server is a failure, not a skip: the tests must run.
        ASSERT_TRUE(start_error_->empty()) << *start_error_;
        context_ = server_->connect();
        ASSERT_TRUE(context_ && context_->err == 0) << "cannot connect to redis-server";
        ASSERT_EQ(command({"FLUSHALL"})->type, REDIS_REPLY_STATUS);
        lookup_sha_ = load(kLookupScript);
        touch_sha_ = load(kTouchScript);
    }

    // Binary-safe: every argument is passed with its length.
    ReplyPtr command(const std::vector<std::string>& args) {
        std::vector<const char*> argv;
        std::vector<std::size_t> lengths;
        for (const auto& arg : args) {
            argv.push_back(arg.data());
            lengths.push_back(arg.size());
        }
        ReplyPtr reply(static_cast<redisReply*>(redisCommandArgv(
            context_.get(), static_cast<int>(argv.size()), argv.data(), lengths.data())));
        EXPECT_TRUE(reply) << "no reply to " << args.front() << ": " << context_->errstr;
        return reply;
    }

    std::string load(std::string_view script) {
        ReplyPtr reply = command({"SCRIPT", "LOAD", std::string(script)});
        if (!reply || reply->type != REDIS_REPLY_STRING) {
            ADD_FAILURE() << "SCRIPT LOAD failed: " << (reply ? reply->str : "no reply");
            return {};
        }
        return std::string(reply->str, reply->len);
    }

    ReplyPtr lookup(const std::string& session_key, const std::string& prefix) {
        return command({"EVALSHA", lookup_sha_, "1", session_key, prefix});
    }

    ReplyPtr touch(const std::string& session_key, std::int64_t now, std::int64_t interval) {
        return command({"EVALSHA", touch_sha_, "1", session_key, std::to_string(now),
                        std::to_string(interval)});
    }

    long long integer_of(const ReplyPtr& reply) {
        EXPECT_TRUE(reply && reply->type == REDIS_REPLY_INTEGER)
            << (reply && reply->type == REDIS_REPLY_ERROR ? reply->str : "not an integer");
        return reply && reply->type == REDIS_REPLY_INTEGER ? reply->integer : -999;
    }

    std::optional<std::string> hget(const std::string& key, const std::string& field) {
        ReplyPtr reply = command({"HGET", key, field});
        if (!reply || reply->type != REDIS_REPLY_STRING) return std::nullopt;
        return std::string(reply->str, reply->len);
    }

    static RedisServer* server_;
    static std::string* start_error_;
    ContextPtr context_;
    std::string lookup_sha_;
    std::string touch_sha_;
};

RedisServer* RedisScriptsTest::server_ = nullptr;
std::string* RedisScriptsTest::start_error_ = nullptr;

TEST(ScriptSha1, KnownVectors) {
    EXPECT_EQ(script_sha1(""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    EXPECT_EQ(script_sha1("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    EXPECT_EQ(script_sha1(std::string_view("a\0b", 3)).size(), 40u);
    EXPECT_NE(script_sha1(std::string_view("a\0b", 3)), script_sha1("a"));
}

TEST_F(RedisScriptsTest, ShaMatchesScriptLoad) {
    EXPECT_EQ(lookup_sha_, script_sha1(kLookupScript));
    EXPECT_EQ(touch_sha_, script_sha1(kTouchScript));
    EXPECT_NE(lookup_sha_, touch_sha_);
}

TEST_F(RedisScriptsTest, LookupSessionAndUser) {
    command({"HSET", "app:sess:s1", "user_id", "user_1", "expires_at", "1700000060000", "status",
             "active", "idle_timeout", "600", "last_active_at", "1699999990000", "token_type",
             "opaque"});
    command({"HSET", "app:user:user_1", "role", "admin", "roles", "admin acme/org:admin", "db_id",
             "42", "email", "a@example.com", "status", "active"});
    const ReplyPtr reply = lookup("app:sess:s1", "app:");
    ASSERT_TRUE(reply);
    LookupRecord record;
    ASSERT_EQ(decode_lookup_reply(reply.get(), record), DecodeStatus::ok);
    EXPECT_EQ(reply->elements, 2u);
    EXPECT_EQ(record.get(SessionField::user_id), "user_1");
    EXPECT_EQ(record.get(SessionField::expires_at), "1700000060000");
    EXPECT_EQ(record.get(SessionField::status), "active");
    EXPECT_EQ(record.get(SessionField::idle_timeout), "600");
    EXPECT_EQ(record.get(SessionField::last_active_at), "1699999990000");
    EXPECT_EQ(record.get(SessionField::token_type), "opaque");
    EXPECT_EQ(record.get(UserField::role), "admin");
    EXPECT_EQ(record.get(UserField::roles), "admin acme/org:admin");
    EXPECT_EQ(record.get(UserField::db_id), "42");
    EXPECT_EQ(record.get(UserField::email), "a@example.com");
    EXPECT_EQ(record.get(UserField::status), "active");
    EXPECT_EQ(evaluate(record, kNow, Policy{}).outcome, Outcome::ok);
}

// The script's HMGETs ask for exactly kSessionFieldNames and kUserFieldNames,
// in order: each field set to a value naming it must land in its own slot.
TEST_F(RedisScriptsTest, LookupFieldsAreTheContractsNames) {
    std::vector<std::string> session = {"HSET", "sess:names"};
    for (std::string_view name : kSessionFieldNames) {
        session.emplace_back(name);
        session.push_back("v:" + std::string(name));
    }
    // user_id names the user hash too.
    session[3] = "u";
    command(session);
    std::vector<std::string> user = {"HSET", "user:u"};
    for (std::string_view name : kUserFieldNames) {
        user.emplace_back(name);
        user.push_back("v:" + std::string(name));
    }
    command(user);
    const ReplyPtr reply = lookup("sess:names", "");
    ASSERT_TRUE(reply);
    LookupRecord record;
    ASSERT_EQ(decode_lookup_reply(reply.get(), record), DecodeStatus::ok);
    EXPECT_EQ(record.session[0], "u");
    for (std::size_t i = 1; i < kSessionFieldCount; ++i) {
        EXPECT_EQ(record.session[i], "v:" + std::string(kSessionFieldNames[i])) << i;
    }
    for (std::size_t i = 0; i < kUserFieldCount; ++i) {
        EXPECT_EQ(record.user[i], "v:" + std::string(kUserFieldNames[i])) << i;
    }
    EXPECT_EQ(record.get(SessionField::token_type), "v:token_type");
    EXPECT_EQ(record.get(UserField::status), "v:status");
}

// token_type=jwt: an identity provider's session, whose id is no secret.
// The opaque check refuses it however valid the session is.
TEST_F(RedisScriptsTest, LookupTokenTypeDecidesWhetherTheIdIsACredential) {
    for (const char* type : {"opaque", "jwt", "JWT", ""}) {
        command({"HSET", "sess:tt", "user_id", "user_t", "expires_at", "1700000060000", "status",
                 "active", "token_type", type});
        const ReplyPtr reply = lookup("sess:tt", "");
        ASSERT_TRUE(reply);
        LookupRecord record;
        ASSERT_EQ(decode_lookup_reply(reply.get(), record), DecodeStatus::ok);
        EXPECT_EQ(record.get(SessionField::token_type), type);
        EXPECT_EQ(evaluate(record, kNow, Policy{}).outcome,
                  std::string_view(type) == "opaque" ? Outcome::ok : Outcome::invalid)
            << type;
    }
}

// Redis before 7 gets the script without its flags line; on Redis 7 both
// must answer the same.
TEST_F(RedisScriptsTest, LegacyLookupScriptIsTheSameScriptUnflagged) {
    ASSERT_EQ(kLookupScript.substr(0, 2), "#!");
    EXPECT_EQ(kLookupScript.substr(kLookupScript.find('\n') + 1), kLookupScriptLegacy);
    EXPECT_EQ(kLookupScriptLegacy.find("#!"), std::string_view::npos);

    command({"HSET", "sess:legacy", "user_id", "user_l", "expires_at", "1700000060000"});
    command({"HSET", "user:user_l", "role", "admin"});
    const ReplyPtr flagged = lookup("sess:legacy", "");
    const ReplyPtr legacy =
        command({"EVAL", std::string(kLookupScriptLegacy), "1", "sess:legacy", ""});
    ASSERT_TRUE(flagged);
    ASSERT_TRUE(legacy);
    LookupRecord a;
    LookupRecord b;
    ASSERT_EQ(decode_lookup_reply(flagged.get(), a), DecodeStatus::ok);
    ASSERT_EQ(decode_lookup_reply(legacy.get(), b), DecodeStatus::ok);
    EXPECT_EQ(a.session, b.session);
    EXPECT_EQ(a.user, b.user);
    EXPECT_EQ(b.get(UserField::role), "admin");
}

TEST_F(RedisScriptsTest, LookupMissingSession) {
    const ReplyPtr reply = lookup("app:sess:nope", "app:");
    ASSERT_TRUE(reply);
    ASSERT_EQ(reply->type, REDIS_REPLY_ARRAY);
    EXPECT_EQ(reply->elements, 1u);
    LookupRecord record;
    ASSERT_EQ(decode_lookup_reply(reply.get(), record), DecodeStatus::ok);
    for (const auto& field : record.session) EXPECT_FALSE(field.has_value());
    EXPECT_EQ(evaluate(record, kNow, Policy{}).outcome, Outcome::invalid);
}

TEST_F(RedisScriptsTest, LookupPartialSessionKeepsNilPositions) {
    // Only the last field set: the nils before it must not truncate the array.
    command({"HSET", "sess:s2", "last_active_at", "5"});
    const ReplyPtr reply = lookup("sess:s2", "");
    ASSERT_TRUE(reply);
    LookupRecord record;
    ASSERT_EQ(decode_lookup_reply(reply.get(), record), DecodeStatus::ok);
    EXPECT_EQ(record.get(SessionField::user_id), std::nullopt);
    EXPECT_EQ(record.get(SessionField::last_active_at), "5");
}

TEST_F(RedisScriptsTest, LookupSessionWithoutUserHash) {
    command({"HSET", "sess:s3", "user_id", "user_gone", "expires_at", "1700000060000"});
    const ReplyPtr reply = lookup("sess:s3", "");
    ASSERT_TRUE(reply);
    LookupRecord record;
    ASSERT_EQ(decode_lookup_reply(reply.get(), record), DecodeStatus::ok);
    EXPECT_EQ(reply->elements, 2u);
    EXPECT_TRUE(record.user_missing());
    EXPECT_EQ(evaluate(record, kNow, Policy{}).outcome, Outcome::ok);
    const std::string_view admin = "admin";
    Policy policy;
    policy.required_roles = &admin;
    policy.required_role_count = 1;
    EXPECT_EQ(evaluate(record, kNow, policy).outcome, Outcome::forbidden);
}

TEST_F(RedisScriptsTest, LookupUsesPrefixForUserKey) {
    command({"HSET", "a:sess:s", "user_id", "u", "expires_at", "1700000060000"});
    command({"HSET", "user:u", "role", "unprefixed"});
    command({"HSET", "a:user:u", "role", "prefixed"});
    const ReplyPtr reply = lookup("a:sess:s", "a:");
    ASSERT_TRUE(reply);
    LookupRecord record;
    ASSERT_EQ(decode_lookup_reply(reply.get(), record), DecodeStatus::ok);
    EXPECT_EQ(record.get(UserField::role), "prefixed");
}

TEST_F(RedisScriptsTest, LookupBinaryValues) {
    const std::string user_id = "user with spaces\r\nand CRLF";
    const std::string email = "a\0b\r\n$-1\r\n\xff"s;
    const std::string roles = "r1 r2\r\nr3";
    command({"HSET", "sess:bin", "user_id", user_id, "expires_at", "1700000060000", "status", ""});
    command({"HSET", "user:" + user_id, "email", email, "roles", roles, "role", ""});
    const ReplyPtr reply = lookup("sess:bin", "");
    ASSERT_TRUE(reply);
    LookupRecord record;
    ASSERT_EQ(decode_lookup_reply(reply.get(), record), DecodeStatus::ok);
    EXPECT_EQ(record.get(SessionField::user_id), user_id);
    EXPECT_EQ(record.get(SessionField::status), "");  // empty, not nil
    EXPECT_EQ(record.get(UserField::email), email);
    EXPECT_EQ(record.get(UserField::roles), roles);
    EXPECT_EQ(record.get(UserField::role), "");
    EXPECT_EQ(record.get(UserField::db_id), std::nullopt);
    // The values travel binary-safe, but a record holding control bytes is
    // refused as invalid before its status is looked at (issue 7, item 8).
    EXPECT_EQ(evaluate(record, kNow, Policy{}).outcome, Outcome::invalid);
}

TEST_F(RedisScriptsTest, LookupWrongTypeIsRedisError) {
    command({"SET", "sess:str", "x"});
    const ReplyPtr reply = lookup("sess:str", "");
    ASSERT_TRUE(reply);
    LookupRecord record;
    EXPECT_EQ(decode_lookup_reply(reply.get(), record), DecodeStatus::redis_error);
}

TEST_F(RedisScriptsTest, NoScriptIsRedisError) {
    command({"SCRIPT", "FLUSH"});
    const ReplyPtr reply = lookup("sess:any", "");
    ASSERT_TRUE(reply);
    ASSERT_EQ(reply->type, REDIS_REPLY_ERROR);
    EXPECT_EQ(std::string(reply->str).rfind("NOSCRIPT", 0), 0u) << reply->str;
    LookupRecord record;
    EXPECT_EQ(decode_lookup_reply(reply.get(), record), DecodeStatus::redis_error);
    // EVAL of the same text works and loads it under the same SHA.
    const ReplyPtr evaluated = command({"EVAL", std::string(kLookupScript), "1", "sess:any", ""});
    ASSERT_TRUE(evaluated);
    EXPECT_EQ(decode_lookup_reply(evaluated.get(), record), DecodeStatus::ok);
    EXPECT_TRUE(lookup("sess:any", "") && lookup("sess:any", "")->type == REDIS_REPLY_ARRAY);
}

TEST_F(RedisScriptsTest, TouchWritesWhenNeverActive) {
    command({"HSET", "sess:t1", "user_id", "u", "expires_at", "1700003600000"});
    EXPECT_EQ(integer_of(touch("sess:t1", kNow, 30'000)), 1);
    EXPECT_EQ(hget("sess:t1", "last_active_at"), std::to_string(kNow));
    // No idle_timeout: the TTL is left alone (none here).
    EXPECT_EQ(integer_of(command({"PTTL", "sess:t1"})), -1);
}

TEST_F(RedisScriptsTest, TouchOnlyWhenOlderThanInterval) {
    const std::string recent = std::to_string(kNow - 29'999);
    command({"HSET", "sess:t2", "user_id", "u", "expires_at", "1700003600000", "last_active_at",
             recent});
    EXPECT_EQ(integer_of(touch("sess:t2", kNow, 30'000)), 0);
    EXPECT_EQ(hget("sess:t2", "last_active_at"), recent);

    const std::string at_interval = std::to_string(kNow - 30'000);
    command({"HSET", "sess:t2", "last_active_at", at_interval});
    EXPECT_EQ(integer_of(touch("sess:t2", kNow, 30'000)), 1);
    EXPECT_EQ(hget("sess:t2", "last_active_at"), std::to_string(kNow));

    // A second touch right after writes nothing: at most once per interval.
    EXPECT_EQ(integer_of(touch("sess:t2", kNow + 1, 30'000)), 0);
    EXPECT_EQ(hget("sess:t2", "last_active_at"), std::to_string(kNow));
}

TEST_F(RedisScriptsTest, TouchSetsTtlToIdleTimeout) {
    // expires_at an hour away, idle_timeout 60 s: TTL = 60 s.
    command({"HSET", "sess:t3", "user_id", "u", "expires_at", std::to_string(kNow + 3'600'000),
             "idle_timeout", "60"});
    command({"EXPIRE", "sess:t3", "3600"});
    EXPECT_EQ(integer_of(touch("sess:t3", kNow, 1'000)), 1);
    const long long ttl = integer_of(command({"PTTL", "sess:t3"}));
    EXPECT_GT(ttl, 55'000);
    EXPECT_LE(ttl, 60'000);
}

TEST_F(RedisScriptsTest, TouchSetsTtlToRemainingLifetime) {
    // expires_at 10 s away, idle_timeout 60 s: TTL = 10 s.
    command({"HSET", "sess:t4", "user_id", "u", "expires_at", std::to_string(kNow + 10'000),
             "idle_timeout", "60"});
    EXPECT_EQ(integer_of(touch("sess:t4", kNow, 1'000)), 1);
    const long long ttl = integer_of(command({"PTTL", "sess:t4"}));
    EXPECT_GT(ttl, 5'000);
    EXPECT_LE(ttl, 10'000);
}

TEST_F(RedisScriptsTest, TouchWithoutIdleTimeoutKeepsTtl) {
    command({"HSET", "sess:t5", "user_id", "u", "expires_at", std::to_string(kNow + 10'000)});
    command({"EXPIRE", "sess:t5", "1000"});
    EXPECT_EQ(integer_of(touch("sess:t5", kNow, 1'000)), 1);
    const long long ttl = integer_of(command({"TTL", "sess:t5"}));
    EXPECT_GT(ttl, 990);
    EXPECT_LE(ttl, 1000);
}

TEST_F(RedisScriptsTest, TouchDoesNotCreateMissingKey) {
    EXPECT_EQ(integer_of(touch("sess:ghost", kNow, 1'000)), 0);
    EXPECT_EQ(integer_of(command({"EXISTS", "sess:ghost"})), 0);
}

TEST_F(RedisScriptsTest, TouchRejectsBadArguments) {
    command({"HSET", "sess:t6", "user_id", "u"});
    const ReplyPtr reply = command({"EVALSHA", touch_sha_, "1", "sess:t6", "soon", "1000"});
    ASSERT_TRUE(reply);
    EXPECT_EQ(reply->type, REDIS_REPLY_ERROR);
    EXPECT_EQ(hget("sess:t6", "last_active_at"), std::nullopt);
}

}  // namespace
}  // namespace session::core
