#include "core/jwt.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <cctype>

#include <algorithm>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "rsa_test_keys.hpp"

namespace session::core {
namespace {

using namespace session::test_keys;

constexpr std::int64_t kNow = 1700000000;
constexpr std::string_view kIssuer = "https://clerk.example.com";
constexpr std::string_view kParty = "https://app.example.com";

const EVP_MD* digest_for(std::string_view alg) {
    if (alg == "RS384") return EVP_sha384();
    if (alg == "RS512") return EVP_sha512();
    return EVP_sha256();
}

std::string header_json(std::string_view alg = "RS256", std::string_view kid = "ins_a",
                        std::string_view extra = R"(,"typ":"JWT","cat":"cl_B7d4PD111AAA")") {
    return "{\"alg\":\"" + std::string(alg) + "\",\"kid\":\"" + std::string(kid) + "\"" +
           std::string(extra) + "}";
}

// A Clerk-shaped v2 session token payload; `extra` is spliced in before the
// closing brace.
std::string payload_json(std::string_view extra = "", std::int64_t exp = kNow + 60) {
    std::ostringstream out;
    out << "{\"azp\":\"" << kParty << "\",\"exp\":" << exp << ",\"fva\":[0,-1],\"iat\":" << kNow - 1
        << ",\"iss\":\"" << kIssuer << "\",\"jti\":\"a1b2c3d4e5f6\",\"nbf\":" << kNow - 11
        << ",\"sid\":\"sess_2abc\",\"sts\":\"active\",\"sub\":\"user_2xyz\",\"v\":2" << extra
        << "}";
    return out.str();
}

class JwtTest : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        key_a_ = EVP_RSA_gen(2048);
        key_b_ = EVP_RSA_gen(2048);
        keys_ = new JwtKeys();
        std::string error;
        ASSERT_TRUE(keys_->add("{\"keys\":[" + rsa_jwk(key_a_, "ins_a") + "," +
                                   rsa_jwk(key_b_, "ins_b", ",\"alg\":\"RS256\"") + "]}",
                               error))
            << error;
    }
    static void TearDownTestSuite() {
        delete keys_;
        EVP_PKEY_free(key_a_);
        EVP_PKEY_free(key_b_);
    }

    JwtError verify(const std::string& token, std::string_view role_claim = "metadata.role") {
        return verify_session_token(token, *keys_, role_claim, flat_);
    }

    // Verifies and decodes; fails the test unless the token is accepted.
    SessionClaims claims_of(const std::string& payload,
                            std::string_view role_claim = "metadata.role") {
        SessionClaims claims;
        EXPECT_EQ(verify(make_token(key_a_, header_json(), payload), role_claim), JwtError::none);
        EXPECT_TRUE(decode_claims(reinterpret_cast<const unsigned char*>(flat_.data()),
                                  flat_.size(), claims));
        return claims;
    }

    JwtError check(const SessionClaims& claims, std::int64_t now, bool with_parties = true) {
        static const std::string_view parties[] = {"https://other.example.com", kParty};
        ClaimPolicy policy;
        policy.issuer = kIssuer;
        if (with_parties) {
            policy.authorized_parties = parties;
            policy.authorized_party_count = 2;
        }
        policy.leeway_s = 5;
        return check_claims(claims, policy, now);
    }

    static EVP_PKEY* key_a_;
    static EVP_PKEY* key_b_;
    static JwtKeys* keys_;
    std::string flat_;
};
EVP_PKEY* JwtTest::key_a_ = nullptr;
EVP_PKEY* JwtTest::key_b_ = nullptr;
JwtKeys* JwtTest::keys_ = nullptr;

// ---- Verification

TEST_F(JwtTest, ValidToken) {
    const SessionClaims claims = claims_of(payload_json());
    EXPECT_EQ(claims.sub, "user_2xyz");
    EXPECT_EQ(claims.sid, "sess_2abc");
    EXPECT_EQ(claims.iss, kIssuer);
    EXPECT_EQ(claims.azp, kParty);
    EXPECT_EQ(claims.sts, "active");
    EXPECT_EQ(claims.exp, kNow + 60);
    EXPECT_TRUE(claims.has_nbf);
    EXPECT_EQ(claims.nbf, kNow - 11);
    EXPECT_TRUE(claims.has_iat);
    EXPECT_EQ(claims.iat, kNow - 1);
    EXPECT_EQ(claims.role, "");
    EXPECT_EQ(claims.org_id, "");
    EXPECT_EQ(check(claims, kNow), JwtError::none);
}

TEST_F(JwtTest, AllRsaAlgorithms) {
    for (std::string_view alg : {"RS256", "RS384", "RS512"}) {
        const std::string token =
            make_token(key_a_, header_json(alg), payload_json(), digest_for(alg));
        EXPECT_EQ(verify(token), JwtError::none) << alg;
    }
}

TEST_F(JwtTest, AlgNoneRefused) {
    const std::string token =
        base64url(header_json("none")) + "." + base64url(payload_json()) + ".c2lnbmF0dXJl";
    EXPECT_EQ(verify(token), JwtError::algorithm);
}

TEST_F(JwtTest, Hs256Refused) {
    EXPECT_EQ(verify(make_token(key_a_, header_json("HS256"), payload_json())),
              JwtError::algorithm);
}

TEST_F(JwtTest, AlgMissingOrNotAString) {
    EXPECT_EQ(verify(make_token(key_a_, R"({"kid":"ins_a"})", payload_json())),
              JwtError::algorithm);
    EXPECT_EQ(verify(make_token(key_a_, R"({"alg":256,"kid":"ins_a"})", payload_json())),
              JwtError::algorithm);
    EXPECT_EQ(verify(make_token(key_a_, R"({"alg":"rs256","kid":"ins_a"})", payload_json())),
              JwtError::algorithm);
}

TEST_F(JwtTest, UnknownKid) {
    EXPECT_EQ(verify(make_token(key_a_, header_json("RS256", "ins_zzz"), payload_json())),
              JwtError::unknown_key);
    // No kid and no kid-less key.
    EXPECT_EQ(verify(make_token(key_a_, R"({"alg":"RS256"})", payload_json())),
              JwtError::unknown_key);
    EXPECT_EQ(verify(make_token(key_a_, R"({"alg":"RS256","kid":5})", payload_json())),
              JwtError::unknown_key);
}

TEST_F(JwtTest, TypOtherThanJwt) {
    EXPECT_EQ(verify(make_token(key_a_, header_json("RS256", "ins_a", R"(,"typ":"at+jwt")"),
                                payload_json())),
              JwtError::type);
    EXPECT_EQ(
        verify(make_token(key_a_, header_json("RS256", "ins_a", R"(,"typ":null)"), payload_json())),
        JwtError::type);
    EXPECT_EQ(verify(make_token(key_a_, header_json("RS256", "ins_a", ""), payload_json())),
              JwtError::none);
}

TEST_F(JwtTest, TypCheckedBeforeAlg) {
    EXPECT_EQ(
        verify(make_token(key_a_, header_json("HS256", "ins_a", R"(,"typ":"x")"), payload_json())),
        JwtError::type);
}

TEST_F(JwtTest, Categories) {
    const auto with_cat = [&](std::string_view cat) {
        return verify(make_token(
            key_a_, header_json("RS256", "ins_a", ",\"cat\":\"" + std::string(cat) + "\""),
            payload_json()));
    };
    EXPECT_EQ(with_cat("cl_B7d4PD222AAA"), JwtError::category);  // JWT template
    EXPECT_EQ(with_cat("cl_B7d4PD333AAA"), JwtError::category);  // machine token
    EXPECT_EQ(with_cat("something"), JwtError::category);
    EXPECT_EQ(with_cat("cl_B7d4PD111AAA"), JwtError::none);
    EXPECT_EQ(with_cat("cl_I7d4PD111III"), JwtError::none);
    EXPECT_EQ(verify(make_token(key_a_, header_json("RS256", "ins_a", ""), payload_json())),
              JwtError::none);
    EXPECT_EQ(
        verify(make_token(key_a_, header_json("RS256", "ins_a", R"(,"cat":1)"), payload_json())),
        JwtError::category);
}

TEST_F(JwtTest, BadBase64urlInEachPart) {
    const std::string token = make_token(key_a_, header_json(), payload_json());
    const std::size_t dot1 = token.find('.');
    const std::size_t dot2 = token.find('.', dot1 + 1);
    for (std::size_t at : {std::size_t{3}, dot1 + 3, dot2 + 3}) {
        for (char bad : {'+', '/', '=', '*', ' '}) {
            std::string broken = token;
            broken[at] = bad;
            EXPECT_EQ(verify(broken), JwtError::malformed) << at << bad;
        }
    }
    // A length no base64 text has (4n + 1).
    const std::size_t signature_length = token.size() - dot2 - 1;
    EXPECT_EQ(verify(token + std::string(5 - signature_length % 4, 'A')), JwtError::malformed);
    EXPECT_EQ(verify("A" + token), JwtError::malformed);
}

TEST_F(JwtTest, NotThreeParts) {
    const std::string token = make_token(key_a_, header_json(), payload_json());
    EXPECT_EQ(verify(token + ".e30"), JwtError::malformed);
    EXPECT_EQ(verify(token.substr(0, token.rfind('.'))), JwtError::malformed);
    EXPECT_EQ(verify(""), JwtError::malformed);
    EXPECT_EQ(verify(".."), JwtError::malformed);
    EXPECT_EQ(verify("sess_123"), JwtError::malformed);
}

TEST_F(JwtTest, BadJson) {
    EXPECT_EQ(verify(make_token(key_a_, "{\"alg\":\"RS256\"", payload_json())),
              JwtError::malformed);
    EXPECT_EQ(verify(make_token(key_a_, header_json(), "{\"sub\":")), JwtError::malformed);
    EXPECT_EQ(verify(make_token(key_a_, header_json(), "[1,2]")), JwtError::malformed);
    EXPECT_EQ(verify(make_token(key_a_, "\"RS256\"", payload_json())), JwtError::malformed);
    // Payload JSON is checked before the header's typ, as the SDK decodes first.
    EXPECT_EQ(verify(make_token(key_a_, header_json("RS256", "ins_a", R"(,"typ":"x")"), "{")),
              JwtError::malformed);
}

TEST_F(JwtTest, DuplicateNamesRefused) {
    EXPECT_EQ(verify(make_token(key_a_, header_json(), payload_json(R"(,"sub":"user_evil")"))),
              JwtError::malformed);
    EXPECT_EQ(
        verify(make_token(key_a_, R"({"alg":"RS256","kid":"ins_a","alg":"none"})", payload_json())),
        JwtError::malformed);
}

TEST_F(JwtTest, BadSignature) {
    std::string token = make_token(key_a_, header_json(), payload_json());
    // Change the last full character of the signature.
    char& c = token[token.size() - 3];
    c = c == 'A' ? 'B' : 'A';
    EXPECT_EQ(verify(token), JwtError::signature);
    // Signed by the other key, under this key's kid.
    EXPECT_EQ(verify(make_token(key_b_, header_json(), payload_json())), JwtError::signature);
    // Payload changed after signing.
    const std::string good = make_token(key_a_, header_json(), payload_json());
    const std::size_t dot1 = good.find('.');
    const std::size_t dot2 = good.find('.', dot1 + 1);
    const std::string forged = good.substr(0, dot1 + 1) +
                               base64url(payload_json(R"(,"metadata":{"role":"admin"})")) +
                               good.substr(dot2);
    EXPECT_EQ(verify(forged), JwtError::signature);
    // A truncated signature.
    EXPECT_EQ(verify(good.substr(0, good.size() - 8)), JwtError::signature);
}

TEST_F(JwtTest, SubjectAndSession) {
    const auto without = [](std::string payload, std::string_view member) {
        const std::size_t at = payload.find(member);
        const std::size_t end = payload.find(',', at);
        payload.erase(at - 1, end - at + 1);
        return payload;
    };
    const std::string no_sub = without(payload_json(), "\"sub\"");
    ASSERT_EQ(no_sub.find("\"sub\""), std::string::npos);
    EXPECT_EQ(verify(make_token(key_a_, header_json(), no_sub)), JwtError::subject);
    EXPECT_EQ(verify(make_token(key_a_, header_json(), without(payload_json(), "\"sid\""))),
              JwtError::subject);
    std::string payload = payload_json();
    payload.replace(payload.find("\"user_2xyz\""), 11, "\"\"");
    EXPECT_EQ(verify(make_token(key_a_, header_json(), payload)), JwtError::subject);
    payload = payload_json();
    payload.replace(payload.find("\"user_2xyz\""), 11, "42");
    EXPECT_EQ(verify(make_token(key_a_, header_json(), payload)), JwtError::subject);
    payload = payload_json();
    payload.replace(payload.find("\"user_2xyz\""), 11, "\"user\\r\\nX: 1\"");
    EXPECT_EQ(verify(make_token(key_a_, header_json(), payload)), JwtError::subject);
}

TEST_F(JwtTest, TimeClaimsTypes) {
    std::string payload = payload_json();
    payload.replace(payload.find("\"exp\""), 16, "\"exq\":1700000060");
    EXPECT_EQ(verify(make_token(key_a_, header_json(), payload)), JwtError::malformed);
    EXPECT_EQ(verify(make_token(key_a_, header_json(), payload_json("", -5))), JwtError::malformed);
    payload = payload_json();
    payload.replace(payload.find("\"exp\":1700000060"), 16, "\"exp\":\"1700000060\"");
    EXPECT_EQ(verify(make_token(key_a_, header_json(), payload)), JwtError::malformed);
    payload = payload_json();
    payload.replace(payload.find("\"exp\":1700000060"), 16, "\"exp\":1e300");
    EXPECT_EQ(verify(make_token(key_a_, header_json(), payload)), JwtError::malformed);
    payload = payload_json();
    payload.replace(payload.find("\"exp\":1700000060"), 16, "\"exp\":18446744073709551615");
    EXPECT_EQ(verify(make_token(key_a_, header_json(), payload)), JwtError::malformed);
    payload = payload_json();
    payload.replace(payload.find("\"nbf\""), 5, "\"nbf\":true,\"nbx\"");
    EXPECT_EQ(verify(make_token(key_a_, header_json(), payload)), JwtError::malformed);

    // A fraction is dropped; absent nbf / iat are fine.
    payload = payload_json();
    payload.replace(payload.find("\"exp\":1700000060"), 16, "\"exp\":1700000060.9");
    payload.replace(payload.find("\"iat\""), 5, "\"iax\"");
    payload.replace(payload.find("\"nbf\""), 5, "\"nbx\"");
    const SessionClaims claims = claims_of(payload);
    EXPECT_EQ(claims.exp, kNow + 60);
    EXPECT_FALSE(claims.has_nbf);
    EXPECT_FALSE(claims.has_iat);
    EXPECT_EQ(check(claims, kNow), JwtError::none);
}

// ---- check_claims

TEST_F(JwtTest, WrongIssuer) {
    std::string payload = payload_json();
    payload.replace(payload.find(kIssuer), kIssuer.size(), "https://clerk.evil.com");
    EXPECT_EQ(check(claims_of(payload), kNow), JwtError::issuer);
    // A control character empties the claim: never equal to the issuer.
    payload = payload_json();
    payload.replace(payload.find(kIssuer) + kIssuer.size(), 0, "\\u0000");
    EXPECT_EQ(check(claims_of(payload), kNow), JwtError::issuer);
}

TEST_F(JwtTest, AuthorizedParty) {
    std::string payload = payload_json();
    payload.replace(payload.find(kParty), kParty.size(), "https://evil.example.com");
    const SessionClaims wrong = claims_of(payload);
    EXPECT_EQ(check(wrong, kNow), JwtError::authorized_party);
    EXPECT_EQ(check(wrong, kNow, false), JwtError::none);

    payload = payload_json();
    payload.replace(payload.find("\"azp\""), 5, "\"azq\"");
    const SessionClaims missing = claims_of(payload);
    EXPECT_EQ(missing.azp, "");
    EXPECT_EQ(check(missing, kNow), JwtError::authorized_party);
    EXPECT_EQ(check(missing, kNow, false), JwtError::none);
}

TEST_F(JwtTest, ExpiryAtLeewayBoundary) {
    const SessionClaims claims = claims_of(payload_json());
    // exp = kNow + 60, leeway 5: expired from kNow + 65 on.
    EXPECT_EQ(check(claims, kNow + 64), JwtError::none);
    EXPECT_EQ(check(claims, kNow + 65), JwtError::expired);
}

TEST_F(JwtTest, NotBeforeAtLeewayBoundary) {
    std::string payload = payload_json();
    payload.replace(payload.find("\"iat\""), 5, "\"iax\"");
    const SessionClaims claims = claims_of(payload);  // nbf = kNow - 11
    EXPECT_EQ(check(claims, kNow - 16), JwtError::none);
    EXPECT_EQ(check(claims, kNow - 17), JwtError::not_yet_valid);
}

TEST_F(JwtTest, IssuedAtAtLeewayBoundary) {
    std::string payload = payload_json();
    payload.replace(payload.find("\"nbf\""), 5, "\"nbx\"");
    const SessionClaims claims = claims_of(payload);  // iat = kNow - 1
    EXPECT_EQ(check(claims, kNow - 6), JwtError::none);
    EXPECT_EQ(check(claims, kNow - 7), JwtError::issued_in_future);
}

TEST_F(JwtTest, CheckOrder) {
    std::string payload = payload_json();
    payload.replace(payload.find("\"active\""), 8, "\"pending\"");
    const SessionClaims claims = claims_of(payload);
    EXPECT_EQ(check(claims, kNow), JwtError::pending);
    // Expiry comes before sts; issuer before everything.
    EXPECT_EQ(check(claims, kNow + 100), JwtError::expired);
    SessionClaims other_issuer = claims;
    other_issuer.iss = "x";
    EXPECT_EQ(check(other_issuer, kNow + 100), JwtError::issuer);
}

TEST_F(JwtTest, HugeLeewayDoesNotOverflow) {
    const SessionClaims claims = claims_of(payload_json());
    ClaimPolicy policy;
    policy.issuer = kIssuer;
    policy.leeway_s = INT64_MAX;
    EXPECT_EQ(check_claims(claims, policy, kNow), JwtError::none);
    policy.leeway_s = -100;
    EXPECT_EQ(check_claims(claims, policy, kNow + 60), JwtError::expired);
}

// ---- Keys

TEST_F(JwtTest, TwoKeysChosenByKid) {
    EXPECT_EQ(verify(make_token(key_b_, header_json("RS256", "ins_b"), payload_json())),
              JwtError::none);
    EXPECT_EQ(verify(make_token(key_a_, header_json("RS256", "ins_b"), payload_json())),
              JwtError::signature);
}

TEST_F(JwtTest, JwkAlgMismatch) {
    // ins_b's JWK says RS256.
    EXPECT_EQ(
        verify(make_token(key_b_, header_json("RS384", "ins_b"), payload_json(), EVP_sha384())),
        JwtError::algorithm);
    // ins_a's JWK names no alg: any RS algorithm.
    EXPECT_EQ(
        verify(make_token(key_a_, header_json("RS512", "ins_a"), payload_json(), EVP_sha512())),
        JwtError::none);
    // Signed with SHA-256 but labelled RS384.
    EXPECT_EQ(verify(make_token(key_a_, header_json("RS384", "ins_a"), payload_json())),
              JwtError::signature);
}

TEST_F(JwtTest, PemKeyWithoutKid) {
    JwtKeys pem_keys;
    std::string error;
    ASSERT_TRUE(pem_keys.add(pem(key_a_), error)) << error;
    std::string flat;
    EXPECT_EQ(verify_session_token(
                  make_token(key_a_, header_json("RS256", "ins_whatever"), payload_json()),
                  pem_keys, "", flat),
              JwtError::none);
    EXPECT_EQ(
        verify_session_token(make_token(key_a_, R"({"alg":"RS256","typ":"JWT"})", payload_json()),
                             pem_keys, "", flat),
        JwtError::none);
    EXPECT_EQ(
        verify_session_token(make_token(key_b_, header_json(), payload_json()), pem_keys, "", flat),
        JwtError::signature);
    EXPECT_EQ(verify_session_token(make_token(key_a_, header_json(), payload_json()), JwtKeys(), "",
                                   flat),
              JwtError::unknown_key);
}

// ---- Sizes and garbage

TEST_F(JwtTest, FourKilobyteToken) {
    const std::string filler(2500, 'x');
    const std::string token =
        make_token(key_a_, header_json(), payload_json(",\"filler\":\"" + filler + "\""));
    EXPECT_GE(token.size(), 3900u);
    EXPECT_LE(token.size(), 4096u);
    EXPECT_EQ(verify(token), JwtError::none);
    SessionClaims claims;
    ASSERT_TRUE(
        decode_claims(reinterpret_cast<const unsigned char*>(flat_.data()), flat_.size(), claims));
    std::string_view value;
    ASSERT_TRUE(claims.find_scalar("filler", value));
    EXPECT_EQ(value, filler);
}

TEST_F(JwtTest, PartLargerThanTheBoundRefused) {
    const std::string at_bound_filler(kMaxJwtPartLength - payload_json(",\"f\":\"\"").size(), 'x');
    const std::string at_bound = payload_json(",\"f\":\"" + at_bound_filler + "\"");
    ASSERT_EQ(at_bound.size(), kMaxJwtPartLength);
    EXPECT_EQ(verify(make_token(key_a_, header_json(), at_bound)), JwtError::none);
    const std::string over = payload_json(",\"f\":\"" + at_bound_filler + "y\"");
    EXPECT_EQ(verify(make_token(key_a_, header_json(), over)), JwtError::malformed);
}

TEST_F(JwtTest, GarbageInEveryPart) {
    const std::string token = make_token(key_a_, header_json(), payload_json());
    const std::size_t dot1 = token.find('.');
    const std::size_t dot2 = token.find('.', dot1 + 1);
    const std::string parts[3] = {token.substr(0, dot1), token.substr(dot1 + 1, dot2 - dot1 - 1),
                                  token.substr(dot2 + 1)};
    unsigned seed = 12345;
    const auto next = [&seed] {
        seed = seed * 1103515245u + 12345u;
        return (seed >> 16) & 0x7fff;
    };
    for (int part = 0; part < 3; ++part) {
        for (int round = 0; round < 50; ++round) {
            std::string bytes(next() % 300, '\0');
            for (char& c : bytes) c = static_cast<char>(next() & 0xff);
            std::string copy[3] = {parts[0], parts[1], parts[2]};
            // Random bytes encoded (valid base64url, junk content) and raw.
            copy[part] = round % 2 == 0 ? base64url(bytes) : bytes;
            const std::string garbled = copy[0] + "." + copy[1] + "." + copy[2];
            const JwtError error = verify(garbled);
            EXPECT_NE(error, JwtError::none);
            if (part == 0 || part == 1) {
                EXPECT_TRUE(error == JwtError::malformed || error == JwtError::signature)
                    << jwt_error_name(error);
            }
        }
    }
}

// ---- Organization claims (Clerk's jwtPayloadParser and its spec)

std::vector<std::string> words(std::string_view list) {
    std::vector<std::string> out;
    std::istringstream in{std::string(list)};
    for (std::string word; in >> word;) out.push_back(word);
    std::sort(out.begin(), out.end());
    return out;
}

class JwtOrgTest : public JwtTest {
  protected:
    SessionClaims v2(std::string_view fea, std::string_view o) {
        std::string extra = ",\"o\":" + std::string(o);
        if (!fea.empty()) extra += ",\"fea\":\"" + std::string(fea) + "\"";
        return claims_of(payload_json(extra));
    }
    std::vector<std::string> permissions(std::string_view fea, std::string_view per,
                                         std::string_view fpm) {
        const std::string o = R"({"id":"org_id","rol":"admin","slg":"org_slug","per":")" +
                              std::string(per) + R"(","fpm":")" + std::string(fpm) + "\"}";
        return words(v2(fea, o).org_permissions);
    }
};

TEST_F(JwtOrgTest, V1Claims) {
    std::string payload = payload_json(
        R"(,"org_id":"org_1","org_role":"org:admin","org_slug":"acme",)"
        R"("org_permissions":["org:billing:read","org:billing:manage","has space","bad\u0007",7])");
    payload.replace(payload.find("\"v\":2"), 5, "\"v\":1");
    const SessionClaims claims = claims_of(payload);
    EXPECT_EQ(claims.org_id, "org_1");
    EXPECT_EQ(claims.org_role, "org:admin");
    EXPECT_EQ(claims.org_slug, "acme");
    EXPECT_EQ(claims.org_permissions, "org:billing:read org:billing:manage");
}

TEST_F(JwtOrgTest, V1WhenVersionAbsentOrNotTwo) {
    for (std::string_view version : {"", ",\"v\":\"2\"", ",\"v\":3"}) {
        std::string payload = payload_json(R"(,"org_id":"org_1","o":{"id":"org_2"})");
        payload.erase(payload.find(",\"v\":2"), 6);
        payload.insert(payload.size() - 1, version);
        EXPECT_EQ(claims_of(payload).org_id, "org_1") << version;
    }
    // 2.0 is the number 2.
    std::string payload = payload_json(R"(,"org_id":"org_1","o":{"id":"org_2"})");
    payload.replace(payload.find("\"v\":2"), 5, "\"v\":2.0");
    EXPECT_EQ(claims_of(payload).org_id, "org_2");
}

TEST_F(JwtOrgTest, V2BasicFields) {
    const SessionClaims claims = v2("o:impersonation", R"({"id":"org_xxxxxxx","rol":"admin",)"
                                                       R"("slg":"org_test","per":"read,manage",)"
                                                       R"("fpm":"3"})");
    EXPECT_EQ(claims.org_id, "org_xxxxxxx");
    EXPECT_EQ(claims.org_slug, "org_test");
    EXPECT_EQ(claims.org_role, "org:admin");
    // The spec: the same as v1 with org_permissions [read, manage] of impersonation.
    EXPECT_EQ(words(claims.org_permissions),
              (std::vector<std::string>{"org:impersonation:manage", "org:impersonation:read"}));
    // v1 ignores `o` entirely, v2 ignores org_*.
    EXPECT_EQ(claims_of(payload_json(R"(,"org_id":"org_v1")")).org_id, "");
}

TEST_F(JwtOrgTest, V2RoleAlreadyPrefixedKeepsOnePrefix) {
    EXPECT_EQ(v2("", R"({"id":"o","rol":"org:admin"})").org_role, "org:admin");
    EXPECT_EQ(v2("", R"({"id":"o","rol":""})").org_role, "");
    EXPECT_EQ(v2("", R"({"id":"o","rol":5})").org_role, "");
}

TEST_F(JwtOrgTest, V2NoActiveOrganization) {
    const SessionClaims claims =
        claims_of(payload_json(R"(,"fea":"u:impersonation,u:memberships")"));
    EXPECT_EQ(claims.org_id, "");
    EXPECT_EQ(claims.org_role, "");
    EXPECT_EQ(claims.org_permissions, "");
    EXPECT_EQ(claims_of(payload_json(R"(,"o":"org_1")")).org_id, "");
}

TEST_F(JwtOrgTest, V2NoPerOrFpmMeansNoPermissions) {
    EXPECT_EQ(v2("u:impersonation,u:memberships,u:feature3",
                 R"({"id":"org_id","rol":"admin","slg":"org_slug"})")
                  .org_permissions,
              "");
    EXPECT_EQ(v2("o:a", R"({"id":"org_id","per":"read"})").org_permissions, "");
    EXPECT_EQ(v2("o:a", R"({"id":"org_id","fpm":"1"})").org_permissions, "");
}

// The cases of packages/shared/src/__tests__/jwtPayloadParser.spec.ts.
TEST_F(JwtOrgTest, SpecPermissionsFromFeaPerFpm) {
    EXPECT_EQ(permissions("o:impersonation,o:memberships", "read,manage", "1,3"),
              words("org:impersonation:read org:memberships:read org:memberships:manage"));
}

TEST_F(JwtOrgTest, SpecFeatureWithoutMaskAddsNothing) {
    EXPECT_EQ(permissions("o:impersonation,o:memberships,o:feature3", "read,manage", "1,3"),
              words("org:impersonation:read org:memberships:read org:memberships:manage"));
}

TEST_F(JwtOrgTest, SpecOrgAndUserScopedFeatures) {
    EXPECT_EQ(permissions("uo:impersonation,o:memberships,uo:feature3", "read,manage", "1,3,1"),
              words("org:impersonation:read org:memberships:read org:memberships:manage "
                    "org:feature3:read"));
}

TEST_F(JwtOrgTest, SpecConstructedCase1) {
    EXPECT_EQ(permissions("ou:memberships,u:impersonation", "read,manage", "3"),
              words("org:memberships:read org:memberships:manage"));
}

TEST_F(JwtOrgTest, SpecConstructedCase2) {
    EXPECT_EQ(permissions("o:billing,o:email,o:fraud,o:instance,o:staging_plans", "manage,read",
                          "3,3,3,3,1"),
              words("org:billing:manage org:billing:read org:email:manage org:email:read "
                    "org:fraud:manage org:fraud:read org:instance:manage org:instance:read "
                    "org:staging_plans:manage"));
}

TEST_F(JwtOrgTest, SpecConstructedCase3) {
    EXPECT_EQ(permissions("o:repositories,o:projects", "read,create,update,delete,revoke", "7,21"),
              words("org:repositories:read org:repositories:create org:repositories:update "
                    "org:projects:read org:projects:update org:projects:revoke"));
}

TEST_F(JwtOrgTest, SpecConstructedCase4) {
    EXPECT_EQ(
        permissions("o:repositories,o:projects,o:webhooks,o:impersonation", "read,manage", "1,2,3"),
        words("org:repositories:read org:projects:manage org:webhooks:read "
              "org:webhooks:manage"));
}

TEST_F(JwtOrgTest, SpecConstructedCase5) {
    EXPECT_EQ(permissions("o:repositories,uo:projects,u:goldprofileborder",
                          "read,create,update,delete,revoke", "7,21"),
              words("org:repositories:read org:repositories:create org:repositories:update "
                    "org:projects:read org:projects:update org:projects:revoke"));
}

// The SDK's JavaScript quirks, reproduced.
TEST_F(JwtOrgTest, QuirksOfTheSdk) {
    // A bit beyond `per` names permissions[index], undefined in JavaScript.
    EXPECT_EQ(permissions("o:f", "read,manage", "5"), words("org:f:read org:f:undefined"));
    // A feature without ':' whose text has an 'o': split(':')[1] is undefined.
    EXPECT_EQ(permissions("org", "read", "1"), words("org:undefined:read"));
    // Only the scope (before the first ':') is searched for 'o'.
    EXPECT_EQ(permissions("u:profile,o:a", "read", "1,1"), words("org:a:read"));
    // The part between the first and second ':'.
    EXPECT_EQ(permissions("o:a:b", "read", "1"), words("org:a:read"));
    // parseInt: leading integer, sign, NaN, surrounding blanks trimmed.
    EXPECT_EQ(permissions("o:a,o:b,o:c", " read , manage ", " 3x , abc ,+2"),
              words("org:a:read org:a:manage org:c:manage"));
    // (-3).toString(2) is "-11": the '-' is not a bit.
    EXPECT_EQ(permissions("o:a", "r,m,x", "-3"), words("org:a:r org:a:m"));
    // 2^53 + 1 reads as 2^53: one bit, at index 53.
    EXPECT_EQ(permissions("o:a", "r", "9007199254740993"), words("org:a:undefined"));
    // Overflowing to Infinity: no '1' in "Infinity".
    EXPECT_EQ(permissions("o:a", "r", std::string(400, '9')), words(""));
    // Permission names with spaces cannot go into a space-separated list.
    EXPECT_EQ(permissions("o:a", "read all,write", "3"), words("org:a:write"));
    // Non-string fea / per / fpm (the SDK would throw) grant nothing.
    EXPECT_EQ(words(claims_of(payload_json(R"(,"fea":5,"o":{"id":"x","per":"r","fpm":"1"})"))
                        .org_permissions),
              words(""));
}

// ---- Role claim

TEST_F(JwtTest, RoleClaimString) {
    const SessionClaims claims = claims_of(payload_json(R"(,"metadata":{"role":"admin"})"));
    EXPECT_EQ(claims.role, "admin");
    EXPECT_EQ(claims.roles, "admin");
    const SessionClaims spaced = claims_of(payload_json(R"(,"metadata":{"role":"team lead"})"));
    EXPECT_EQ(spaced.role, "team lead");
    EXPECT_EQ(spaced.roles, "");
}

TEST_F(JwtTest, RoleClaimArray) {
    const SessionClaims claims = claims_of(
        payload_json(R"(,"metadata":{"role":["editor","viewer","has space",3,"x\u0001y","ops"]})"));
    EXPECT_EQ(claims.role, "editor");
    EXPECT_EQ(claims.roles, "editor viewer ops");
    EXPECT_EQ(claims_of(payload_json(R"(,"metadata":{"role":[]})")).role, "");
    EXPECT_EQ(claims_of(payload_json(R"(,"metadata":{"role":[1,"b"]})")).role, "");
    EXPECT_EQ(claims_of(payload_json(R"(,"metadata":{"role":[1,"b"]})")).roles, "b");
}

TEST_F(JwtTest, RoleClaimMissingOrOtherType) {
    EXPECT_EQ(claims_of(payload_json()).role, "");
    EXPECT_EQ(claims_of(payload_json(R"(,"metadata":{"other":"admin"})")).role, "");
    EXPECT_EQ(claims_of(payload_json(R"(,"metadata":{"role":{"name":"admin"}})")).role, "");
    EXPECT_EQ(claims_of(payload_json(R"(,"metadata":{"role":true})")).role, "");
    EXPECT_EQ(claims_of(payload_json(R"(,"metadata":"admin")")).role, "");
    EXPECT_EQ(claims_of(payload_json(R"(,"metadata":{"role":"a\nb"})")).role, "");
    // A duplicated nested member is ambiguous: no role.
    EXPECT_EQ(claims_of(payload_json(R"(,"metadata":{"role":"user","role":"admin"})")).role, "");
    EXPECT_EQ(claims_of(payload_json(R"(,"metadata":{"role":"admin"})"), "").role, "");
    EXPECT_EQ(claims_of(payload_json(R"(,"metadata":{"role":"admin"})"), "metadata..role").role,
              "");
}

TEST_F(JwtTest, RoleClaimNestedAndTopLevel) {
    EXPECT_EQ(claims_of(payload_json(R"(,"a":{"b":{"c":"deep"}})"), "a.b.c").role, "deep");
    EXPECT_EQ(claims_of(payload_json(R"(,"role":"top")"), "role").roles, "top");
}

// ---- Scalars

// The control-character check reads eight bytes at a time: every position
// within a word and in the tail, every control byte, next to UTF-8 bytes.
TEST_F(JwtTest, ControlCharactersAtEveryPositionAreLeftOut) {
    const std::string filler = "caf\\u00e9 ok \\u00ff\\u0080 abcdefghij";  // JSON escapes
    for (int control : {0x00, 0x01, 0x09, 0x0a, 0x0d, 0x1f, 0x7f}) {
        for (std::size_t at = 0; at < 19; ++at) {
            char escape[8];
            std::snprintf(escape, sizeof(escape), "\\u%04x", control);
            std::string value = std::string(at, 'x') + escape + "y";
            const SessionClaims claims =
                claims_of(payload_json(R"(,"ctl":")" + value + R"(","plain":")" + filler + R"(")"));
            std::string_view out;
            EXPECT_FALSE(claims.find_scalar("ctl", out)) << control << " at " << at;
            EXPECT_TRUE(claims.find_scalar("plain", out)) << control << " at " << at;
        }
    }
    // Neither space (0x20) nor tilde (0x7e) nor bytes >= 0x80 are control bytes.
    const SessionClaims claims = claims_of(payload_json(R"(,"edge":" ~\u0080\u00ff  ~~~~~~~~")"));
    std::string_view out;
    EXPECT_TRUE(claims.find_scalar("edge", out));
}

TEST_F(JwtTest, Scalars) {
    const SessionClaims claims = claims_of(payload_json(
        R"(,"plan":"pro","count":42,"ratio":1.5,"big":1e3,"neg":-7,"huge":18446744073709551615,)"
        R"("flag":true,"off":false,"nested":{"a":1},"list":[1],"nothing":null,)"
        R"("ctl":"a\u001fb","del":"a\u007fb","bad-name":"x","utf":"caf\u00e9")"));
    const auto scalar = [&](std::string_view name) -> std::string {
        std::string_view value;
        return claims.find_scalar(name, value) ? std::string(value) : std::string("<absent>");
    };
    EXPECT_EQ(scalar("plan"), "pro");
    EXPECT_EQ(scalar("count"), "42");
    EXPECT_EQ(scalar("ratio"), "1.5");
    EXPECT_EQ(scalar("big"), "1000");
    EXPECT_EQ(scalar("neg"), "-7");
    EXPECT_EQ(scalar("huge"), "18446744073709551615");
    EXPECT_EQ(scalar("flag"), "true");
    EXPECT_EQ(scalar("off"), "false");
    EXPECT_EQ(scalar("nested"), "<absent>");
    EXPECT_EQ(scalar("list"), "<absent>");
    EXPECT_EQ(scalar("nothing"), "<absent>");
    EXPECT_EQ(scalar("ctl"), "<absent>");
    EXPECT_EQ(scalar("del"), "<absent>");
    EXPECT_EQ(scalar("bad-name"), "<absent>");
    EXPECT_EQ(scalar("utf"), "caf\xc3\xa9");
    // The registered claims are scalars too.
    EXPECT_EQ(scalar("sub"), "user_2xyz");
    EXPECT_EQ(scalar("exp"), "1700000060");
    EXPECT_EQ(scalar("v"), "2");
    EXPECT_EQ(scalar("fva"), "<absent>");
    EXPECT_EQ(scalar("missing"), "<absent>");
    EXPECT_EQ(scalar(""), "<absent>");
    EXPECT_EQ(scalar("pla"), "<absent>");
}

// ---- decode_claims

TEST_F(JwtTest, DecodeClaimsRefusesTruncationAndGarbage) {
    claims_of(payload_json(R"(,"metadata":{"role":["a","b"]},"plan":"pro","o":{"id":"org_1"})"));
    const std::string flat = flat_;
    const auto* bytes = reinterpret_cast<const unsigned char*>(flat.data());
    SessionClaims claims;
    ASSERT_TRUE(decode_claims(bytes, flat.size(), claims));
    for (std::size_t length = 0; length < flat.size(); ++length) {
        SessionClaims partial;
        EXPECT_FALSE(decode_claims(bytes, length, partial)) << length;
    }
    std::string longer = flat + "x";
    EXPECT_FALSE(decode_claims(reinterpret_cast<const unsigned char*>(longer.data()), longer.size(),
                               claims));
    std::string bad_magic = flat;
    bad_magic[0] = 'X';
    EXPECT_FALSE(decode_claims(reinterpret_cast<const unsigned char*>(bad_magic.data()),
                               bad_magic.size(), claims));
    std::string bad_flags = flat;
    bad_flags[4] = 0x7;
    EXPECT_FALSE(decode_claims(reinterpret_cast<const unsigned char*>(bad_flags.data()),
                               bad_flags.size(), claims));
    EXPECT_FALSE(decode_claims(nullptr, 0, claims));
    // Every single-byte change is either refused or still well-formed.
    for (std::size_t i = 0; i < flat.size(); ++i) {
        std::string changed = flat;
        changed[i] = static_cast<char>(changed[i] ^ 0x5a);
        SessionClaims out;
        if (decode_claims(reinterpret_cast<const unsigned char*>(changed.data()), changed.size(),
                          out)) {
            EXPECT_FALSE(out.sub.empty());
        }
    }
}

// ---- Handshake tokens

TEST_F(JwtTest, HandshakeToken) {
    const std::string payload =
        R"({"handshake":["__session=abc; Path=/","__client_uat=1700000000; Path=/"],"exp":)" +
        std::to_string(kNow + 30) + "}";
    std::vector<std::string> directives;
    ASSERT_EQ(verify_handshake_token(make_token(key_a_, header_json(), payload), *keys_, kNow, 5,
                                     directives),
              JwtError::none);
    EXPECT_EQ(directives, (std::vector<std::string>{"__session=abc; Path=/",
                                                    "__client_uat=1700000000; Path=/"}));
    EXPECT_EQ(verify_handshake_token(make_token(key_a_, header_json(), payload), *keys_, kNow + 35,
                                     5, directives),
              JwtError::expired);
    EXPECT_EQ(verify_handshake_token(make_token(key_a_, header_json(), payload), *keys_, kNow + 34,
                                     5, directives),
              JwtError::none);
    // No exp is accepted.
    EXPECT_EQ(verify_handshake_token(make_token(key_a_, header_json(), R"({"handshake":[]})"),
                                     *keys_, kNow, 5, directives),
              JwtError::none);
    EXPECT_TRUE(directives.empty());
}

TEST_F(JwtTest, HandshakeTokenRefusals) {
    std::vector<std::string> directives{"keep"};
    const auto verify_hs = [&](std::string_view header, std::string_view payload) {
        return verify_handshake_token(make_token(key_a_, header, payload), *keys_, kNow, 5,
                                      directives);
    };
    EXPECT_EQ(verify_hs(header_json(), R"({"exp":1700000060})"), JwtError::malformed);
    EXPECT_EQ(verify_hs(header_json(), R"({"handshake":["a",1]})"), JwtError::malformed);
    EXPECT_EQ(verify_hs(header_json(), R"({"handshake":"a"})"), JwtError::malformed);
    EXPECT_EQ(verify_hs(header_json(), R"({"handshake":[],"exp":"soon"})"), JwtError::malformed);
    EXPECT_EQ(verify_hs(header_json("RS256", "ins_a", R"(,"cat":"cl_B7d4PD222AAA")"),
                        R"({"handshake":[]})"),
              JwtError::category);
    EXPECT_EQ(verify_hs(header_json("HS256"), R"({"handshake":[]})"), JwtError::algorithm);
    EXPECT_EQ(verify_handshake_token(make_token(key_b_, header_json(), R"({"handshake":[]})"),
                                     *keys_, kNow, 5, directives),
              JwtError::signature);
    EXPECT_EQ(directives, std::vector<std::string>{"keep"});
}

// ---- Helpers

TEST(JwtHelpers, LooksLikeJwt) {
    EXPECT_TRUE(looks_like_jwt("a.b.c"));
    EXPECT_TRUE(looks_like_jwt("eyJh-_.eyJ0.c2ln"));
    EXPECT_FALSE(looks_like_jwt("sess_123"));
    EXPECT_FALSE(looks_like_jwt("a.b"));
    EXPECT_FALSE(looks_like_jwt("a.b.c.d"));
    EXPECT_FALSE(looks_like_jwt(".b.c"));
    EXPECT_FALSE(looks_like_jwt("a..c"));
    EXPECT_FALSE(looks_like_jwt("a.b."));
    EXPECT_FALSE(looks_like_jwt("a.b.c="));
    EXPECT_FALSE(looks_like_jwt("a+b.c.d"));
    EXPECT_FALSE(looks_like_jwt(""));
    // Every byte outside base64url, at the start, middle and end of a part.
    for (int c = 0; c < 256; ++c) {
        const bool base64url = std::isalnum(c) || c == '-' || c == '_';
        if (c == '.' || base64url) continue;
        const std::string bad(1, static_cast<char>(c));
        EXPECT_FALSE(looks_like_jwt(bad + "a.b.c")) << c;
        EXPECT_FALSE(looks_like_jwt("a.b" + bad + "b.c")) << c;
        EXPECT_FALSE(looks_like_jwt("a.b.c" + bad)) << c;
    }
}

TEST(JwtHelpers, HasTwoDots) {
    EXPECT_TRUE(has_two_dots("a.b.c"));
    EXPECT_TRUE(has_two_dots(".."));  // the cheap pre-check: shape comes later
    EXPECT_TRUE(has_two_dots("a+b.c~d.e"));
    EXPECT_FALSE(has_two_dots(""));
    EXPECT_FALSE(has_two_dots("sess_123"));
    EXPECT_FALSE(has_two_dots("a.b"));
    EXPECT_FALSE(has_two_dots("a.b.c.d"));
    EXPECT_FALSE(has_two_dots("..."));
}

TEST(JwtHelpers, Base64urlDecode) {
    std::string out;
    ASSERT_TRUE(base64url_decode("", out));
    EXPECT_EQ(out, "");
    ASSERT_TRUE(base64url_decode("QQ", out));
    EXPECT_EQ(out, "A");
    ASSERT_TRUE(base64url_decode("QUI", out));
    EXPECT_EQ(out, "AB");
    ASSERT_TRUE(base64url_decode("QUJD", out));
    EXPECT_EQ(out, "ABC");
    ASSERT_TRUE(base64url_decode("-_8", out));
    EXPECT_EQ(out, "\xfb\xff");
    EXPECT_FALSE(base64url_decode("QQ==", out));
    EXPECT_FALSE(base64url_decode("+/8", out));
    EXPECT_FALSE(base64url_decode("Q", out));
    EXPECT_FALSE(base64url_decode("QUJDR", out));
    EXPECT_FALSE(base64url_decode("QU JD", out));
    EXPECT_FALSE(base64url_decode(std::string_view("QU\0D", 4), out));
}

TEST(JwtHelpers, ErrorNamesAreDistinct) {
    std::set<std::string_view> names;
    for (int i = 0; i <= static_cast<int>(JwtError::pending); ++i) {
        names.insert(jwt_error_name(static_cast<JwtError>(i)));
    }
    EXPECT_EQ(names.size(), static_cast<std::size_t>(JwtError::pending) + 1);
    EXPECT_EQ(jwt_error_name(JwtError::issued_in_future), "issued_in_future");
}

}  // namespace
}  // namespace session::core
