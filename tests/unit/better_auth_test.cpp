// better-auth mode's pure logic: the signed cookie, the stored JSON, and the
// record the verdict is made on. The vectors were made by better-auth
// 1.7.25 itself (tests/better_auth/app.mjs) and by Python's hmac module.
#include "core/better_auth.hpp"

#include <gtest/gtest.h>

#include <string>

namespace session::core {
namespace {

constexpr std::string_view kSecret = "test-secret-0123456789abcdef0123456789abcdef";
constexpr std::string_view kToken = "cfnnG9DlFVgnGRQ0gTClIqMIEnVVE1ST";
// What better-auth set (after percent-decoding its Set-Cookie value).
constexpr std::string_view kSignature = "mLot148hZCn77T+FVVAE1iFVHjRgpUCDWYfdnmTGrxE=";

// The JSON better-auth 1.7.25 stored under kToken (secondaryStorage).
const std::string kStored =
    R"({"session":{"id":"7o6NskewFWBcIdMDRwtEYpGv61La033z","ipAddress":"","userAgent":"curl/7.88.1",)"
    R"("expiresAt":"2026-12-07T14:20:45.646Z","userId":"CJKcU3R3GGanuQLPDbzJbK7ufiYoySE4",)"
    R"("token":"cfnnG9DlFVgnGRQ0gTClIqMIEnVVE1ST","createdAt":"2026-11-30T14:20:45.646Z",)"
    R"("updatedAt":"2026-11-30T14:20:45.646Z"},"user":{"name":"Ada","email":"a@example.com",)"
    R"("emailVerified":false,"createdAt":"2026-11-30T14:20:44.884Z","updatedAt":)"
    R"("2026-11-30T14:20:52.600Z","role":"admin,editor","banned":false,)"
    R"("id":"CJKcU3R3GGanuQLPDbzJbK7ufiYoySE4"}})";

std::string replaced(std::string text, std::string_view from, std::string_view to) {
    std::size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    if (at != std::string::npos) text.replace(at, from.size(), to);
    return text;
}

TEST(BetterAuthCookie, SplitsAtTheLastDot) {
    const std::string value = std::string(kToken) + "." + std::string(kSignature);
    auto cookie = split_signed_cookie(value);  // views into `value`
    ASSERT_TRUE(cookie);
    EXPECT_EQ(cookie->token, kToken);
    EXPECT_EQ(cookie->signature, kSignature);
}

TEST(BetterAuthCookie, RefusesWhatBetterCallRefuses) {
    std::string sig(kSignature);
    EXPECT_FALSE(split_signed_cookie(kToken));                                 // no signature
    EXPECT_FALSE(split_signed_cookie("." + sig));                              // no token
    EXPECT_FALSE(split_signed_cookie(std::string(kToken) + "." + sig + "A"));  // 45 characters
    EXPECT_FALSE(split_signed_cookie(std::string(kToken) + "." + sig.substr(0, 43) + "A"));  // no =
    EXPECT_FALSE(split_signed_cookie("to ken." + sig));  // not a token: never a Redis key
    EXPECT_FALSE(split_signed_cookie(""));
}

TEST(BetterAuthCookie, SignatureOfBetterAuthVerifies) {
    EXPECT_TRUE(signature_matches(kToken, kSignature, kSecret));
    EXPECT_EQ(sign_token(kToken, kSecret), kSignature);
}

TEST(BetterAuthCookie, OtherSecretTokenOrSignatureFails) {
    EXPECT_FALSE(signature_matches(kToken, kSignature, "another secret"));
    EXPECT_FALSE(signature_matches("cfnnG9DlFVgnGRQ0gTClIqMIEnVVE1SU", kSignature, kSecret));
    std::string sig(kSignature);
    sig[0] = sig[0] == 'A' ? 'B' : 'A';
    EXPECT_FALSE(signature_matches(kToken, sig, kSecret));
    EXPECT_FALSE(signature_matches(kToken, sig.substr(0, 43), kSecret));
    EXPECT_FALSE(signature_matches(kToken, "", kSecret));
}

TEST(BetterAuthTime, ParsesDateToJson) {
    EXPECT_EQ(parse_iso8601_ms("1970-01-01T00:00:00.000Z"), 0);
    EXPECT_EQ(parse_iso8601_ms("2026-12-07T14:20:45.646Z"), 1796653245646);
    EXPECT_EQ(parse_iso8601_ms("2000-02-29T12:00:00Z"), 951825600000);
    EXPECT_EQ(parse_iso8601_ms("2026-12-07T14:20:45.6Z"), 1796653245600);
    EXPECT_EQ(parse_iso8601_ms("2026-12-07T14:20:45.646999Z"), 1796653245646);
    EXPECT_EQ(parse_iso8601_ms("9999-12-31T23:59:59.999Z"), 253402300799999);
}

TEST(BetterAuthTime, RefusesAnythingElse) {
    for (std::string_view bad :
         {"", "2026-12-07", "2026-12-07T14:20:45", "2026-12-07T14:20:45.646",
          "2026-12-07 14:20:45Z", "2026-12-07T14:20:45.646+01:00", "2026-13-07T14:20:45Z",
          "2026-02-29T00:00:00Z", "2026-12-32T00:00:00Z", "2026-12-07T24:00:00Z",
          "2026-12-07T14:60:00Z", "2026-12-07T14:20:60Z", "1969-12-31T23:59:59Z",
          "2026-12-07T14:20:45.Z", "2026-12-07T14:20:45.646ZZ", "+02026-12-07T14:20:45Z",
          "2026-1a-07T14:20:45Z"}) {
        EXPECT_FALSE(parse_iso8601_ms(bad)) << bad;
    }
}

TEST(BetterAuthJson, DecodesWhatBetterAuthStores) {
    BetterAuthSession s;
    ASSERT_EQ(decode_better_auth(kStored, kToken, s), BetterAuthDecode::ok);
    EXPECT_EQ(s.session_id, "7o6NskewFWBcIdMDRwtEYpGv61La033z");
    EXPECT_EQ(s.user_id, "CJKcU3R3GGanuQLPDbzJbK7ufiYoySE4");
    EXPECT_EQ(s.email, "a@example.com");
    EXPECT_EQ(s.roles, "admin editor");
    EXPECT_EQ(s.expires_at_ms, "1796653245646");
    EXPECT_FALSE(s.banned);
}

TEST(BetterAuthJson, OptionalFieldsMayBeAbsentOrNull) {
    const std::string minimal =
        R"({"session":{"id":"s1","userId":"u1","expiresAt":"2026-12-07T14:20:45.646Z"},)"
        R"("user":{"id":"u1","email":null,"role":null,"banned":null}})";
    BetterAuthSession s;
    ASSERT_EQ(decode_better_auth(minimal, kToken, s), BetterAuthDecode::ok);
    EXPECT_EQ(s.email, "");
    EXPECT_EQ(s.roles, "");
    EXPECT_FALSE(s.banned);
}

TEST(BetterAuthJson, RolesSplitOnCommasAndSpaces) {
    BetterAuthSession s;
    ASSERT_EQ(decode_better_auth(replaced(kStored, R"("role":"admin,editor")",
                                          R"("role":" admin, editor  viewer,")"),
                                 kToken, s),
              BetterAuthDecode::ok);
    EXPECT_EQ(s.roles, "admin editor viewer");
}

TEST(BetterAuthJson, BannedIsRead) {
    BetterAuthSession s;
    ASSERT_EQ(
        decode_better_auth(replaced(kStored, R"("banned":false)", R"("banned":true)"), kToken, s),
        BetterAuthDecode::ok);
    EXPECT_TRUE(s.banned);
}

TEST(BetterAuthJson, RefusesMalformedRecords) {
    const std::pair<std::string_view, std::string_view> edits[] = {
        {R"("id":"7o6NskewFWBcIdMDRwtEYpGv61La033z")", R"("id":7)"},                // session id
        {R"("id":"7o6NskewFWBcIdMDRwtEYpGv61La033z")", R"("id":"")"},               // empty
        {R"("id":"7o6NskewFWBcIdMDRwtEYpGv61La033z")", R"("id":"a\nb")"},           // control byte
        {R"("userId":"CJKcU3R3GGanuQLPDbzJbK7ufiYoySE4")", R"("userId":"other")"},  // mismatch
        {R"("expiresAt":"2026-12-07T14:20:45.646Z")", R"("expiresAt":1796653245646)"},
        {R"("token":"cfnnG9DlFVgnGRQ0gTClIqMIEnVVE1ST")",
         R"("token":"another")"},  // not this key's
        {R"("banned":false)", R"("banned":"yes")"},
        {R"("role":"admin,editor")", R"("role":["admin"])"},
        {R"("email":"a@example.com")", R"("email":{})"},
    };
    BetterAuthSession s;
    for (const auto& [from, to] : edits) {
        EXPECT_EQ(decode_better_auth(replaced(kStored, from, to), kToken, s),
                  BetterAuthDecode::malformed)
            << to;
    }
    for (std::string_view bad : {"", "null", "[]", "not json", R"({"session":{}})",
                                 R"({"session":{},"user":{}})", R"({"session":1,"user":{}})"}) {
        EXPECT_EQ(decode_better_auth(bad, kToken, s), BetterAuthDecode::malformed) << bad;
    }
    EXPECT_EQ(decode_better_auth(std::string(kMaxBetterAuthRecordSize + 1, ' '), kToken, s),
              BetterAuthDecode::malformed);
}

TEST(BetterAuthRecord, JudgedAsTheOpaqueCheckJudges) {
    BetterAuthSession s;
    ASSERT_EQ(decode_better_auth(kStored, kToken, s), BetterAuthDecode::ok);
    LookupRecord record = to_lookup_record(s);
    EXPECT_EQ(record.get(SessionField::user_id), s.user_id);
    EXPECT_EQ(record.get(UserField::db_id), s.user_id);
    EXPECT_EQ(record.get(UserField::role), "admin");
    EXPECT_EQ(record.get(UserField::roles), "admin editor");
    EXPECT_EQ(record.get(UserField::email), "a@example.com");

    const std::int64_t before = 1796653245645, after = 1796653245646;
    EXPECT_EQ(evaluate(record, before, {}).outcome, Outcome::ok);
    EXPECT_EQ(evaluate(record, after, {}).outcome, Outcome::expired);
    const std::string_view admin[] = {"admin"}, viewer[] = {"viewer"};
    Policy policy;
    policy.required_roles = admin;
    policy.required_role_count = 1;
    EXPECT_EQ(evaluate(record, before, policy).outcome, Outcome::ok);
    policy.required_roles = viewer;
    EXPECT_EQ(evaluate(record, before, policy).outcome, Outcome::forbidden);

    s.banned = true;
    EXPECT_EQ(evaluate(to_lookup_record(s), before, {}).outcome, Outcome::revoked);
    s.banned = false;
    s.email = "a@example.com\r\nX-Injected: 1";
    EXPECT_EQ(evaluate(to_lookup_record(s), before, {}).outcome, Outcome::invalid);
}

}  // namespace
}  // namespace session::core
