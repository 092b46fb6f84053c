// The touch script and the check's plain reads (the one-key HMGET and the
// user hash's) against a real redis-server, started on a free loopback port
// for this test suite and killed after it. The synchronous hiredis
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

#include <array>
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

    // The module's two reads, with the field lists it sends.
    template <std::size_t N>
    static std::vector<std::string> hmget_args(const std::string& key,
                                               const std::array<std::string_view, N>& fields) {
        std::vector<std::string> args = {"HMGET", key};
        for (std::string_view field : fields) args.emplace_back(field);
        return args;
    }
    static std::vector<std::string> session_read_args(const std::string& key) {
        return hmget_args(key, kSessionReadFieldNames);
    }
    static std::vector<std::string> user_read_args(const std::string& key) {
        return hmget_args(key, kUserFieldNames);
    }

    // The record's views point into the returned reply: keep it alive.
    ReplyPtr read_session(const std::string& key, LookupRecord& record, bool& user_copied) {
        ReplyPtr reply = command(session_read_args(key));
        EXPECT_EQ(decode_session_read(reply.get(), record, user_copied), DecodeStatus::ok);
        return reply;
    }
    ReplyPtr read_user(const std::string& key, LookupRecord& record) {
        ReplyPtr reply = command(user_read_args(key));
        EXPECT_EQ(decode_user_hmget(reply.get(), record), DecodeStatus::ok);
        return reply;
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
    EXPECT_EQ(touch_sha_, script_sha1(kTouchScript));
}

// Contract version 2: the session hash carries its user's fields, and one
// HMGET of one key answers the whole check.
TEST_F(RedisScriptsTest, OneKeyReadOfAVersionTwoSession) {
    command({"HSET",           "app:sess:s1",
             "user_id",        "user_1",
             "expires_at",     "1700000060000",
             "status",         "active",
             "idle_timeout",   "600",
             "last_active_at", "1699999990000",
             "token_type",     "opaque",
             "user_status",    "active",
             "role",           "admin",
             "roles",          "admin org_1/org:admin",
             "db_id",          "42",
             "email",          "a@example.com"});
    LookupRecord record;
    bool user_copied = false;
    const ReplyPtr reply = read_session("app:sess:s1", record, user_copied);
    ASSERT_TRUE(reply);
    EXPECT_TRUE(user_copied);
    EXPECT_EQ(record.get(SessionField::user_id), "user_1");
    EXPECT_EQ(record.get(SessionField::expires_at), "1700000060000");
    EXPECT_EQ(record.get(SessionField::status), "active");
    EXPECT_EQ(record.get(SessionField::idle_timeout), "600");
    EXPECT_EQ(record.get(SessionField::last_active_at), "1699999990000");
    EXPECT_EQ(record.get(SessionField::token_type), "opaque");
    EXPECT_EQ(record.get(UserField::role), "admin");
    EXPECT_EQ(record.get(UserField::roles), "admin org_1/org:admin");
    EXPECT_EQ(record.get(UserField::db_id), "42");
    EXPECT_EQ(record.get(UserField::email), "a@example.com");
    EXPECT_EQ(record.get(UserField::status), "active");
    EXPECT_EQ(evaluate(record, kNow, Policy{}).outcome, Outcome::ok);
}

// A session hash without the copies (an application's, or contract version
// 1): the user hash is the second read.
TEST_F(RedisScriptsTest, VersionOneSessionThenItsUserHash) {
    command({"HSET", "app:sess:s1", "user_id", "user_1", "expires_at", "1700000060000"});
    command({"HSET", "app:user:user_1", "role", "admin", "roles", "admin org_1/org:admin", "db_id",
             "42", "email", "a@example.com", "status", "banned"});
    LookupRecord record;
    bool user_copied = true;
    const ReplyPtr session = read_session("app:sess:s1", record, user_copied);
    ASSERT_TRUE(session);
    EXPECT_FALSE(user_copied);
    EXPECT_TRUE(record.user_missing());
    ASSERT_TRUE(needs_user_read(record, kNow));
    const ReplyPtr user = read_user("app:user:user_1", record);
    ASSERT_TRUE(user);
    EXPECT_EQ(record.get(SessionField::user_id), "user_1");
    EXPECT_EQ(record.get(UserField::role), "admin");
    EXPECT_EQ(record.get(UserField::status), "banned");
    EXPECT_EQ(evaluate(record, kNow, Policy{}).outcome, Outcome::revoked);
}

// The HMGETs ask for exactly kSessionReadFieldNames and kUserFieldNames, in
// order: each field set to a value naming it must land in its own slot.
TEST_F(RedisScriptsTest, ReadFieldsAreTheContractsNames) {
    std::vector<std::string> session = {"HSET", "sess:names"};
    for (std::string_view name : kSessionReadFieldNames) {
        session.emplace_back(name);
        session.push_back("v:" + std::string(name));
    }
    command(session);
    LookupRecord record;
    bool user_copied = false;
    const ReplyPtr reply = read_session("sess:names", record, user_copied);
    ASSERT_TRUE(reply);
    EXPECT_TRUE(user_copied);
    for (std::size_t i = 0; i < kSessionFieldCount; ++i) {
        EXPECT_EQ(record.session[i], "v:" + std::string(kSessionFieldNames[i])) << i;
    }
    // The copies carry the user hash's names, but `status` as user_status.
    for (std::size_t i = 0; i < kUserFieldCount; ++i) {
        const std::string name(kUserFieldNames[i]);
        EXPECT_EQ(record.user[i], name == "status" ? "v:user_status" : "v:" + name) << i;
    }

    std::vector<std::string> user = {"HSET", "user:u"};
    for (std::string_view name : kUserFieldNames) {
        user.emplace_back(name);
        user.push_back("u:" + std::string(name));
    }
    command(user);
    LookupRecord from_user;
    const ReplyPtr user_reply = read_user("user:u", from_user);
    ASSERT_TRUE(user_reply);
    for (std::size_t i = 0; i < kUserFieldCount; ++i) {
        EXPECT_EQ(from_user.user[i], "u:" + std::string(kUserFieldNames[i])) << i;
    }
}

// token_type=jwt: an identity provider's session, whose id is no secret.
// The opaque check refuses it however valid the session is, and does not
// read the user hash for it.
TEST_F(RedisScriptsTest, TokenTypeDecidesWhetherTheIdIsACredential) {
    for (const char* type : {"opaque", "jwt", "JWT", ""}) {
        command({"HSET", "sess:tt", "user_id", "user_t", "expires_at", "1700000060000", "status",
                 "active", "token_type", type});
        LookupRecord record;
        bool user_copied = false;
        const ReplyPtr reply = read_session("sess:tt", record, user_copied);
        ASSERT_TRUE(reply);
        EXPECT_EQ(record.get(SessionField::token_type), type);
        const bool opaque = std::string_view(type) == "opaque";
        EXPECT_EQ(needs_user_read(record, kNow), opaque) << type;
        EXPECT_EQ(evaluate(record, kNow, Policy{}).outcome, opaque ? Outcome::ok : Outcome::invalid)
            << type;
    }
}

TEST_F(RedisScriptsTest, MissingSession) {
    LookupRecord record;
    bool user_copied = true;
    const ReplyPtr reply = read_session("app:sess:nope", record, user_copied);
    ASSERT_TRUE(reply);
    EXPECT_EQ(reply->elements, kSessionReadFieldCount);
    EXPECT_FALSE(user_copied);
    for (const auto& field : record.session) EXPECT_FALSE(field.has_value());
    EXPECT_FALSE(needs_user_read(record, kNow));
    EXPECT_EQ(evaluate(record, kNow, Policy{}).outcome, Outcome::invalid);
}

TEST_F(RedisScriptsTest, PartialSessionKeepsNilPositions) {
    command({"HSET", "sess:s2", "last_active_at", "5", "email", "e"});
    LookupRecord record;
    bool user_copied = true;
    const ReplyPtr reply = read_session("sess:s2", record, user_copied);
    ASSERT_TRUE(reply);
    EXPECT_FALSE(user_copied);
    EXPECT_EQ(record.get(SessionField::user_id), std::nullopt);
    EXPECT_EQ(record.get(SessionField::last_active_at), "5");
    EXPECT_TRUE(record.user_missing());  // `email` without user_status is no copy
}

TEST_F(RedisScriptsTest, SessionWithoutUserHash) {
    command({"HSET", "sess:s3", "user_id", "user_gone", "expires_at", "1700000060000"});
    LookupRecord record;
    bool user_copied = true;
    const ReplyPtr reply = read_session("sess:s3", record, user_copied);
    ASSERT_TRUE(reply);
    ASSERT_TRUE(needs_user_read(record, kNow));
    const ReplyPtr user = read_user("user:user_gone", record);
    ASSERT_TRUE(user);
    EXPECT_TRUE(record.user_missing());
    EXPECT_EQ(evaluate(record, kNow, Policy{}).outcome, Outcome::ok);
    const std::string_view admin = "admin";
    Policy policy;
    policy.required_roles = &admin;
    policy.required_role_count = 1;
    EXPECT_EQ(evaluate(record, kNow, policy).outcome, Outcome::forbidden);
}

TEST_F(RedisScriptsTest, BinaryValues) {
    const std::string user_id = "user with spaces\r\nand CRLF";
    const std::string email = "a\0b\r\n$-1\r\n\xff"s;
    const std::string roles = "r1 r2\r\nr3";
    command({"HSET", "sess:bin", "user_id", user_id, "expires_at", "1700000060000", "status", "",
             "user_status", "active", "email", email, "roles", roles, "role", ""});
    LookupRecord record;
    bool user_copied = false;
    const ReplyPtr reply = read_session("sess:bin", record, user_copied);
    ASSERT_TRUE(reply);
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

TEST_F(RedisScriptsTest, WrongTypeIsRedisError) {
    command({"SET", "sess:str", "x"});
    LookupRecord record;
    bool user_copied = false;
    const ReplyPtr reply = command(session_read_args("sess:str"));
    ASSERT_TRUE(reply);
    EXPECT_EQ(decode_session_read(reply.get(), record, user_copied), DecodeStatus::redis_error);
    const ReplyPtr user = command(user_read_args("sess:str"));
    ASSERT_TRUE(user);
    EXPECT_EQ(decode_user_hmget(user.get(), record), DecodeStatus::redis_error);
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
