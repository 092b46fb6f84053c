#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <string>

#include "core/jwt_key_source.hpp"
#include "core/revocation.hpp"
#include "rsa_test_keys.hpp"

namespace session::core {
namespace {

using namespace session::test_keys;

class JwtKeySourceTest : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        rsa_a_ = EVP_RSA_gen(2048);
        rsa_b_ = EVP_RSA_gen(2048);
    }
    static void TearDownTestSuite() {
        EVP_PKEY_free(rsa_a_);
        EVP_PKEY_free(rsa_b_);
    }
    static std::string jwks(const std::string& a, const std::string& b = "") {
        return "{\"keys\":[" + a + (b.empty() ? "" : "," + b) + "]}";
    }
    static EVP_PKEY* rsa_a_;
    static EVP_PKEY* rsa_b_;
};
EVP_PKEY* JwtKeySourceTest::rsa_a_ = nullptr;
EVP_PKEY* JwtKeySourceTest::rsa_b_ = nullptr;

TEST_F(JwtKeySourceTest, ParsesAJwks) {
    JwtKeys keys;
    std::string error;
    ASSERT_TRUE(parse_redis_jwks(jwks(rsa_jwk(rsa_a_, "a"), rsa_jwk(rsa_b_, "b")), keys, error))
        << error;
    ASSERT_EQ(keys.size(), 2u);
    EXPECT_EQ(keys.keys()[1].kid, "b");
}

TEST_F(JwtKeySourceTest, RefusesWhatIsNotAJwksAndKeepsTheOutput) {
    JwtKeys held;
    std::string error;
    ASSERT_TRUE(parse_redis_jwks(jwks(rsa_jwk(rsa_a_, "a")), held, error)) << error;
    const std::string big(kMaxRedisJwksLength + 1, ' ');
    for (const std::string& bad :
         {std::string(), std::string("  \n"), std::string("{\"keys\": ["), std::string("[]"),
          std::string("{\"keys\": []}"), pem(rsa_b_), "{\"keys\":[" + big + "]}",
          jwks("{\"kty\":\"RSA\",\"kid\":\"x\",\"n\":\"!!\",\"e\":\"AQAB\"}")}) {
        error.clear();
        EXPECT_FALSE(parse_redis_jwks(bad, held, error)) << bad.substr(0, 40);
        EXPECT_FALSE(error.empty());
        ASSERT_EQ(held.size(), 1u);
        EXPECT_EQ(held.keys()[0].kid, "a");
    }
}

TEST_F(JwtKeySourceTest, ErrorsNeverCarryKeyMaterial) {
    JwtKeys keys;
    std::string error;
    const std::string jwk = rsa_jwk(rsa_a_, "a");
    const std::string n = base64url(bn_param(rsa_a_, OSSL_PKEY_PARAM_RSA_N));
    EXPECT_FALSE(parse_redis_jwks(jwks(jwk, jwk), keys, error));  // duplicate kid
    EXPECT_EQ(error.find(n.substr(0, 16)), std::string::npos) << error;
}

TEST_F(JwtKeySourceTest, FilesComeFirstAndShadowTheSameKid) {
    JwtKeys files, redis;
    std::string error;
    ASSERT_TRUE(files.add(jwks(rsa_jwk(rsa_a_, "shared")), error)) << error;
    ASSERT_TRUE(redis.add(jwks(rsa_jwk(rsa_b_, "shared"), rsa_jwk(rsa_b_, "only_redis")), error))
        << error;
    JwtKeys combined = combine_keys(&files, redis);
    ASSERT_EQ(combined.size(), 2u);
    EXPECT_EQ(combined.keys()[0].kid, "shared");
    EXPECT_EQ(EVP_PKEY_eq(combined.keys()[0].pkey.get(), rsa_a_), 1);
    EXPECT_EQ(combined.keys()[1].kid, "only_redis");
    // The fingerprint follows the combination (cached verdicts are bound to it).
    EXPECT_NE(combined.fingerprint(), files.fingerprint());

    JwtKeys alone = combine_keys(nullptr, redis);
    EXPECT_EQ(alone.size(), 2u);
    EXPECT_EQ(combine_keys(nullptr, JwtKeys()).size(), 0u);
}

TEST_F(JwtKeySourceTest, KidlessKeys) {
    JwtKeys pem_keys, jwk_keys;
    std::string error;
    ASSERT_TRUE(pem_keys.add(pem(rsa_a_), error)) << error;
    ASSERT_TRUE(jwk_keys.add(jwks(rsa_jwk(rsa_b_, "b")), error)) << error;
    EXPECT_TRUE(has_kidless_key(pem_keys));
    EXPECT_FALSE(has_kidless_key(jwk_keys));
    EXPECT_TRUE(has_kidless_key(combine_keys(&pem_keys, jwk_keys)));
    // A PEM key and a JWK without kid are both kept by a merge.
    JwtKeys both = combine_keys(&pem_keys, pem_keys);
    EXPECT_EQ(both.size(), 2u);
}

TEST(MayBeUnknownKid, OnlyAMissingKeyOrAKidlessStandIn) {
    EXPECT_TRUE(may_be_unknown_kid(JwtError::unknown_key, false));
    EXPECT_TRUE(may_be_unknown_kid(JwtError::unknown_key, true));
    EXPECT_FALSE(may_be_unknown_kid(JwtError::signature, false));
    EXPECT_TRUE(may_be_unknown_kid(JwtError::signature, true));
    for (JwtError other : {JwtError::none, JwtError::malformed, JwtError::algorithm,
                           JwtError::expired, JwtError::issuer}) {
        EXPECT_FALSE(may_be_unknown_kid(other, true));
    }
}

TEST(KeyReadGate, OneReadInFlightThenOnePerInterval) {
    using D = KeyReadGate::Decision;
    KeyReadGate gate;
    EXPECT_EQ(gate.on_unknown_kid(1000), D::read);  // never read
    gate.started(1000);
    EXPECT_TRUE(gate.in_flight());
    EXPECT_EQ(gate.on_unknown_kid(1001), D::join);
    EXPECT_EQ(gate.on_unknown_kid(1000 + kUnknownKidReadIntervalMs + 5), D::join);
    gate.finished();
    EXPECT_EQ(gate.on_unknown_kid(1002), D::refuse);
    EXPECT_EQ(gate.on_unknown_kid(1000 + kUnknownKidReadIntervalMs - 1), D::refuse);
    EXPECT_EQ(gate.on_unknown_kid(1000 + kUnknownKidReadIntervalMs), D::read);
    // Any read counts, not only those of unknown kids.
    gate.started(50000);
    gate.finished();
    EXPECT_EQ(gate.on_unknown_kid(55000), D::refuse);
    // A clock that steps back does not open the gate.
    EXPECT_EQ(gate.on_unknown_kid(40000), D::refuse);
}

TEST(ParseRevocation, KeysMessage) {
    auto keys = parse_revocation("keys");
    ASSERT_TRUE(keys);
    EXPECT_EQ(keys->kind, RevocationKind::keys);
    EXPECT_TRUE(keys->id.empty());
    EXPECT_FALSE(parse_revocation("keys "));
    EXPECT_FALSE(parse_revocation("keys x"));
    EXPECT_FALSE(parse_revocation("Keys"));
    EXPECT_FALSE(parse_revocation("keys\n"));
}

}  // namespace
}  // namespace session::core
