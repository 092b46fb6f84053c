// Clerk's handshake decisions, as its backend SDK makes them
// (packages/backend/src/tokens/handshake.ts and request.ts).
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <string_view>

#include "core/handshake.hpp"

namespace session::core {
namespace {

using namespace std::string_view_literals;

constexpr std::int64_t kClientUat = 1700000000;

// A request carrying __session (verified with `error`) and __client_uat.
HandshakeInput with_session(JwtError error, std::int64_t iat,
                            std::optional<std::string_view> client_uat = "1700000000") {
    HandshakeInput input;
    input.has_session_cookie = true;
    input.client_uat = client_uat;
    input.token_error = error;
    input.token_has_iat = true;
    input.token_iat = iat;
    return input;
}

// ---- handshake_eligible ----------------------------------------------------

TEST(HandshakeEligible, DocumentAndIframeDestinations) {
    EXPECT_TRUE(handshake_eligible("document"sv, std::nullopt));
    EXPECT_TRUE(handshake_eligible("iframe"sv, "application/json"sv));
}

TEST(HandshakeEligible, OtherDestinationsAreNotEvenWithHtmlAccept) {
    EXPECT_FALSE(handshake_eligible("empty"sv, "text/html"sv));
    EXPECT_FALSE(handshake_eligible("script"sv, "text/html,*/*"sv));
    EXPECT_FALSE(handshake_eligible("Document"sv, std::nullopt));  // the SDK compares exactly
}

TEST(HandshakeEligible, NoDestinationFallsBackToAccept) {
    EXPECT_TRUE(handshake_eligible(std::nullopt, "text/html,application/xhtml+xml"sv));
    EXPECT_TRUE(handshake_eligible(""sv, "text/html"sv));  // empty reads as absent
    EXPECT_FALSE(handshake_eligible(std::nullopt, "application/json, text/html"sv));
    EXPECT_FALSE(handshake_eligible(std::nullopt, "*/*"sv));
    EXPECT_FALSE(handshake_eligible(std::nullopt, std::nullopt));
}

// ---- handshake_reason ------------------------------------------------------

TEST(HandshakeReason, NoCookiesIsSignedOutNotHandshake) {
    HandshakeInput input;
    EXPECT_EQ(handshake_reason(input), std::nullopt);
    input.client_uat = "0";
    EXPECT_EQ(handshake_reason(input), std::nullopt);
}

TEST(HandshakeReason, ClientUatWithoutSession) {
    HandshakeInput input;
    input.client_uat = "1700000000";
    EXPECT_EQ(handshake_reason(input), "client-uat-but-no-session-token"sv);
}

TEST(HandshakeReason, SessionWithoutClientUat) {
    EXPECT_EQ(handshake_reason(with_session(JwtError::none, kClientUat, std::nullopt)),
              "session-token-but-no-client-uat"sv);
    EXPECT_EQ(handshake_reason(with_session(JwtError::none, kClientUat, "0")),
              "session-token-but-no-client-uat"sv);
    // Before any look at the token, as in the SDK.
    EXPECT_EQ(handshake_reason(with_session(JwtError::signature, kClientUat, "0")),
              "session-token-but-no-client-uat"sv);
}

TEST(HandshakeReason, ClientUatThatIsNotDecimalCountsAsZero) {
    for (std::string_view garbage :
         {""sv, "abc"sv, "12abc"sv, "-5"sv, " 1"sv, "1.5"sv, "99999999999999999999"sv}) {
        EXPECT_EQ(handshake_reason(with_session(JwtError::none, kClientUat, garbage)),
                  "session-token-but-no-client-uat"sv)
            << garbage;
        HandshakeInput no_session;
        no_session.client_uat = garbage;
        EXPECT_EQ(handshake_reason(no_session), std::nullopt) << garbage;
    }
}

TEST(HandshakeReason, ValidTokenIssuedBeforeClientUat) {
    EXPECT_EQ(handshake_reason(with_session(JwtError::none, kClientUat - 1)),
              "session-token-iat-before-client-uat"sv);
}

TEST(HandshakeReason, ValidTokenIssuedAtOrAfterClientUatNeedsNone) {
    EXPECT_EQ(handshake_reason(with_session(JwtError::none, kClientUat)), std::nullopt);
    EXPECT_EQ(handshake_reason(with_session(JwtError::none, kClientUat + 30)), std::nullopt);
}

TEST(HandshakeReason, TokenWithoutIatIsNotOutdated) {
    HandshakeInput input = with_session(JwtError::none, 0);
    input.token_has_iat = false;
    EXPECT_EQ(handshake_reason(input), std::nullopt);
}

TEST(HandshakeReason, TimeErrors) {
    EXPECT_EQ(handshake_reason(with_session(JwtError::expired, kClientUat)),
              "session-token-expired-refresh-non-eligible-no-refresh-cookie"sv);
    EXPECT_EQ(handshake_reason(with_session(JwtError::not_yet_valid, kClientUat)),
              "session-token-nbf"sv);
    EXPECT_EQ(handshake_reason(with_session(JwtError::issued_in_future, kClientUat + 600)),
              "session-token-iat-in-the-future"sv);
}

TEST(HandshakeReason, OutdatedIatComesBeforeTimeErrors) {
    // request.ts compares iat with __client_uat before verifying the token.
    EXPECT_EQ(handshake_reason(with_session(JwtError::expired, kClientUat - 120)),
              "session-token-iat-before-client-uat"sv);
}

TEST(HandshakeReason, PendingTokenOnlyWhenOutdated) {
    EXPECT_EQ(handshake_reason(with_session(JwtError::pending, kClientUat)), std::nullopt);
    EXPECT_EQ(handshake_reason(with_session(JwtError::pending, kClientUat - 1)),
              "session-token-iat-before-client-uat"sv);
}

TEST(HandshakeReason, OtherRefusalsAreNotHandshakeCases) {
    for (JwtError error : {JwtError::malformed, JwtError::type, JwtError::algorithm,
                           JwtError::category, JwtError::unknown_key, JwtError::signature,
                           JwtError::subject, JwtError::issuer, JwtError::authorized_party}) {
        // Not even with an older iat: an unverified iat buys no redirect.
        EXPECT_EQ(handshake_reason(with_session(error, kClientUat - 1)), std::nullopt)
            << static_cast<int>(error);
        EXPECT_EQ(handshake_reason(with_session(error, kClientUat)), std::nullopt)
            << static_cast<int>(error);
    }
}

// ---- handshake_url ---------------------------------------------------------

TEST(HandshakeUrl, ParametersInTheSdkOrder) {
    EXPECT_EQ(
        handshake_url("https://clerk.example.com", "https://app.example.com/", "session-token-nbf"),
        "https://clerk.example.com/v1/client/handshake"
        "?redirect_url=https%3A%2F%2Fapp.example.com%2F"
        "&__clerk_api_version=2025-11-10"
        "&suffixed_cookies=false"
        "&__clerk_hs_reason=session-token-nbf"
        "&format=token");
}

TEST(HandshakeUrl, TrailingSlashesOfTheFrontendApiAreDropped) {
    const std::string url = handshake_url("https://clerk.example.com//", "x", "r");
    EXPECT_EQ(url.rfind("https://clerk.example.com/v1/client/handshake?redirect_url=x&", 0), 0u)
        << url;
}

TEST(HandshakeUrl, RedirectUrlIsPercentEncoded) {
    const std::string url =
        handshake_url("https://clerk.example.com",
                      "https://app.example.com/a b/c?q=1&r=2#frag~-._\xc3\xa9\x7f", "r");
    EXPECT_NE(url.find("?redirect_url=https%3A%2F%2Fapp.example.com%2Fa%20b%2Fc%3Fq%3D1%26r%3D2"
                       "%23frag~-._%C3%A9%7F&__clerk_api_version="),
              std::string::npos)
        << url;
}

TEST(HandshakeUrl, ReasonIsEncodedToo) {
    const std::string url = handshake_url("https://clerk.example.com", "x", "a&b=c");
    EXPECT_NE(url.find("&__clerk_hs_reason=a%26b%3Dc&format=token"), std::string::npos) << url;
}

TEST(HandshakeUrl, CarriesNoSessionToken) {
    const std::string url = handshake_url("https://clerk.example.com", "https://app.example.com/",
                                          "session-token-expired");
    EXPECT_EQ(url.find("__session"), std::string::npos) << url;
    EXPECT_EQ(url.find("format=nonce"), std::string::npos) << url;
}

// ---- redirect_count / redirect_count_cookie ---------------------------------

TEST(HandshakeRedirectCount, Decimal0To99) {
    EXPECT_EQ(redirect_count("0"sv), 0);
    EXPECT_EQ(redirect_count("1"sv), 1);
    EXPECT_EQ(redirect_count("3"sv), 3);
    EXPECT_EQ(redirect_count("99"sv), 99);
    EXPECT_EQ(redirect_count("007"sv), 7);
}

TEST(HandshakeRedirectCount, AbsentOrGarbageIsZero) {
    EXPECT_EQ(redirect_count(std::nullopt), 0);
    for (std::string_view garbage :
         {""sv, "100"sv, "-1"sv, "1a"sv, " 2"sv, "2 "sv, "3.0"sv, "99999999999999999999"sv}) {
        EXPECT_EQ(redirect_count(garbage), 0) << garbage;
    }
}

TEST(HandshakeRedirectCountCookie, AsTheSdkSetsIt) {
    EXPECT_EQ(redirect_count_cookie(1),
              "__clerk_redirect_count=1; SameSite=Lax; HttpOnly; Max-Age=2");
    EXPECT_EQ(redirect_count_cookie(kMaxHandshakeRedirects),
              "__clerk_redirect_count=3; SameSite=Lax; HttpOnly; Max-Age=2");
}

TEST(HandshakeRedirectCountCookie, ReadsBackAndStaysInRange) {
    for (int count : {0, 1, 2, 3, 42, 99}) {
        const std::string cookie = redirect_count_cookie(count);
        const std::string_view value =
            std::string_view(cookie).substr(sizeof("__clerk_redirect_count=") - 1);
        EXPECT_EQ(redirect_count(value.substr(0, value.find(';'))), count);
    }
    EXPECT_EQ(redirect_count_cookie(-4).rfind("__clerk_redirect_count=0;", 0), 0u);
    EXPECT_EQ(redirect_count_cookie(1000).rfind("__clerk_redirect_count=99;", 0), 0u);
}

// ---- set_cookie_name / is_clerk_cookie_directive ----------------------------

TEST(HandshakeSetCookieName, NameBeforeTheFirstEquals) {
    EXPECT_EQ(set_cookie_name("__session=eyJ.a.b; Path=/; SameSite=Lax"), "__session");
    EXPECT_EQ(set_cookie_name("__client_uat=0"), "__client_uat");
    EXPECT_EQ(set_cookie_name("  __session \t= x"), "__session");
    EXPECT_EQ(set_cookie_name("a=b=c"), "a");
    EXPECT_EQ(set_cookie_name("__clerk_handshake=; Max-Age=0"), "__clerk_handshake");
}

TEST(HandshakeSetCookieName, NoEqualsBeforeTheAttributesMeansNoName) {
    EXPECT_EQ(set_cookie_name("__session; Path=/"), "");
    EXPECT_EQ(set_cookie_name("__session"), "");
    EXPECT_EQ(set_cookie_name(""), "");
}

TEST(HandshakeClerkCookieDirective, ClerkNamesAccepted) {
    for (std::string_view directive : {
             "__session=eyJ.a.b; Path=/; SameSite=Lax; Secure"sv,
             "__client_uat=1700000000; Path=/; Domain=example.com; Max-Age=315360000"sv,
             "__client_uat=0; Path=/"sv,
             "__refresh=abc; Path=/; HttpOnly"sv,
             "__clerk_db_jwt=dvb_1; Path=/"sv,
             "__clerk_handshake=; Path=/; Domain=example.com; Max-Age=0"sv,
             "__clerk_handshake_nonce=; Max-Age=0"sv,
             "__clerk_redirect_count=1; SameSite=Lax; HttpOnly; Max-Age=2"sv,
             " __session=x"sv,
         }) {
        EXPECT_TRUE(is_clerk_cookie_directive(directive)) << directive;
    }
}

TEST(HandshakeClerkCookieDirective, SuffixedVariantsAccepted) {
    for (std::string_view directive : {
             "__session_Q0LnNbu6=eyJ.a.b; Path=/"sv,
             "__client_uat_a-b_C9=0; Path=/"sv,
             "__refresh_Q0LnNbu6=r"sv,
             "__clerk_db_jwt_Q0LnNbu6=d"sv,
         }) {
        EXPECT_TRUE(is_clerk_cookie_directive(directive)) << directive;
    }
}

TEST(HandshakeClerkCookieDirective, ForeignNamesRefused) {
    for (std::string_view directive : {
             "sessionid=abc; Path=/"sv,
             "__sessionX=abc"sv,     // not <name>_<suffix>
             "__session_=abc"sv,     // empty suffix
             "__session_a.b=abc"sv,  // outside base64url
             "__session_a b=abc"sv,
             "__clerk_other=abc"sv,
             "__clerk=abc"sv,
             "x__session=abc"sv,
             "__Session=abc"sv,
             "=abc"sv,
             "__session; Path=/"sv,
             ""sv,
         }) {
        EXPECT_FALSE(is_clerk_cookie_directive(directive)) << directive;
    }
}

TEST(HandshakeClerkCookieDirective, ControlCharactersRefusedAnywhere) {
    using namespace std::string_literals;
    for (const std::string& directive : {
             "__session=a\r\nSet-Cookie: evil=1"s,
             "__session=a; Path=/\r\nX-Injected: 1"s,
             "__session=a\n"s,
             "__session=a\rb"s,
             "__session=a\0b"s,
             "__session=a; Domain=example.com\0"s,
             "__session=a\tb"s,
             "__session=a\x1b"s,
             "__session=a; Path=/\x7f"s,
         }) {
        EXPECT_FALSE(is_clerk_cookie_directive(directive)) << directive;
    }
    // Bytes above 0x7f are not control characters.
    EXPECT_TRUE(is_clerk_cookie_directive("__session=a\xc3\xa9"));
}

// ---- without_handshake_params -----------------------------------------------

TEST(HandshakeWithoutParams, RemovedAtEachPosition) {
    EXPECT_EQ(without_handshake_params("/p?__clerk_handshake=eyJ.a.b&a=1&b=2"), "/p?a=1&b=2");
    EXPECT_EQ(without_handshake_params("/p?a=1&__clerk_handshake=eyJ.a.b&b=2"), "/p?a=1&b=2");
    EXPECT_EQ(without_handshake_params("/p?a=1&b=2&__clerk_handshake=eyJ.a.b"), "/p?a=1&b=2");
}

TEST(HandshakeWithoutParams, OnlyParamsDropTheQuestionMark) {
    EXPECT_EQ(without_handshake_params("/p?__clerk_handshake=eyJ.a.b"), "/p");
    EXPECT_EQ(without_handshake_params("/p?__clerk_handshake=x&__clerk_help=1"), "/p");
}

TEST(HandshakeWithoutParams, RepeatedAndValueless) {
    EXPECT_EQ(without_handshake_params("/p?__clerk_handshake=1&a=1&__clerk_handshake=2"), "/p?a=1");
    EXPECT_EQ(without_handshake_params("/p?__clerk_handshake&a=1&__clerk_help"), "/p?a=1");
    EXPECT_EQ(without_handshake_params("/p?a=1&__clerk_handshake="), "/p?a=1");
}

TEST(HandshakeWithoutParams, HelpAndNonceRemovedToo) {
    EXPECT_EQ(without_handshake_params("/p?__clerk_help=1&a=1"), "/p?a=1");
    EXPECT_EQ(without_handshake_params("/p?a=1&__clerk_handshake_nonce=n1"), "/p?a=1");
}

TEST(HandshakeWithoutParams, SimilarNamesKept) {
    EXPECT_EQ(without_handshake_params("/p?__clerk_handshakes=1&__clerk_help_me=2&x__clerk_help=3"),
              "/p?__clerk_handshakes=1&__clerk_help_me=2&x__clerk_help=3");
    EXPECT_EQ(without_handshake_params("/p?__clerk_db_jwt=d&__clerk_handshake=h"),
              "/p?__clerk_db_jwt=d");
    // Names compare as sent, undecoded; values may name anything.
    EXPECT_EQ(without_handshake_params("/p?__clerk%5Fhandshake=1&a=__clerk_handshake"),
              "/p?__clerk%5Fhandshake=1&a=__clerk_handshake");
}

TEST(HandshakeWithoutParams, RestKeptVerbatimAndPathUntouched) {
    EXPECT_EQ(without_handshake_params("/a%20b/__clerk_handshake=1?q=a%26b+c&__clerk_help=1&z="),
              "/a%20b/__clerk_handshake=1?q=a%26b+c&z=");
    EXPECT_EQ(without_handshake_params("/p?a=1&&b=2&__clerk_help=1"), "/p?a=1&&b=2");
}

TEST(HandshakeWithoutParams, NothingToRemoveLeavesUriAsIs) {
    EXPECT_EQ(without_handshake_params("/p"), "/p");
    EXPECT_EQ(without_handshake_params("/p?"), "/p?");
    EXPECT_EQ(without_handshake_params("/p?a=1&b"), "/p?a=1&b");
    EXPECT_EQ(without_handshake_params("/__clerk_handshake"), "/__clerk_handshake");
}

}  // namespace
}  // namespace session::core
