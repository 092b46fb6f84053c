// From rows to the Redis keys of docs/redis-contract.md.
#include <gtest/gtest.h>

#include <algorithm>
#include <iterator>

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
    u.memberships = {{"org_2acme", "org:admin"}, {"org_2globex", "org:member"}};
    return u;
}

TEST(ProjectUser, ActiveUserHash) {
    KeyState k = project_user(ada(), "app:", kNow);
    EXPECT_EQ(k.key, "app:user:user_1");
    EXPECT_TRUE(k.present);
    EXPECT_EQ(k.fields, (Fields{{"db_id", "0b7c9a4e-0000-4000-8000-000000000001"},
                                {"role", "admin"},
                                {"roles", "admin org_2acme/org:admin org_2globex/org:member"},
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
    EXPECT_TRUE(k.tombstone);
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
    s.updated_at_ms = kNow - 1000;
    s.user_status = UserStatus::active;
    s.user_updated_at_ms = kNow - 5000;
    return s;
}

TEST(ProjectSession, ActiveSessionHashWithExpiry) {
    KeyState k = project_session(live_session(), "app:", kNow, 0);
    EXPECT_EQ(k.key, "app:sess:sess_1");
    EXPECT_TRUE(k.present);
    EXPECT_FALSE(k.tombstone);
    // No user row here: the copy (contract version 2) is the status alone.
    EXPECT_EQ(k.fields, (Fields{{"user_id", "user_1"},
                                {"expires_at", std::to_string(kNow + 3600 * 1000)},
                                {"last_active_at", std::to_string(kNow - 1000)},
                                {"token_type", "jwt"},
                                {"user_status", "active"}}));
    EXPECT_EQ(k.expire_at_ms, kNow + 3600 * 1000);
    EXPECT_FALSE(k.ttl_seconds);
}

TEST(ProjectSession, UnknownUserStillValid) {
    SessionState s = live_session();
    s.user_status = UserStatus::unknown;
    EXPECT_TRUE(project_session(s, "", kNow, 0).present);
    EXPECT_FALSE(project_session(s, "", kNow, 0).tombstone);
}

// The module's JWT mode lets a verified token through when the session hash
// is missing: an ended session leaves its status behind, and nothing else.
TEST(ProjectSession, EndedSessionLeavesATombstone) {
    for (const char* status : {"ended", "removed", "revoked", "expired", "replaced", "abandoned"}) {
        SessionState s = live_session();
        s.status = status;
        s.updated_at_ms = kNow - 1000;
        KeyState k = project_session(s, "app:", kNow, 0);
        EXPECT_EQ(k.key, "app:sess:sess_1");
        EXPECT_TRUE(k.present) << status;
        EXPECT_TRUE(k.tombstone) << status;
        EXPECT_EQ(k.fields, (Fields{{"status", status}, {"token_type", "jwt"}})) << status;
        ASSERT_TRUE(k.ttl_seconds) << status;
        EXPECT_EQ(*k.ttl_seconds, kSessionTombstoneTtlSeconds);
        EXPECT_FALSE(k.expire_at_ms);
        EXPECT_FALSE(k.keep_newer_last_active);
    }
    // Clerk's tokens live 60 s; the module allows some leeway.
    EXPECT_GE(kSessionTombstoneTtlSeconds, 120);
}

TEST(ProjectSession, BannedOrDeletedUserRevokesTheActiveSession) {
    for (UserStatus st : {UserStatus::banned, UserStatus::deleted}) {
        SessionState s = live_session();
        s.user_status = st;
        s.updated_at_ms = kNow - 3600 * 1000;  // the session itself is old
        s.user_updated_at_ms = kNow - 1000;    // the ban or deletion is not
        KeyState k = project_session(s, "", kNow, 0);
        EXPECT_TRUE(k.present);
        EXPECT_TRUE(k.tombstone);
        EXPECT_EQ(k.fields, (Fields{{"status", "revoked"}, {"token_type", "jwt"}}));
        EXPECT_EQ(k.ttl_seconds, kSessionTombstoneTtlSeconds);
        // An ended session of such a user keeps its own status.
        s.status = "ended";
        EXPECT_EQ(project_session(s, "", kNow, 0).fields[0],
                  (std::pair<std::string, std::string>{"status", "ended"}));
    }
}

// Long after the end no token for the session verifies: reconcile and a
// late re-projection leave no key at all.
TEST(ProjectSession, SessionThatEndedLongAgoHasNoKey) {
    const std::int64_t window_ms = kSessionTombstoneTtlSeconds * 1000;
    SessionState s = live_session();
    s.status = "revoked";
    s.updated_at_ms = kNow - window_ms + 1;
    EXPECT_TRUE(project_session(s, "", kNow, 0).present);
    s.updated_at_ms = kNow - window_ms;
    EXPECT_FALSE(project_session(s, "", kNow, 0).present);

    SessionState banned = live_session();
    banned.user_status = UserStatus::banned;
    banned.updated_at_ms = kNow - 1000;
    banned.user_updated_at_ms = kNow - window_ms;
    // The later of the two changes counts.
    EXPECT_TRUE(project_session(banned, "", kNow, 0).present);
    banned.updated_at_ms = kNow - window_ms - 1;
    EXPECT_FALSE(project_session(banned, "", kNow, 0).present);

    // A clock ahead of ours keeps it (longer, never shorter).
    s.updated_at_ms = kNow + window_ms;
    EXPECT_TRUE(project_session(s, "", kNow, 0).present);
}

// A status that may still become active (pending) marks the session until
// it expires: tokens may be issued for it all that time.
TEST(ProjectSession, PendingSessionIsMarkedUntilItExpires) {
    SessionState s = live_session();
    s.status = "pending";
    s.updated_at_ms = kNow - 3600 * 1000;
    KeyState k = project_session(s, "", kNow, 0);
    EXPECT_TRUE(k.present);
    EXPECT_TRUE(k.tombstone);
    EXPECT_EQ(k.fields, (Fields{{"status", "pending"}, {"token_type", "jwt"}}));
    EXPECT_EQ(k.expire_at_ms, kNow + 3600 * 1000);
    EXPECT_FALSE(k.ttl_seconds);
    // Close to its expiry, still the tombstone's minimum.
    s.expires_at_ms = kNow + 1000;
    EXPECT_EQ(project_session(s, "", kNow, 0).expire_at_ms,
              kNow + kSessionTombstoneTtlSeconds * 1000);
    s.expires_at_ms = kNow;
    EXPECT_FALSE(project_session(s, "", kNow, 0).present);
}

TEST(ProjectSession, ExpiredActiveSessionHasNoKey) {
    SessionState expired = live_session();
    expired.expires_at_ms = kNow;
    EXPECT_FALSE(project_session(expired, "", kNow, 0).present);
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
    auto cmds = apply_commands(project_session(live_session(), "", kNow, 0));
    ASSERT_EQ(cmds.size(), 1u);
    EXPECT_EQ(cmds[0], (std::vector<std::string>{"EVAL", kApplySessionScript, "1", "sess:sess_1",
                                                 std::to_string(kNow + 3600 * 1000),
                                                 std::to_string(kNow - 1000), "user_id", "user_1",
                                                 "expires_at", std::to_string(kNow + 3600 * 1000),
                                                 "token_type", "jwt", "user_status", "active"}));
    SessionState never_active = live_session();
    never_active.last_active_at_ms.reset();
    cmds = apply_commands(project_session(never_active, "", kNow, 0));
    ASSERT_EQ(cmds.size(), 1u);
    EXPECT_EQ(cmds[0][5], "");
}

TEST(ProjectUser, MembershipsThatWouldInjectWordsAreLeftOut) {
    UserState u = ada();
    u.role = "user";
    u.memberships = {{"org_evil admin", "org:member"},
                     {"org_globex", "org:member admin"},
                     {"org_a/b", "org:member"},
                     {"org_tab\tco", "org:member"},
                     {"", "org:member"},
                     {"org_acme", "org:admin"}};
    EXPECT_EQ(project_user(u, "", kNow).fields[2],
              (std::pair<std::string, std::string>{"roles", "user org_acme/org:admin"}));
    EXPECT_EQ(roles_field("user", {{"org_acme", "org:admin"}, {"x", ""}}),
              "user org_acme/org:admin");
}

// Item 10: roles name the organization by id, which no one else can take;
// a slug is renamed and then free for a new organization.
TEST(ProjectUser, RolesNameOrganizationsById) {
    EXPECT_EQ(roles_field("user", {{"org_2abc", "org:admin"}}), "user org_2abc/org:admin");
}

// Item 12: Clerk's inactivity timeout travels on the hash; the module
// enforces it with last_active_at.
TEST(ProjectSession, IdleTimeoutIsWrittenWhenConfigured) {
    KeyState k = project_session(live_session(), "", kNow, 1800);
    EXPECT_EQ(k.fields, (Fields{{"user_id", "user_1"},
                                {"expires_at", std::to_string(kNow + 3600 * 1000)},
                                {"last_active_at", std::to_string(kNow - 1000)},
                                {"idle_timeout", "1800"},
                                {"token_type", "jwt"},
                                {"user_status", "active"}}));
    for (const auto& f : project_session(live_session(), "", kNow, 0).fields) {
        EXPECT_NE(f.first, "idle_timeout");
    }
}

// The module's sliding expiry sets the TTL from expires_at: the cap at
// abandon_at must be in the field as well as in PEXPIREAT.
TEST(ProjectSession, ExpiryNeverExceedsAbandonAt) {
    SessionState s = live_session();
    s.abandon_at_ms = kNow + 60 * 1000;
    KeyState k = project_session(s, "", kNow, 0);
    ASSERT_TRUE(k.present);
    EXPECT_FALSE(k.tombstone);
    EXPECT_EQ(k.expire_at_ms, kNow + 60 * 1000);
    EXPECT_EQ(k.fields[1], (std::pair<std::string, std::string>{"expires_at",
                                                                std::to_string(kNow + 60 * 1000)}));
    s.abandon_at_ms = kNow + 7200 * 1000;  // later than expire_at: no effect
    EXPECT_EQ(project_session(s, "", kNow, 0).expire_at_ms, kNow + 3600 * 1000);
}

TEST(ProjectSession, PastAbandonAtIsATombstoneThenNothing) {
    SessionState s = live_session();
    s.abandon_at_ms = kNow - 1000;
    KeyState k = project_session(s, "", kNow, 0);
    ASSERT_TRUE(k.present);
    EXPECT_TRUE(k.tombstone);
    EXPECT_EQ(k.fields, (Fields{{"status", "abandoned"}, {"token_type", "jwt"}}));
    EXPECT_EQ(k.ttl_seconds, kSessionTombstoneTtlSeconds);
    s.abandon_at_ms = kNow - kSessionTombstoneTtlSeconds * 1000;
    EXPECT_FALSE(project_session(s, "", kNow, 0).present);
}

// The tombstone replaces the whole hash: DEL first, so no user_id (or
// anything else) of the live session survives next to the status.
TEST(RedisCommands, TombstoneReplacesTheHashAtomically) {
    SessionState s = live_session();
    s.status = "revoked";
    auto cmds = apply_commands(project_session(s, "", kNow, 0));
    ASSERT_EQ(cmds.size(), 5u);
    EXPECT_EQ(cmds[0], std::vector<std::string>{"MULTI"});
    EXPECT_EQ(cmds[1], (std::vector<std::string>{"DEL", "sess:sess_1"}));
    EXPECT_EQ(cmds[2], (std::vector<std::string>{"HSET", "sess:sess_1", "status", "revoked",
                                                 "token_type", "jwt"}));
    EXPECT_EQ(cmds[3], (std::vector<std::string>{"EXPIRE", "sess:sess_1",
                                                 std::to_string(kSessionTombstoneTtlSeconds)}));
    EXPECT_EQ(cmds[4], std::vector<std::string>{"EXEC"});
}

TEST(RedisCommands, AbsentKeyIsDeleted) {
    SessionState s = live_session();
    s.status = "revoked";
    s.updated_at_ms = kNow - kSessionTombstoneTtlSeconds * 1000;
    auto cmds = apply_commands(project_session(s, "", kNow, 0));
    ASSERT_EQ(cmds.size(), 1u);
    EXPECT_EQ(cmds[0], (std::vector<std::string>{"DEL", "sess:sess_1"}));
}

// Contract version 2: a live session hash carries its user's fields, so
// that an opaque check is one HMGET of one key.
SessionState ada_session() {
    SessionState s = live_session();
    s.user = ada();
    return s;
}

TEST(ProjectSessionV2, LiveHashCarriesTheUsersFields) {
    KeyState k = project_session(ada_session(), "app:", kNow, 0);
    EXPECT_EQ(k.fields, (Fields{{"user_id", "user_1"},
                                {"expires_at", std::to_string(kNow + 3600 * 1000)},
                                {"last_active_at", std::to_string(kNow - 1000)},
                                {"token_type", "jwt"},
                                {"user_status", "active"},
                                {"db_id", "0b7c9a4e-0000-4000-8000-000000000001"},
                                {"role", "admin"},
                                {"roles", "admin org_2acme/org:admin org_2globex/org:member"},
                                {"email", "ada@example.com"}}));
}

// The copy is the user hash's fields, value for value (status renamed).
TEST(ProjectSessionV2, CopyMatchesTheUserHash) {
    for (bool with_email : {true, false}) {
        UserState u = ada();
        if (!with_email) u.email.reset();
        Fields from_user;
        for (const auto& f : project_user(u, "", kNow).fields) {
            from_user.emplace_back(f.first == "status" ? "user_status" : f.first, f.second);
        }
        Fields copy = session_user_fields(&u);
        std::sort(from_user.begin(), from_user.end());
        std::sort(copy.begin(), copy.end());
        EXPECT_EQ(copy, from_user);
        bool has_email = false;
        for (const auto& f : copy) has_email |= f.first == "email";
        EXPECT_EQ(has_email, with_email);
        for (const auto& f : copy) {
            EXPECT_NE(std::find(std::begin(kSessionUserFieldNames),
                                std::end(kSessionUserFieldNames), f.first),
                      std::end(kSessionUserFieldNames))
                << f.first;
        }
    }
    // No row: the status alone (its presence tells the reader the copy is
    // there); a deleted user's copy carries no personal data.
    EXPECT_EQ(session_user_fields(nullptr), (Fields{{"user_status", "active"}}));
    UserState gone = ada();
    gone.status = UserStatus::deleted;
    EXPECT_EQ(session_user_fields(&gone), (Fields{{"user_status", "deleted"}}));
}

TEST(ProjectSessionV2, TombstonesCarryNoCopy) {
    SessionState ended = ada_session();
    ended.status = "ended";
    EXPECT_EQ(project_session(ended, "", kNow, 0).fields,
              (Fields{{"status", "ended"}, {"token_type", "jwt"}}));
    SessionState banned = ada_session();
    banned.user_status = UserStatus::banned;
    banned.user->status = UserStatus::banned;
    EXPECT_EQ(project_session(banned, "", kNow, 0).fields,
              (Fields{{"status", "revoked"}, {"token_type", "jwt"}}));
}

// The set lists the live hashes, expires with the longest of them, and
// leaves out tombstones, expired sessions and users without a row.
TEST(ProjectSessionSet, LiveSessionsOnlyAndTheLongestExpiry) {
    SessionState a = ada_session();
    a.id = "sess_b";
    SessionState longer = ada_session();
    longer.id = "sess_a";
    longer.expires_at_ms = kNow + 7200 * 1000;
    SessionState ended = ada_session();
    ended.id = "sess_c";
    ended.status = "ended";
    SessionState expired = ada_session();
    expired.id = "sess_d";
    expired.expires_at_ms = kNow;
    SessionState abandoned = ada_session();
    abandoned.id = "sess_e";
    abandoned.abandon_at_ms = kNow - 1;
    KeyState k =
        project_session_set("user_1", {a, longer, ended, expired, abandoned}, "app:", kNow, 0);
    EXPECT_EQ(k.key, "app:user_sessions:user_1");
    EXPECT_TRUE(k.is_set);
    EXPECT_TRUE(k.present);
    EXPECT_EQ(k.members, (std::vector<std::string>{"sess_a", "sess_b"}));
    EXPECT_EQ(k.expire_at_ms, kNow + 7200 * 1000);
    EXPECT_TRUE(k.fields.empty());

    KeyState none = project_session_set("user_1", {ended, expired}, "", kNow, 0);
    EXPECT_FALSE(none.present);
    EXPECT_EQ(apply_commands(none),
              (std::vector<std::vector<std::string>>{{"DEL", "user_sessions:user_1"}}));

    SessionState unknown = live_session();
    unknown.user_status = UserStatus::unknown;
    EXPECT_FALSE(project_session_set("user_1", {unknown}, "", kNow, 0).present);
    SessionState banned = ada_session();
    banned.user_status = UserStatus::banned;
    EXPECT_FALSE(project_session_set("user_1", {banned}, "", kNow, 0).present);
}

TEST(ProjectSessionSet, ReplacedAtomicallyWithItsExpiry) {
    KeyState k = project_session_set("user_1", {ada_session()}, "", kNow, 0);
    auto cmds = apply_commands(k);
    ASSERT_EQ(cmds.size(), 5u);
    EXPECT_EQ(cmds[0], std::vector<std::string>{"MULTI"});
    EXPECT_EQ(cmds[1], (std::vector<std::string>{"DEL", "user_sessions:user_1"}));
    EXPECT_EQ(cmds[2], (std::vector<std::string>{"SADD", "user_sessions:user_1", "sess_1"}));
    EXPECT_EQ(cmds[3], (std::vector<std::string>{"PEXPIREAT", "user_sessions:user_1",
                                                 std::to_string(kNow + 3600 * 1000)}));
    EXPECT_EQ(cmds[4], std::vector<std::string>{"EXEC"});
}

TEST(ProjectSessionSet, OneSessionJoinsOrLeavesItsUsersSet) {
    SessionState s = ada_session();
    KeyState live = project_session(s, "app:", kNow, 0);
    auto change = session_set_change(s, live, "app:");
    ASSERT_TRUE(change);
    EXPECT_TRUE(change->add);
    EXPECT_EQ(change->key, "app:user_sessions:user_1");
    EXPECT_EQ(change->expire_at_ms, kNow + 3600 * 1000);
    EXPECT_EQ(session_set_command(*change, kNow),
              (std::vector<std::string>{
                  "EVAL", kAddToSessionSetScript, "1", "app:user_sessions:user_1", "sess_1",
                  std::to_string(kNow + 3600 * 1000), std::to_string(3600 * 1000)}));

    s.status = "revoked";
    change = session_set_change(s, project_session(s, "app:", kNow, 0), "app:");
    ASSERT_TRUE(change);
    EXPECT_FALSE(change->add);
    EXPECT_EQ(session_set_command(*change, kNow),
              (std::vector<std::string>{"SREM", "app:user_sessions:user_1", "sess_1"}));

    // No user row yet: the user's projection writes the set when it comes.
    SessionState orphan = live_session();
    orphan.user_status = UserStatus::unknown;
    EXPECT_FALSE(session_set_change(orphan, project_session(orphan, "", kNow, 0), ""));
}

// A user change that leaves the sessions live rewrites the copy in place:
// every copied field deleted, then the new ones set, guarded by user_id.
TEST(RedisCommands, CopyRewriteDeletesEveryCopiedFieldFirst) {
    UserState u = ada();
    u.email.reset();
    auto cmd = copy_user_fields_command("sess:sess_1", "user_1", session_user_fields(&u));
    EXPECT_EQ(cmd,
              (std::vector<std::string>{
                  "EVAL", kCopyUserFieldsScript, "1", "sess:sess_1", "user_1", "5", "user_status",
                  "role", "roles", "db_id", "email", "user_status", "active", "db_id", u.db_id,
                  "role", "admin", "roles", "admin org_2acme/org:admin org_2globex/org:member"}));
}

}  // namespace
}  // namespace syncd
