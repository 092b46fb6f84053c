#include "core/revocation.hpp"

#include <gtest/gtest.h>

namespace session::core {
namespace {

TEST(ParseRevocation, Session) {
    auto r = parse_revocation("session sess_2abc");
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->kind, RevocationKind::session);
    EXPECT_EQ(r->id, "sess_2abc");
}

TEST(ParseRevocation, User) {
    auto r = parse_revocation("user user_29w83");
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->kind, RevocationKind::user);
    EXPECT_EQ(r->id, "user_29w83");
}

TEST(ParseRevocation, RejectsOtherShapes) {
    EXPECT_FALSE(parse_revocation(""));
    EXPECT_FALSE(parse_revocation("session"));
    EXPECT_FALSE(parse_revocation("session "));
    EXPECT_FALSE(parse_revocation("user "));
    EXPECT_FALSE(parse_revocation("Session sess_1"));
    EXPECT_FALSE(parse_revocation("org org_1"));
    EXPECT_FALSE(parse_revocation("session sess_1 extra"));
    EXPECT_FALSE(parse_revocation("session  sess_1"));
    EXPECT_FALSE(parse_revocation("session sess_1\n"));
    EXPECT_FALSE(parse_revocation(std::string_view("user u\0x", 8)));
}

}  // namespace
}  // namespace session::core
