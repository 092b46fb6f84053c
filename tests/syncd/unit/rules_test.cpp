#include <gtest/gtest.h>

#include "core/rules.hpp"

namespace syncd {
namespace {

TEST(UserRules, InsertWhenAbsent) {
    EXPECT_EQ(decide_user(std::nullopt, 10, "user", false).decision, Decision::insert);
}

TEST(UserRules, NewerUpdates) {
    StoredUser s{false, 10, "user", false};
    auto v = decide_user(s, 11, "user", false);
    EXPECT_EQ(v.decision, Decision::update);
    EXPECT_FALSE(v.revoke);
    EXPECT_FALSE(v.cascade);
}

TEST(UserRules, OlderOrEqualIsStale) {
    StoredUser s{false, 10, "user", false};
    EXPECT_EQ(decide_user(s, 9, "admin", false).decision, Decision::stale);
    EXPECT_EQ(decide_user(s, 10, "admin", false).decision, Decision::stale);
}

TEST(UserRules, DeletedIsFinal) {
    StoredUser s{true, 0, "user", false};
    EXPECT_EQ(decide_user(s, 999999, "user", false).decision, Decision::final);
}

TEST(UserRules, RoleChangeAndBanRevoke) {
    StoredUser s{false, 10, "user", false};
    EXPECT_TRUE(decide_user(s, 11, "admin", false).revoke);
    auto ban = decide_user(s, 11, "user", true);
    EXPECT_TRUE(ban.revoke);
    EXPECT_TRUE(ban.cascade);
    StoredUser banned{false, 10, "user", true};
    auto unban = decide_user(banned, 11, "user", false);
    EXPECT_FALSE(unban.revoke);
    EXPECT_TRUE(unban.cascade);  // the sessions come back
}

TEST(SessionRules, Ordering) {
    EXPECT_EQ(decide_session(std::nullopt, "active", 1), Decision::insert);
    StoredSession active{"active", 10};
    EXPECT_EQ(decide_session(active, "active", 11), Decision::update);
    EXPECT_EQ(decide_session(active, "active", 10), Decision::stale);
    EXPECT_EQ(decide_session(active, "ended", 9), Decision::stale);
    // Equal time: ending wins, so that a revocation is never lost to a tie.
    EXPECT_EQ(decide_session(active, "revoked", 10), Decision::update);
}

TEST(SessionRules, FinalStatusesAreNeverUndone) {
    for (const char* s : {"ended", "expired", "removed", "replaced", "revoked", "abandoned"}) {
        EXPECT_TRUE(is_final_session_status(s)) << s;
        StoredSession stored{s, 10};
        EXPECT_EQ(decide_session(stored, "active", 20), Decision::final) << s;
    }
    EXPECT_FALSE(is_final_session_status("active"));
    EXPECT_FALSE(is_final_session_status("pending"));
    StoredSession pending{"pending", 10};
    EXPECT_EQ(decide_session(pending, "active", 11), Decision::update);
}

TEST(MembershipRules, Ordering) {
    EXPECT_EQ(decide_membership(std::nullopt, "org:admin", false, 1).decision, Decision::insert);
    StoredMembership m{false, 10, "org:member"};
    auto promote = decide_membership(m, "org:admin", false, 11);
    EXPECT_EQ(promote.decision, Decision::update);
    EXPECT_TRUE(promote.revoke);
    EXPECT_FALSE(decide_membership(m, "org:member", false, 11).revoke);
    EXPECT_EQ(decide_membership(m, "org:admin", false, 10).decision, Decision::stale);
    auto removed = decide_membership(m, "org:member", true, 5);
    EXPECT_EQ(removed.decision, Decision::update);
    EXPECT_TRUE(removed.revoke);
    StoredMembership gone{true, 10, "org:member"};
    EXPECT_EQ(decide_membership(gone, "org:admin", false, 50).decision, Decision::final);
}

// Item 11: only the version that bans ends the sessions; an unban, or an
// update of a user already banned, ends none (and revives none).
TEST(UserRules, BanEndsSessionsUnbanDoesNot) {
    StoredUser active{false, 10, "user", false};
    EXPECT_TRUE(decide_user(active, 11, "user", true).end_sessions);
    EXPECT_FALSE(decide_user(active, 11, "user", false).end_sessions);
    EXPECT_TRUE(decide_user(std::nullopt, 11, "user", true).end_sessions);
    EXPECT_FALSE(decide_user(std::nullopt, 11, "user", false).end_sessions);
    StoredUser banned{false, 10, "user", true};
    EXPECT_FALSE(decide_user(banned, 11, "user", true).end_sessions);
    EXPECT_FALSE(decide_user(banned, 11, "user", false).end_sessions);
    EXPECT_FALSE(decide_user(active, 9, "user", true).end_sessions);  // stale
}

// Item 15: a ban and an unban with the same updated_at cannot be ordered;
// the ban wins, whichever of the two arrives second.
TEST(UserRules, BanWinsATieWithAnUnban) {
    StoredUser unbanned{false, 10, "user", false};
    auto ban = decide_user(unbanned, 10, "user", true);
    EXPECT_EQ(ban.decision, Decision::update);
    EXPECT_TRUE(ban.revoke);
    EXPECT_TRUE(ban.cascade);
    EXPECT_TRUE(ban.end_sessions);
    StoredUser banned{false, 10, "user", true};
    EXPECT_EQ(decide_user(banned, 10, "user", false).decision, Decision::stale);
    // Any other tie stays stale: the same state, or an older version.
    EXPECT_EQ(decide_user(banned, 10, "user", true).decision, Decision::stale);
    EXPECT_EQ(decide_user(unbanned, 10, "admin", false).decision, Decision::stale);
    EXPECT_EQ(decide_user(unbanned, 9, "user", true).decision, Decision::stale);
    StoredUser deleted{true, 10, "user", false};
    EXPECT_EQ(decide_user(deleted, 10, "user", true).decision, Decision::final);
}

TEST(OrganizationRules, NewerWinsDeletionIsFinal) {
    EXPECT_EQ(decide_organization(std::nullopt, 10), Decision::insert);
    StoredOrganization live{false, 10};
    EXPECT_EQ(decide_organization(live, 11), Decision::update);
    EXPECT_EQ(decide_organization(live, 10), Decision::stale);
    EXPECT_EQ(decide_organization(live, 9), Decision::stale);
    StoredOrganization deleted{true, 10};
    EXPECT_EQ(decide_organization(deleted, 99), Decision::final);
}

}  // namespace
}  // namespace syncd
