// The official Standard Webhooks / Svix test vectors (from the reference
// page ../shared/reference/webhooks.md, copied verbatim) and every rejection
// the libraries test.
#include <gtest/gtest.h>

#include <string>

#include "core/config.hpp"
#include "core/signature.hpp"

namespace syncd {
namespace {

const char* kSecret1 = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const char* kId1 = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const char* kTs1 = "1614265330";
const std::int64_t kNow1 = 1614265330;

struct Vector {
    const char* secret;
    const char* id;
    const char* timestamp;
    std::string payload;
    const char* signature;
};

Verdict check(const char* secret, const char* id, const char* ts, const std::string& body,
              const char* signature, std::int64_t now) {
    WebhookHeaders h{std::string_view(id), std::string_view(ts), std::string_view(signature)};
    return verify_signature(parse_secrets("TEST", secret), h, body, now);
}

void expect_vector(const Vector& v) {
    auto keys = parse_secrets("TEST", v.secret);
    ASSERT_EQ(keys.size(), 1u);
    EXPECT_EQ(sign_payload(keys[0], v.id, v.timestamp, v.payload), v.signature);
    std::int64_t now = std::stoll(v.timestamp);
    EXPECT_EQ(check(v.secret, v.id, v.timestamp, v.payload, v.signature, now), Verdict::ok);
    // One bit of the body changed: refused.
    std::string flipped = v.payload;
    flipped[flipped.size() / 2] ^= 1;
    EXPECT_EQ(check(v.secret, v.id, v.timestamp, flipped, v.signature, now),
              Verdict::bad_signature);
}

TEST(OfficialVector, Vector1) {
    expect_vector({kSecret1, kId1, kTs1, R"({"test": 2432232314})",
                   "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="});
}

TEST(OfficialVector, Vector2) {
    expect_vector({"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                   "1649367553", R"({"email":"test@example.com","username":"test_user"})",
                   "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="});
}

TEST(OfficialVector, A262143Times) {
    expect_vector({kSecret1, kId1, kTs1, std::string(262143, 'a'),
                   "v1,NTItnqyWMoFhk2Bbe5V/BMdcFRWgcSQaTgqLHX7FC7c="});
}

TEST(OfficialVector, A262144Times) {
    expect_vector({kSecret1, kId1, kTs1, std::string(262144, 'a'),
                   "v1,Mw4Pe2WgApuT7NSqnSq0PQPV9gbLdggCl9B865x5Xh0="});
}

TEST(OfficialVector, A1048576Times) {
    expect_vector({kSecret1, kId1, kTs1, std::string(1048576, 'a'),
                   "v1,txpEUxqWZJ5nteTnymUVa+7C4NHpBeXJ6CsBAW0c3/A="});
}

// The library tests run with timestamp = now: sign the first payload now.
class Rejections : public ::testing::Test {
  protected:
    std::int64_t now = 1700000000;
    std::string ts = std::to_string(now);
    std::string body = R"({"test": 2432232314})";
    std::string good() { return sign_payload(parse_secrets("T", kSecret1)[0], kId1, ts, body); }
    Verdict verify(std::optional<std::string_view> id, std::optional<std::string_view> t,
                   std::optional<std::string_view> sig) {
        return verify_signature(parse_secrets("T", kSecret1), WebhookHeaders{id, t, sig}, body,
                                now);
    }
};

TEST_F(Rejections, ValidSignatureAccepted) {
    std::string sig = good();
    EXPECT_EQ(verify(kId1, ts, sig), Verdict::ok);
}

TEST_F(Rejections, MissingIdHeader) {
    std::string sig = good();
    EXPECT_EQ(verify(std::nullopt, ts, sig), Verdict::missing_header);
}

TEST_F(Rejections, MissingTimestampHeader) {
    std::string sig = good();
    EXPECT_EQ(verify(kId1, std::nullopt, sig), Verdict::missing_header);
}

TEST_F(Rejections, MissingSignatureHeader) {
    EXPECT_EQ(verify(kId1, ts, std::nullopt), Verdict::missing_header);
}

TEST_F(Rejections, NonNumericTimestamp) {
    std::string sig = good();
    EXPECT_EQ(verify(kId1, "hello", sig), Verdict::bad_timestamp);
}

TEST_F(Rejections, NegativeTimestamp) {
    std::string sig = good();
    EXPECT_EQ(verify(kId1, "-1614265330", sig), Verdict::bad_timestamp);
}

TEST_F(Rejections, GarbageSignature) {
    EXPECT_EQ(verify(kId1, ts, "v1,dawfeoifkpqwoekfpqoekf"), Verdict::bad_signature);
}

TEST_F(Rejections, LastCharacterChanged) {
    std::string sig = good();
    sig.back() = sig.back() == 'A' ? 'B' : 'A';
    EXPECT_EQ(verify(kId1, ts, sig), Verdict::bad_signature);
}

TEST_F(Rejections, TruncatedToEightCharacters) {
    std::string sig = good().substr(0, 8);
    EXPECT_EQ(verify(kId1, ts, sig), Verdict::bad_signature);
}

TEST_F(Rejections, BareVersionPrefix) {
    EXPECT_EQ(verify(kId1, ts, "v1,"), Verdict::bad_signature);
}

TEST_F(Rejections, TooOld) {
    std::string old_ts = std::to_string(now - 301);
    std::string sig = sign_payload(parse_secrets("T", kSecret1)[0], kId1, old_ts, body);
    EXPECT_EQ(verify(kId1, old_ts, sig), Verdict::too_old);
}

TEST_F(Rejections, TooNew) {
    std::string new_ts = std::to_string(now + 301);
    std::string sig = sign_payload(parse_secrets("T", kSecret1)[0], kId1, new_ts, body);
    EXPECT_EQ(verify(kId1, new_ts, sig), Verdict::too_new);
}

TEST_F(Rejections, ToleranceBoundariesIncluded) {
    for (std::int64_t delta : {-300, 300}) {
        std::string edge = std::to_string(now + delta);
        std::string sig = sign_payload(parse_secrets("T", kSecret1)[0], kId1, edge, body);
        EXPECT_EQ(verify(kId1, edge, sig), Verdict::ok) << delta;
    }
}

TEST_F(Rejections, TamperedBody) {
    std::string sig = good();
    body = R"({"test": 2432232315})";
    EXPECT_EQ(verify(kId1, ts, sig), Verdict::bad_signature);
}

TEST_F(Rejections, TamperedId) {
    std::string sig = good();
    EXPECT_EQ(verify("msg_other", ts, sig), Verdict::bad_signature);
}

TEST_F(Rejections, SeveralWrongEntriesAndOneValid) {
    std::string header = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,abc= " + good() +
                         " v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    EXPECT_EQ(verify(kId1, ts, header), Verdict::ok);
}

TEST_F(Rejections, OtherVersionsIgnored) {
    std::string valid = good();
    std::string as_v2 = "v2," + valid.substr(3);
    std::string as_v1a = "v1a," + valid.substr(3);
    EXPECT_EQ(verify(kId1, ts, as_v2), Verdict::bad_signature);
    EXPECT_EQ(verify(kId1, ts, as_v1a + " " + as_v2), Verdict::bad_signature);
}

TEST(Secrets, WithOrWithoutPrefix) {
    auto with = parse_secrets("K", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    auto bare = parse_secrets("K", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    EXPECT_EQ(with, bare);
    EXPECT_EQ(sign_payload(bare[0], kId1, kTs1, R"({"test": 2432232314})"),
              "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

TEST(Secrets, RotationAcceptsEitherKey) {
    const std::string second = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    auto keys = parse_secrets("K", std::string(kSecret1) + "  " + second);
    ASSERT_EQ(keys.size(), 2u);
    std::string body = "{}";
    for (const auto& key : keys) {
        std::string sig = sign_payload(key, kId1, kTs1, body);
        EXPECT_EQ(verify_signature(keys, {kId1, kTs1, sig}, body, kNow1), Verdict::ok);
    }
    std::string old_only = sign_payload(keys[0], kId1, kTs1, body);
    EXPECT_EQ(verify_signature({keys[1]}, {kId1, kTs1, old_only}, body, kNow1),
              Verdict::bad_signature);
}

TEST(Secrets, EmptyIsAConfigurationError) {
    EXPECT_THROW(parse_secrets("K", ""), ConfigError);
    EXPECT_THROW(parse_secrets("K", "   "), ConfigError);
    EXPECT_THROW(parse_secrets("K", "whsec_"), ConfigError);
}

TEST(Secrets, ErrorNamesKeyAndPositionButNotValue) {
    try {
        parse_secrets("SYNCD_WEBHOOK_SECRETS",
                      "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_n0t!b64");
        FAIL() << "accepted an invalid secret";
    } catch (const ConfigError& e) {
        std::string msg = e.what();
        EXPECT_NE(msg.find("SYNCD_WEBHOOK_SECRETS"), std::string::npos);
        EXPECT_NE(msg.find("secret 2"), std::string::npos);
        EXPECT_EQ(msg.find("n0t"), std::string::npos);
        EXPECT_EQ(msg.find("MfKQ9r8"), std::string::npos);
    }
}

TEST(Base64, StrictDecoding) {
    EXPECT_EQ(base64_decode("YWJj"), std::optional<std::string>("abc"));
    EXPECT_EQ(base64_decode("YWI="), std::optional<std::string>("ab"));
    EXPECT_EQ(base64_decode("YQ=="), std::optional<std::string>("a"));
    EXPECT_FALSE(base64_decode("YQ"));
    EXPECT_FALSE(base64_decode("Y!=="));
    EXPECT_FALSE(base64_decode(""));
    EXPECT_FALSE(base64_decode("YW=j"));
    EXPECT_EQ(base64_encode("abc"), "YWJj");
}

}  // namespace
}  // namespace syncd
