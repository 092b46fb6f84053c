#include "core/token.hpp"

#include <gtest/gtest.h>

#include <string>

namespace session::core {
namespace {

using namespace std::string_view_literals;

// The view must point into the header, not at a copy.
bool lies_inside(std::string_view part, std::string_view whole) {
    return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}

TEST(FindCookie, SingleCookie) {
    EXPECT_EQ(find_cookie("sessionId=abc", "sessionId"), "abc");
}

TEST(FindCookie, SeveralCookies) {
    const std::string_view header = "a=1; sessionId=sess_123; b=2";
    const auto value = find_cookie(header, "sessionId");
    ASSERT_TRUE(value.has_value());
    EXPECT_EQ(*value, "sess_123");
    EXPECT_TRUE(lies_inside(*value, header));
    EXPECT_EQ(find_cookie(header, "a"), "1");
    EXPECT_EQ(find_cookie(header, "b"), "2");
}

TEST(FindCookie, Absent) {
    EXPECT_EQ(find_cookie("a=1; b=2", "sessionId"), std::nullopt);
    EXPECT_EQ(find_cookie("", "sessionId"), std::nullopt);
    EXPECT_EQ(find_cookie(";;;", "sessionId"), std::nullopt);
}

TEST(FindCookie, NameIsCaseSensitive) {
    EXPECT_EQ(find_cookie("SessionId=abc", "sessionId"), std::nullopt);
    EXPECT_EQ(find_cookie("SessionId=abc; sessionId=def", "sessionId"), "def");
}

TEST(FindCookie, NameMustMatchWhole) {
    EXPECT_EQ(find_cookie("xsessionId=evil", "sessionId"), std::nullopt);
    EXPECT_EQ(find_cookie("sessionIdx=evil", "sessionId"), std::nullopt);
    EXPECT_EQ(find_cookie("xsessionId=evil; sessionIdx=evil; sessionId=good", "sessionId"), "good");
    // A value that contains the name is not a name either.
    EXPECT_EQ(find_cookie("other=sessionId=evil", "sessionId"), std::nullopt);
    EXPECT_EQ(find_cookie("a=1;sessionId", "sessionId"), std::nullopt);
}

TEST(FindCookie, QuotedValue) {
    EXPECT_EQ(find_cookie("sessionId=\"abc\"", "sessionId"), "abc");
    EXPECT_EQ(find_cookie("a=1; sessionId=\"abc\" ; b=2", "sessionId"), "abc");
    EXPECT_EQ(find_cookie("sessionId=\"\"", "sessionId"), "");
    // A lone or unbalanced quote is kept; is_valid_token refuses it later.
    EXPECT_EQ(find_cookie("sessionId=\"", "sessionId"), "\"");
    EXPECT_EQ(find_cookie("sessionId=\"abc", "sessionId"), "\"abc");
}

TEST(FindCookie, DuplicateNamesFirstWins) {
    EXPECT_EQ(find_cookie("sessionId=first; sessionId=second", "sessionId"), "first");
    // Even when the first is empty: the client sent it first.
    EXPECT_EQ(find_cookie("sessionId=; sessionId=second", "sessionId"), "");
}

TEST(FindCookie, EmptyValue) {
    const auto value = find_cookie("a=1; sessionId=; b=2", "sessionId");
    ASSERT_TRUE(value.has_value());
    EXPECT_TRUE(value->empty());
    EXPECT_EQ(find_cookie("sessionId=", "sessionId"), "");
}

TEST(FindCookie, WhiteSpace) {
    EXPECT_EQ(find_cookie("   sessionId=abc   ", "sessionId"), "abc");
    EXPECT_EQ(find_cookie("a=1;sessionId=abc;b=2", "sessionId"), "abc");
    EXPECT_EQ(find_cookie("a=1 ;\tsessionId = abc\t; b=2", "sessionId"), "abc");
    EXPECT_EQ(find_cookie("a=1;  sessionId=abc  ", "sessionId"), "abc");
}

TEST(FindCookie, PairsWithoutEqualsAreSkipped) {
    EXPECT_EQ(find_cookie("sessionId; sessionId=abc", "sessionId"), "abc");
    EXPECT_EQ(find_cookie("flag; other; sessionId=abc", "sessionId"), "abc");
    EXPECT_EQ(find_cookie("sessionId", "sessionId"), std::nullopt);
}

TEST(FindCookie, ValueMayContainEquals) {
    EXPECT_EQ(find_cookie("sessionId=a=b==", "sessionId"), "a=b==");
}

TEST(FindCookie, EmptyNameNeverMatches) {
    EXPECT_EQ(find_cookie("=abc", ""), std::nullopt);
    EXPECT_EQ(find_cookie("a=1", ""), std::nullopt);
}

TEST(FindCookie, HugeHeader) {
    std::string header;
    for (int i = 0; i < 20000; ++i) {
        header += "cookie" + std::to_string(i) + "=value" + std::to_string(i) + "; ";
    }
    header += "sessionId=last_one";
    const auto value = find_cookie(header, "sessionId");
    ASSERT_TRUE(value.has_value());
    EXPECT_EQ(*value, "last_one");
    EXPECT_TRUE(lies_inside(*value, header));
    EXPECT_EQ(find_cookie(header, "cookie19999"), "value19999");
    EXPECT_EQ(find_cookie(header, "missing"), std::nullopt);

    // One huge value is returned whole; length limits are is_valid_token's job.
    const std::string big(1 << 20, 'x');
    const std::string single = "a=1; sessionId=" + big + "; b=2";
    const auto big_value = find_cookie(single, "sessionId");
    ASSERT_TRUE(big_value.has_value());
    EXPECT_EQ(big_value->size(), big.size());
}

TEST(ParseBearer, Basic) {
    const std::string_view header = "Bearer sess_abc";
    const auto token = parse_bearer(header);
    ASSERT_TRUE(token.has_value());
    EXPECT_EQ(*token, "sess_abc");
    EXPECT_TRUE(lies_inside(*token, header));
}

TEST(ParseBearer, SchemeIsCaseInsensitive) {
    EXPECT_EQ(parse_bearer("bearer abc"), "abc");
    EXPECT_EQ(parse_bearer("BEARER abc"), "abc");
    EXPECT_EQ(parse_bearer("BeArEr abc"), "abc");
}

TEST(ParseBearer, ExtraSpaces) {
    EXPECT_EQ(parse_bearer("Bearer     abc"), "abc");
    EXPECT_EQ(parse_bearer("Bearer abc   "), "abc");
    EXPECT_EQ(parse_bearer("  Bearer abc"), "abc");
    EXPECT_EQ(parse_bearer("Bearer\tabc\t"), "abc");
}

TEST(ParseBearer, InnerWhiteSpaceRefused) {
    EXPECT_EQ(parse_bearer("Bearer abc def"), std::nullopt);
    EXPECT_EQ(parse_bearer("Bearer abc\tdef"), std::nullopt);
}

TEST(ParseBearer, OtherSchemes) {
    EXPECT_EQ(parse_bearer("Basic dXNlcjpwYXNz"), std::nullopt);
    EXPECT_EQ(parse_bearer("Token abc"), std::nullopt);
    EXPECT_EQ(parse_bearer("Bearerabc"), std::nullopt);
    EXPECT_EQ(parse_bearer("Bearerx abc"), std::nullopt);
    EXPECT_EQ(parse_bearer("Beare abc"), std::nullopt);
    EXPECT_EQ(parse_bearer("abc"), std::nullopt);
}

TEST(ParseBearer, Empty) {
    EXPECT_EQ(parse_bearer(""), std::nullopt);
    EXPECT_EQ(parse_bearer("Bearer"), std::nullopt);
    EXPECT_EQ(parse_bearer("Bearer "), std::nullopt);
    EXPECT_EQ(parse_bearer("Bearer      "), std::nullopt);
    EXPECT_EQ(parse_bearer("   "), std::nullopt);
}

TEST(IsValidToken, Charset) {
    EXPECT_TRUE(is_valid_token("sess_2abcDEF0123456789"));
    EXPECT_TRUE(is_valid_token("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln-_~+/="));
    EXPECT_TRUE(is_valid_token("a"));
    const std::string_view refused[] = {
        "a b",
        "a;b",
        "a,b",
        "a\"b",
        "a\\b",
        "a\tb",
        "a\rb",
        "a\nb",
        "a*b",
        "a%b",
        "a:b",
        "a@b",
        "a{b",
        "a<b",
        "\"ab\"",
        "a\x7f"
        "b",
        "caf\xc3\xa9",
        "a\0b"sv,
    };
    for (const auto token : refused) {
        EXPECT_FALSE(is_valid_token(token)) << "accepted " << testing::PrintToString(token);
    }
}

TEST(IsValidToken, EveryByte) {
    const std::string_view allowed_punctuation = "._~+/=-";
    int accepted = 0;
    for (int c = 0; c < 256; ++c) {
        const char byte = static_cast<char>(c);
        const bool expected = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                              (c >= '0' && c <= '9') ||
                              allowed_punctuation.find(byte) != std::string_view::npos;
        EXPECT_EQ(is_valid_token(std::string_view(&byte, 1)), expected) << "byte " << c;
        accepted += expected ? 1 : 0;
    }
    EXPECT_EQ(accepted, 26 + 26 + 10 + 7);
}

TEST(IsValidToken, LengthBounds) {
    EXPECT_FALSE(is_valid_token(""));
    EXPECT_TRUE(is_valid_token(std::string(1, 'a')));
    EXPECT_TRUE(is_valid_token(std::string(kMaxTokenLength - 1, 'a')));
    EXPECT_TRUE(is_valid_token(std::string(4096, 'a')));
    EXPECT_FALSE(is_valid_token(std::string(4097, 'a')));
    EXPECT_FALSE(is_valid_token(std::string(100000, 'a')));
    EXPECT_EQ(kMaxTokenLength, 4096u);
}

TEST(IsValidToken, CookieAndBearerPipeline) {
    EXPECT_FALSE(is_valid_token(*find_cookie("sessionId=", "sessionId")));
    EXPECT_FALSE(is_valid_token(*find_cookie("sessionId=\"", "sessionId")));
    EXPECT_TRUE(is_valid_token(*find_cookie("sessionId=\"sess_1\"", "sessionId")));
    EXPECT_TRUE(is_valid_token(*parse_bearer("Bearer sess_1")));
}

}  // namespace
}  // namespace session::core
