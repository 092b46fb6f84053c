#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <string>
#include <vector>

#include "core/jwt.hpp"
#include "rsa_test_keys.hpp"

namespace session::core {
namespace {

using namespace session::test_keys;

const std::string kEcJwk =
    R"({"kty":"EC","kid":"ec1","use":"sig","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"})";

class JwtKeysTest : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        rsa_a_ = EVP_RSA_gen(2048);
        rsa_b_ = EVP_RSA_gen(2048);
        rsa_small_ = EVP_RSA_gen(1024);
        ec_ = EVP_EC_gen("P-256");
    }
    static void TearDownTestSuite() {
        for (EVP_PKEY* key : {rsa_a_, rsa_b_, rsa_small_, ec_}) EVP_PKEY_free(key);
    }
    static EVP_PKEY* rsa_a_;
    static EVP_PKEY* rsa_b_;
    static EVP_PKEY* rsa_small_;
    static EVP_PKEY* ec_;
};
EVP_PKEY* JwtKeysTest::rsa_a_ = nullptr;
EVP_PKEY* JwtKeysTest::rsa_b_ = nullptr;
EVP_PKEY* JwtKeysTest::rsa_small_ = nullptr;
EVP_PKEY* JwtKeysTest::ec_ = nullptr;

TEST_F(JwtKeysTest, JwksWithTwoKeys) {
    JwtKeys keys;
    std::string error;
    const std::string jwks = "{\"keys\":[" + rsa_jwk(rsa_a_, "k1", ",\"alg\":\"RS256\"") + "," +
                             rsa_jwk(rsa_b_, "k2") + "]}";
    ASSERT_TRUE(keys.add(jwks, error)) << error;
    ASSERT_EQ(keys.size(), 2u);
    EXPECT_EQ(keys.keys()[0].kid, "k1");
    EXPECT_EQ(keys.keys()[0].alg, "RS256");
    EXPECT_EQ(keys.keys()[1].kid, "k2");
    EXPECT_EQ(keys.keys()[1].alg, "");
    EXPECT_EQ(EVP_PKEY_eq(keys.keys()[0].pkey.get(), rsa_a_), 1);
    EXPECT_EQ(EVP_PKEY_eq(keys.keys()[1].pkey.get(), rsa_b_), 1);
}

TEST_F(JwtKeysTest, SingleJwk) {
    JwtKeys keys;
    std::string error;
    ASSERT_TRUE(keys.add("\n  " + rsa_jwk(rsa_a_, "only") + "\n", error)) << error;
    ASSERT_EQ(keys.size(), 1u);
    EXPECT_EQ(keys.keys()[0].kid, "only");
}

TEST_F(JwtKeysTest, EcAndEncryptionKeysAreSkipped) {
    JwtKeys keys;
    std::string error;
    std::string enc = rsa_jwk(rsa_b_, "enc1");
    enc.replace(enc.find("\"sig\""), 5, "\"enc\"");
    const std::string jwks = "{\"keys\":[" + kEcJwk + "," + enc + "," + rsa_jwk(rsa_a_, "k1") +
                             "," + rsa_jwk(rsa_b_, "ps", ",\"alg\":\"PS256\"") + "]}";
    ASSERT_TRUE(keys.add(jwks, error)) << error;
    ASSERT_EQ(keys.size(), 1u);
    EXPECT_EQ(keys.keys()[0].kid, "k1");
}

TEST_F(JwtKeysTest, OnlyEcKeysIsAnError) {
    JwtKeys keys;
    std::string error;
    EXPECT_FALSE(keys.add("{\"keys\":[" + kEcJwk + "]}", error));
    EXPECT_NE(error.find("no usable key"), std::string::npos) << error;
    EXPECT_FALSE(keys.add(kEcJwk, error));
    EXPECT_FALSE(keys.add("{\"keys\":[]}", error));
    EXPECT_EQ(keys.size(), 0u);
}

TEST_F(JwtKeysTest, BadModulusIsNamed) {
    JwtKeys keys;
    std::string error;
    std::string jwk = rsa_jwk(rsa_a_, "kid1");
    const std::size_t n_at = jwk.find("\"n\":\"") + 5;
    const std::string modulus = jwk.substr(n_at, jwk.find('"', n_at) - n_at);
    jwk.insert(n_at + 10, "*");
    EXPECT_FALSE(keys.add("{\"keys\":[" + jwk + "]}", error));
    EXPECT_EQ(error, "JWK \"kid1\": \"n\" is not base64url");
    EXPECT_EQ(error.find(modulus.substr(0, 10)), std::string::npos);
}

TEST_F(JwtKeysTest, MissingOrMistypedMembers) {
    JwtKeys keys;
    std::string error;
    EXPECT_FALSE(keys.add(R"({"keys":[{"kty":"RSA","kid":"a","e":"AQAB"}]})", error));
    EXPECT_EQ(error, "JWK \"a\": \"n\" is missing or not a string");
    EXPECT_FALSE(keys.add(R"({"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]})", error));
    EXPECT_NE(error.find("JWK #1"), std::string::npos) << error;
    EXPECT_FALSE(keys.add(R"({"keys":[{"kid":"x","n":"AQAB","e":"AQAB"}]})", error));
    EXPECT_NE(error.find("kty"), std::string::npos) << error;
    EXPECT_FALSE(keys.add(R"({"keys":{}})", error));
    EXPECT_FALSE(keys.add(R"({"keys":[1]})", error));
    EXPECT_FALSE(keys.add(R"({"keys":[{"kty":"RSA","kid":7,"n":"AQAB","e":"AQAB"}]})", error));
}

TEST_F(JwtKeysTest, SmallRsaKeyRefused) {
    JwtKeys keys;
    std::string error;
    EXPECT_FALSE(keys.add(rsa_jwk(rsa_small_, "small"), error));
    EXPECT_EQ(error, "JWK \"small\": RSA key of 1024 bits, at least 2048 required");
    EXPECT_FALSE(keys.add(pem(rsa_small_), error));
    EXPECT_NE(error.find("1024 bits"), std::string::npos) << error;
    EXPECT_EQ(keys.size(), 0u);
}

TEST_F(JwtKeysTest, PemWithTwoBlocks) {
    JwtKeys keys;
    std::string error;
    ASSERT_TRUE(keys.add(pem(rsa_a_) + "\nsome comment between blocks\n" + pem(rsa_b_), error))
        << error;
    ASSERT_EQ(keys.size(), 2u);
    EXPECT_EQ(keys.keys()[0].kid, "");
    EXPECT_EQ(keys.keys()[1].kid, "");
    EXPECT_EQ(EVP_PKEY_eq(keys.keys()[0].pkey.get(), rsa_a_), 1);
    EXPECT_EQ(EVP_PKEY_eq(keys.keys()[1].pkey.get(), rsa_b_), 1);
}

TEST_F(JwtKeysTest, PemEcSkippedAndAllEcRefused) {
    JwtKeys keys;
    std::string error;
    ASSERT_TRUE(keys.add(pem(ec_) + pem(rsa_a_), error)) << error;
    EXPECT_EQ(keys.size(), 1u);
    JwtKeys only_ec;
    EXPECT_FALSE(only_ec.add(pem(ec_), error));
    EXPECT_NE(error.find("no usable key"), std::string::npos) << error;
}

TEST_F(JwtKeysTest, PemOfAnotherKindOrBroken) {
    JwtKeys keys;
    std::string error;
    EXPECT_FALSE(keys.add("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", error));
    EXPECT_NE(error.find("PEM block 1"), std::string::npos) << error;
    std::string broken = pem(rsa_a_);
    broken.erase(broken.find("-----END"));
    EXPECT_FALSE(keys.add(broken, error));
    std::string corrupt = pem(rsa_a_);
    corrupt[40] = corrupt[40] == 'A' ? 'B' : 'A';
    corrupt[41] = corrupt[41] == 'A' ? 'B' : 'A';
    EXPECT_FALSE(keys.add(corrupt, error));
    EXPECT_EQ(keys.size(), 0u);
}

TEST_F(JwtKeysTest, Garbage) {
    JwtKeys keys;
    std::string error;
    for (const std::string& garbage :
         std::vector<std::string>{"", "   ", "hello", "{", "{\"keys\":[", "[1,2]", "null",
                                  "-----BEGIN ", std::string("\0\xff{", 3)}) {
        EXPECT_FALSE(keys.add(garbage, error)) << garbage;
        EXPECT_FALSE(error.empty());
    }
    EXPECT_EQ(keys.size(), 0u);
}

TEST_F(JwtKeysTest, FailedAddLeavesSetUnchanged) {
    JwtKeys keys;
    std::string error;
    ASSERT_TRUE(keys.add(rsa_jwk(rsa_a_, "k1"), error)) << error;
    EXPECT_FALSE(keys.add(
        "{\"keys\":[" + rsa_jwk(rsa_b_, "k2") + "," + rsa_jwk(rsa_small_, "k3") + "]}", error));
    EXPECT_EQ(keys.size(), 1u);
    EXPECT_FALSE(keys.add(rsa_jwk(rsa_b_, "k1"), error));
    EXPECT_NE(error.find("duplicate kid"), std::string::npos) << error;
    EXPECT_EQ(keys.size(), 1u);
    ASSERT_TRUE(keys.add(pem(rsa_b_), error)) << error;
    EXPECT_EQ(keys.size(), 2u);
}

TEST_F(JwtKeysTest, Fingerprint) {
    std::string error;
    JwtKeys ab, ab_again, ba, a;
    ASSERT_TRUE(ab.add(pem(rsa_a_) + pem(rsa_b_), error));
    ASSERT_TRUE(ab_again.add(
        "{\"keys\":[" + rsa_jwk(rsa_a_, "x") + "," + rsa_jwk(rsa_b_, "y") + "]}", error));
    ASSERT_TRUE(ba.add(pem(rsa_b_) + pem(rsa_a_), error));
    ASSERT_TRUE(a.add(pem(rsa_a_), error));
    EXPECT_EQ(ab.fingerprint(), ab_again.fingerprint());
    EXPECT_NE(ab.fingerprint(), ba.fingerprint());
    EXPECT_NE(ab.fingerprint(), a.fingerprint());
    EXPECT_NE(JwtKeys().fingerprint(), a.fingerprint());
}

}  // namespace
}  // namespace session::core
