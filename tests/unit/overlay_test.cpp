// JWT mode's overlay verdict, organization gates, the overlay cache entry
// and the cache key of a verified token.
#include "core/overlay.hpp"

#include <gtest/gtest.h>

#include <vector>

#include "core/flat_record.hpp"

namespace session::core {
namespace {

constexpr std::int64_t kNow = 1'800'000'000'000;  // ms

void set(LookupRecord& r, SessionField f, std::string_view v) {
    r.session[static_cast<std::size_t>(f)] = v;
}
void set(LookupRecord& r, UserField f, std::string_view v) {
    r.user[static_cast<std::size_t>(f)] = v;
}

LookupRecord live_session(std::string_view user_id = "user_1") {
    LookupRecord r;
    set(r, SessionField::user_id, user_id);
    set(r, SessionField::expires_at, "1800000060000");
    set(r, SessionField::status, "active");
    return r;
}

TEST(Overlay, NoHashesPassesWhenOptionalAndFailsWhenRequired) {
    LookupRecord none;
    EXPECT_EQ(evaluate_overlay(none, "user_1", JwtSessionMode::optional, kNow), Outcome::ok);
    EXPECT_EQ(evaluate_overlay(none, "user_1", JwtSessionMode::required, kNow), Outcome::invalid);
}

TEST(Overlay, ActiveSessionPassesInBothModes) {
    EXPECT_EQ(evaluate_overlay(live_session(), "user_1", JwtSessionMode::optional, kNow),
              Outcome::ok);
    EXPECT_EQ(evaluate_overlay(live_session(), "user_1", JwtSessionMode::required, kNow),
              Outcome::ok);
}

TEST(Overlay, TombstoneRefuses) {
    for (std::string_view status : {"ended", "revoked", "removed", "expired", "abandoned", ""}) {
        LookupRecord tombstone;
        set(tombstone, SessionField::status, status);
        EXPECT_EQ(evaluate_overlay(tombstone, "user_1", JwtSessionMode::optional, kNow),
                  Outcome::revoked)
            << status;
        EXPECT_EQ(evaluate_overlay(tombstone, "user_1", JwtSessionMode::required, kNow),
                  Outcome::revoked)
            << status;
    }
}

TEST(Overlay, UserThatIsNotActiveRefusesEvenWithoutSessionHash) {
    for (std::string_view status : {"banned", "deleted", "suspended", "Active"}) {
        LookupRecord user_only;
        set(user_only, UserField::status, status);
        EXPECT_EQ(evaluate_overlay(user_only, "user_1", JwtSessionMode::optional, kNow),
                  Outcome::revoked)
            << status;
        LookupRecord both = live_session();
        set(both, UserField::status, status);
        EXPECT_EQ(evaluate_overlay(both, "user_1", JwtSessionMode::optional, kNow),
                  Outcome::revoked)
            << status;
    }
    LookupRecord active_user;
    set(active_user, UserField::status, "active");
    EXPECT_EQ(evaluate_overlay(active_user, "user_1", JwtSessionMode::optional, kNow), Outcome::ok);
}

TEST(Overlay, ControlByteInEitherHashIsInvalid) {
    for (JwtSessionMode mode : {JwtSessionMode::optional, JwtSessionMode::required}) {
        LookupRecord user_side = live_session();
        set(user_side, UserField::email, "a@example.com\r\nX-Evil: 1");
        EXPECT_EQ(evaluate_overlay(user_side, "user_1", mode, kNow), Outcome::invalid);
        // Also when only the user hash exists, and before its status.
        LookupRecord user_only;
        set(user_only, UserField::status, "banned");
        set(user_only, UserField::roles, "admin\tacme/org:admin");
        EXPECT_EQ(evaluate_overlay(user_only, "user_1", mode, kNow), Outcome::invalid);
        LookupRecord session_side = live_session();
        set(session_side, SessionField::token_type, "jwt\x7f");
        EXPECT_EQ(evaluate_overlay(session_side, "user_1", mode, kNow), Outcome::invalid);
    }
}

TEST(Overlay, SessionOfAnotherUserRefuses) {
    EXPECT_EQ(evaluate_overlay(live_session("user_2"), "user_1", JwtSessionMode::optional, kNow),
              Outcome::revoked);
}

TEST(Overlay, SessionExpiryInRedisCounts) {
    LookupRecord r = live_session();
    set(r, SessionField::expires_at, "1800000000000");  // == now: no longer valid
    EXPECT_EQ(evaluate_overlay(r, "user_1", JwtSessionMode::optional, kNow), Outcome::expired);
    set(r, SessionField::expires_at, "soon");
    EXPECT_EQ(evaluate_overlay(r, "user_1", JwtSessionMode::optional, kNow), Outcome::invalid);
}

TEST(Overlay, IdentityFromClaimsOnlyWithoutUserHash) {
    SessionClaims claims;
    claims.role = "admin";
    claims.roles = "admin billing";
    LookupRecord without_user = live_session();
    fill_identity_from_claims(claims, without_user);
    EXPECT_EQ(without_user.get(UserField::role), "admin");
    EXPECT_EQ(without_user.get(UserField::roles), "admin billing");
    EXPECT_TRUE(has_role(without_user, "billing"));

    LookupRecord with_user = live_session();
    set(with_user, UserField::role, "member");
    set(with_user, UserField::db_id, "42");
    fill_identity_from_claims(claims, with_user);
    EXPECT_EQ(with_user.get(UserField::role), "member");  // Redis (PostgreSQL) wins
    EXPECT_FALSE(with_user.get(UserField::roles).has_value());
    EXPECT_FALSE(has_role(with_user, "admin"));
}

TEST(Overlay, NoRoleClaimLeavesRolesAbsent) {
    SessionClaims claims;
    LookupRecord r = live_session();
    fill_identity_from_claims(claims, r);
    EXPECT_FALSE(r.get(UserField::role).has_value());
    EXPECT_FALSE(has_role(r, "admin"));
}

TEST(OrgPolicy, RoleMatchesWithOrWithoutPrefix) {
    SessionClaims claims;
    claims.org_role = "org:admin";
    std::vector<std::string_view> plain{"admin"};
    std::vector<std::string_view> prefixed{"org:admin"};
    std::vector<std::string_view> other{"member", "billing"};
    OrgPolicy policy;
    policy.roles = plain.data();
    policy.role_count = plain.size();
    EXPECT_TRUE(org_policy_allows(claims, policy));
    policy.roles = prefixed.data();
    EXPECT_TRUE(org_policy_allows(claims, policy));
    policy.roles = other.data();
    policy.role_count = other.size();
    EXPECT_FALSE(org_policy_allows(claims, policy));
}

TEST(OrgPolicy, NoActiveOrganizationFailsAnyGate) {
    SessionClaims claims;  // no org
    std::vector<std::string_view> roles{"admin"};
    std::vector<std::string_view> permissions{"org:billing:read"};
    OrgPolicy role_gate;
    role_gate.roles = roles.data();
    role_gate.role_count = 1;
    EXPECT_FALSE(org_policy_allows(claims, role_gate));
    OrgPolicy permission_gate;
    permission_gate.permissions = permissions.data();
    permission_gate.permission_count = 1;
    EXPECT_FALSE(org_policy_allows(claims, permission_gate));
    EXPECT_TRUE(org_policy_allows(claims, OrgPolicy{}));
}

TEST(OrgPolicy, PermissionMatchesWholeWords) {
    SessionClaims claims;
    claims.org_role = "org:member";
    claims.org_permissions = "org:billing:read org:billing:manage";
    std::vector<std::string_view> wanted{"org:billing:manage"};
    std::vector<std::string_view> partial{"org:billing", "billing:read", "org:billing:rea"};
    OrgPolicy policy;
    policy.permissions = wanted.data();
    policy.permission_count = wanted.size();
    EXPECT_TRUE(org_policy_allows(claims, policy));
    policy.permissions = partial.data();
    policy.permission_count = partial.size();
    EXPECT_FALSE(org_policy_allows(claims, policy));
}

TEST(OrgPolicy, BothGatesMustHold) {
    SessionClaims claims;
    claims.org_role = "org:admin";
    claims.org_permissions = "org:billing:read";
    std::vector<std::string_view> roles{"admin"};
    std::vector<std::string_view> permissions{"org:billing:manage"};
    OrgPolicy policy{roles.data(), 1, permissions.data(), 1};
    EXPECT_FALSE(org_policy_allows(claims, policy));
    claims.org_permissions = "org:billing:manage";
    EXPECT_TRUE(org_policy_allows(claims, policy));
}

TEST(OverlayFlat, RoundTripKeepsSubjectAndRecord) {
    LookupRecord r = live_session();
    set(r, UserField::email, "a@example.com");
    std::vector<unsigned char> buf(overlay_flat_size("user_1", r));
    overlay_flat_encode("user_1", r, buf.data());
    std::string_view sub;
    LookupRecord back;
    ASSERT_TRUE(overlay_flat_decode(buf.data(), buf.size(), sub, back));
    EXPECT_EQ(sub, "user_1");
    EXPECT_EQ(back.get(SessionField::user_id), "user_1");
    EXPECT_EQ(back.get(UserField::email), "a@example.com");
    EXPECT_FALSE(back.get(UserField::role).has_value());
    ASSERT_TRUE(overlay_flat_subject(buf.data(), buf.size(), sub));
    EXPECT_EQ(sub, "user_1");
}

TEST(OverlayFlat, TruncationIsRefusedAtEveryLength) {
    LookupRecord r = live_session();
    std::vector<unsigned char> buf(overlay_flat_size("user_1", r));
    overlay_flat_encode("user_1", r, buf.data());
    for (std::size_t len = 0; len < buf.size(); ++len) {
        std::string_view sub;
        LookupRecord back;
        EXPECT_FALSE(overlay_flat_decode(buf.data(), len, sub, back)) << len;
    }
}

TEST(TokenDigest, DependsOnVerifierAndToken) {
    std::array<unsigned char, 32> a{}, b{};
    b[0] = 1;
    std::array<unsigned char, 32> d1, d2, d3, d4;
    ASSERT_TRUE(token_digest(a, "eyJ.token.one", d1));
    ASSERT_TRUE(token_digest(a, "eyJ.token.one", d2));
    ASSERT_TRUE(token_digest(b, "eyJ.token.one", d3));
    ASSERT_TRUE(token_digest(a, "eyJ.token.two", d4));
    EXPECT_EQ(d1, d2);
    EXPECT_NE(d1, d3);
    EXPECT_NE(d1, d4);
}

}  // namespace
}  // namespace session::core
