// From rows to the Redis keys of docs/redis-contract.md.
#include <gtest/gtest.h>

#include "core/projection.hpp"
#include "daemon/redis.hpp"

namespace syncd {
namespace {

const std::int64_t kNow = 1700000000000;

using Fields = std::vector<std::pair<std::string, std::string>>;

UserState ada() {
    UserState u;
    u.clerk_id = "user_1";
    u.db_id = "0b7c9a4e-0000-4000-8000-000000000001";
    u.email = "ada@example.com";
    u.role = "admin";
    u.memberships = {{"acme", "org:admin"}, {"globex", "org:member"}};
    return u;
}

TEST(ProjectUser, ActiveUserHash) {
    KeyState k = project_user(ada(), "app:", kNow);
    EXPECT_EQ(k.key, "app:user:user_1");
    EXPECT_TRUE(k.present);
    EXPECT_EQ(k.fields, (Fields{{"db_id", "0b7c9a4e-0000-4000-8000-000000000001"},
                                {"role", "admin"},
                                {"roles", "admin acme/org:admin globex/org:member"},
                                {"email", "ada@example.com"},
                                {"status", "active"}}));
    EXPECT_FALSE(k.ttl_seconds);
    EXPECT_FALSE(k.expire_at_ms);
}

TEST(ProjectUser, BannedAndNoEmail) {
    UserState u = ada();
    u.status = UserStatus::banned;
    u.email.reset();
    u.memberships.clear();
    KeyState k = project_user(u, "", kNow);
    EXPECT_EQ(k.key, "user:user_1");
    EXPECT_EQ(
        k.fields,
        (Fields{{"db_id", u.db_id}, {"role", "admin"}, {"roles", "admin"}, {"status", "banned"}}));
}

TEST(ProjectUser, TombstoneHasNoPersonalDataAndOutlivesSessions) {
    UserState u = ada();
    u.status = UserStatus::deleted;
    KeyState k = project_user(u, "", kNow);
    EXPECT_EQ(k.fields, (Fields{{"status", "deleted"}}));
    ASSERT_TRUE(k.ttl_seconds);
    EXPECT_GE(*k.ttl_seconds, kTombstoneMinTtlSeconds);
    u.latest_session_expiry_ms = kNow + 90LL * 24 * 3600 * 1000;
    k = project_user(u, "", kNow);
    EXPECT_GT(*k.ttl_seconds, 90LL * 24 * 3600);
}

SessionState live_session() {
    SessionState s;
    s.id = "sess_1";
    s.clerk_user_id = "user_1";
    s.status = "active";
    s.expires_at_ms = kNow + 3600 * 1000;
    s.last_active_at_ms = kNow - 1000;
    s.user_status = UserStatus::active;
    return s;
}

TEST(ProjectSession, ActiveSessionHashWithExpiry) {
    KeyState k = project_session(live_session(), "app:", kNow);
    EXPECT_EQ(k.key, "app:sess:sess_1");
    EXPECT_TRUE(k.present);
    EXPECT_EQ(k.fields, (Fields{{"user_id", "user_1"},
                                {"expires_at", std::to_string(kNow + 3600 * 1000)},
                                {"last_active_at", std::to_string(kNow - 1000)}}));
    EXPECT_EQ(k.expire_at_ms, kNow + 3600 * 1000);
}

TEST(ProjectSession, UnknownUserStillValid) {
    SessionState s = live_session();
    s.user_status = UserStatus::unknown;
    EXPECT_TRUE(project_session(s, "", kNow).present);
}

TEST(ProjectSession, AnythingElseDeletesTheKey) {
    for (const char* status : {"ended", "removed", "revoked", "expired", "pending", "abandoned"}) {
        SessionState s = live_session();
        s.status = status;
        EXPECT_FALSE(project_session(s, "", kNow).present) << status;
    }
    SessionState expired = live_session();
    expired.expires_at_ms = kNow;
    EXPECT_FALSE(project_session(expired, "", kNow).present);
    for (UserStatus st : {UserStatus::banned, UserStatus::deleted}) {
        SessionState s = live_session();
        s.user_status = st;
        EXPECT_FALSE(project_session(s, "", kNow).present);
    }
}

TEST(Channel, NamesFromTheContract) {
    EXPECT_EQ(revocation_channel("app:"), "app:session:revocations");
    EXPECT_EQ(revocation_message("session", "sess_1"), "session sess_1");
    EXPECT_EQ(revocation_message("user", "user_1"), "user user_1");
}

TEST(RedisCommands, PresentKeyIsReplacedAtomically) {
    UserState u = ada();
    u.status = UserStatus::deleted;
    auto cmds = apply_commands(project_user(u, "", kNow));
    ASSERT_EQ(cmds.size(), 5u);
    EXPECT_EQ(cmds[0], std::vector<std::string>{"MULTI"});
    EXPECT_EQ(cmds[1], (std::vector<std::string>{"DEL", "user:user_1"}));
    EXPECT_EQ(cmds[2], (std::vector<std::string>{"HSET", "user:user_1", "status", "deleted"}));
    EXPECT_EQ(cmds[3][0], "EXPIRE");
    EXPECT_EQ(cmds[4], std::vector<std::string>{"EXEC"});
}

// One EVAL: DEL, HSET, the newer last_active_at, PEXPIREAT. Key and values
// are arguments; the script text is constant.
TEST(RedisCommands, SessionKeyKeepsTheNewerLastActiveAt) {
    auto cmds = apply_commands(project_session(live_session(), "", kNow));
    ASSERT_EQ(cmds.size(), 1u);
    EXPECT_EQ(cmds[0], (std::vector<std::string>{
                           "EVAL", kApplySessionScript, "1", "sess:sess_1",
                           std::to_string(kNow + 3600 * 1000), std::to_string(kNow - 1000),
                           "user_id", "user_1", "expires_at", std::to_string(kNow + 3600 * 1000)}));
    SessionState never_active = live_session();
    never_active.last_active_at_ms.reset();
    cmds = apply_commands(project_session(never_active, "", kNow));
    ASSERT_EQ(cmds.size(), 1u);
    EXPECT_EQ(cmds[0][5], "");
}

TEST(ProjectUser, MembershipsThatWouldInjectWordsAreLeftOut) {
    UserState u = ada();
    u.role = "user";
    u.memberships = {{"evil admin", "org:member"}, {"globex", "org:member admin"},
                     {"a/b", "org:member"},        {"tab\tco", "org:member"},
                     {"", "org:member"},           {"acme", "org:admin"}};
    EXPECT_EQ(project_user(u, "", kNow).fields[2],
              (std::pair<std::string, std::string>{"roles", "user acme/org:admin"}));
    EXPECT_EQ(roles_field("user", {{"acme", "org:admin"}, {"x", ""}}), "user acme/org:admin");
}

TEST(RedisCommands, AbsentKeyIsDeleted) {
    SessionState s = live_session();
    s.status = "revoked";
    auto cmds = apply_commands(project_session(s, "", kNow));
    ASSERT_EQ(cmds.size(), 1u);
    EXPECT_EQ(cmds[0], (std::vector<std::string>{"DEL", "sess:sess_1"}));
}

}  // namespace
}  // namespace syncd
