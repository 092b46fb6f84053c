#include "core/backfill_page.hpp"

#include <gtest/gtest.h>

namespace syncd::backfill {
namespace {

ListedObject obj(const std::string& id, std::int64_t created) {
    ListedObject o;
    o.id = id;
    o.created_at_ms = created;
    o.updated_at_ms = created;
    return o;
}

std::vector<ListedObject> run(int from, int to) {  // ids u<from>..u<to-1>, created_at = n
    std::vector<ListedObject> out;
    for (int i = from; i < to; ++i) out.push_back(obj("u" + std::to_string(i), i));
    return out;
}

TEST(DecodeListPage, BareArrayOfUsersAsWebhooksDecodeThem) {
    auto page = decode_list_page(
        R"([{"id":"user_1","updated_at":20,"created_at":10,"public_metadata":{"role":"admin"},
             "banned":true,"primary_email_address_id":"e1",
             "email_addresses":[{"id":"e1","email_address":"a@example.com"}]},
            {"id":"user_2","created_at":11}])",
        Kind::users);
    ASSERT_EQ(page.objects.size(), 2u);
    EXPECT_FALSE(page.total_count);
    const auto& u = std::get<UserRow>(*page.objects[0].change);
    EXPECT_EQ(u.clerk_id, "user_1");
    EXPECT_EQ(u.role, "admin");
    EXPECT_TRUE(u.banned);
    EXPECT_EQ(u.email, "a@example.com");
    EXPECT_EQ(page.objects[0].created_at_ms, 10);
    // No updated_at: not decodable, reported, not thrown.
    EXPECT_FALSE(page.objects[1].change);
    EXPECT_EQ(page.objects[1].id, "user_2");
    EXPECT_NE(page.objects[1].error.find("updated_at"), std::string::npos);
}

TEST(DecodeListPage, EnvelopeWithTotalAndSessionStatus) {
    auto page = decode_list_page(
        R"({"data":[{"id":"sess_1","user_id":"user_1","status":"active","updated_at":5,
                     "expire_at":99}],"total_count":41})",
        Kind::sessions);
    EXPECT_EQ(page.total_count, 41);
    const auto& s = std::get<SessionRow>(*page.objects.at(0).change);
    EXPECT_EQ(s.status, "active");
    EXPECT_EQ(s.clerk_user_id, "user_1");
}

TEST(DecodeListPage, MembershipsAndOrganizations) {
    auto m = decode_list_page(
        R"({"data":[{"id":"orgmem_1","role":"org:admin","updated_at":3,
            "organization":{"id":"org_1","slug":"acme"},
            "public_user_data":{"user_id":"user_1"}}],"total_count":1})",
        Kind::memberships);
    EXPECT_EQ(std::get<MembershipRow>(*m.objects.at(0).change).organization_id, "org_1");
    EXPECT_FALSE(std::get<MembershipRow>(*m.objects.at(0).change).deleted);
    auto o = decode_list_page(R"({"data":[{"id":"org_1","slug":"acme","updated_at":3}]})",
                              Kind::organizations);
    EXPECT_EQ(std::get<OrganizationRow>(*o.objects.at(0).change).slug, "acme");
}

TEST(DecodeListPage, RejectsWhatIsNoList) {
    EXPECT_THROW(decode_list_page("nope", Kind::users), DecodeError);
    EXPECT_THROW(decode_list_page(R"({"errors":[]})", Kind::users), DecodeError);
    EXPECT_THROW(decode_list_page("42", Kind::users), DecodeError);
    EXPECT_EQ(decode_total_count(R"({"object":"total_count","total_count":7})"), 7);
    EXPECT_THROW(decode_total_count("[]"), DecodeError);
}

TEST(Advance, PagesOverlapByOneObject) {
    ListCursor c;
    EXPECT_EQ(request_offset(c), 0);
    auto s = advance(c, 0, run(0, 5), 5);
    EXPECT_EQ(s.take.size(), 5u);
    EXPECT_FALSE(s.last_page);
    EXPECT_EQ(s.next.offset, 5);
    EXPECT_EQ(s.next.last_id, "u4");
    EXPECT_EQ(request_offset(s.next), 4);
    auto s2 = advance(s.next, 4, run(4, 9), 5);  // u4 again first
    EXPECT_FALSE(s2.step_back_to);
    ASSERT_EQ(s2.take.size(), 4u);
    EXPECT_EQ(s2.take.front(), 1u);
    EXPECT_EQ(s2.next.offset, 9);
    auto s3 = advance(s2.next, 8, run(8, 10), 5);
    EXPECT_TRUE(s3.last_page);
    EXPECT_EQ(s3.take.size(), 1u);
}

TEST(Advance, DeletionsBeforeTheCursorStepBackInsteadOfSkipping) {
    ListCursor c{10, "u9", 9};
    // u2 and u5 were deleted: position 9 now holds u11, u10 sits at 8.
    std::vector<ListedObject> listing;
    for (int i = 0; i < 20; ++i) {
        if (i != 2 && i != 5) listing.push_back(obj("u" + std::to_string(i), i));
    }
    auto at = [&](std::int64_t off, int limit) {
        return std::vector<ListedObject>(
            listing.begin() + off,
            listing.begin() + std::min<std::int64_t>(off + limit, listing.size()));
    };
    auto s = advance(c, 9, at(9, 5), 5);
    ASSERT_TRUE(s.step_back_to);
    EXPECT_EQ(*s.step_back_to, 5);
    auto s2 = advance(c, 5, at(5, 5), 5);  // starts with u7, older than u9
    EXPECT_FALSE(s2.step_back_to);
    std::vector<std::string> taken;
    for (auto i : s2.take) taken.push_back(at(5, 5)[i].id);
    EXPECT_EQ(taken, (std::vector<std::string>{"u10", "u11"}));  // u10 not skipped
    EXPECT_EQ(s2.next.offset, 10);
    EXPECT_EQ(s2.next.last_id, "u11");
}

TEST(Advance, EverythingGoneEndsTheKind) {
    ListCursor c{4, "u3", 3};
    auto s = advance(c, 3, {}, 5);
    ASSERT_TRUE(s.step_back_to);
    auto s2 = advance(c, *s.step_back_to, {}, 5);
    EXPECT_TRUE(s2.last_page);
    EXPECT_TRUE(s2.take.empty());
}

TEST(Tally, ComparesWithTheStoredVersion) {
    EXPECT_EQ(tally(std::nullopt, true, 5), Tally::created);
    EXPECT_EQ(tally(StoredVersion{4, false}, true, 5), Tally::updated);
    EXPECT_EQ(tally(StoredVersion{5, false}, false, 5), Tally::unchanged);
    EXPECT_EQ(tally(StoredVersion{6, false}, false, 5), Tally::stale);
    EXPECT_EQ(tally(StoredVersion{5, true}, false, 5), Tally::stale);  // deleted: never revived
}

TEST(Since, TimesAndDurations) {
    EXPECT_EQ(parse_since("2026-11-01T00:00:00Z", 0), 1793491200000LL);
    EXPECT_EQ(parse_since("2026-11-01", 0), 1793491200000LL);
    EXPECT_EQ(parse_since("36h", 200000000), 200000000 - 36 * 3600 * 1000LL);
    EXPECT_THROW(parse_since("yesterday", 0), ConfigError);
}

}  // namespace
}  // namespace syncd::backfill
