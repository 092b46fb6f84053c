#include "core/flat_record.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace session::core {
namespace {

using namespace std::string_literals;

std::vector<unsigned char> encode(const LookupRecord& record) {
    std::vector<unsigned char> buffer(flat_size(record));
    flat_encode(record, buffer.data());
    return buffer;
}

void expect_same(const LookupRecord& a, const LookupRecord& b) {
    for (std::size_t i = 0; i < kSessionFieldCount; ++i) {
        EXPECT_EQ(a.session[i], b.session[i]) << "session field " << i;
    }
    for (std::size_t i = 0; i < kUserFieldCount; ++i) {
        EXPECT_EQ(a.user[i], b.user[i]) << "user field " << i;
    }
}

TEST(FlatRecord, EmptyRecordIsAllNil) {
    const LookupRecord record;
    EXPECT_EQ(flat_size(record), kFlatFieldCount * 4);
    const auto buffer = encode(record);
    for (unsigned char byte : buffer) EXPECT_EQ(byte, 0xFF);
    LookupRecord decoded;
    decoded.session[0] = "junk";
    ASSERT_TRUE(flat_decode(buffer.data(), buffer.size(), decoded));
    expect_same(decoded, record);
}

TEST(FlatRecord, RoundTripNilVersusEmpty) {
    LookupRecord record;
    record.session[0] = "user_1";
    record.session[1] = "";
    record.session[3] = std::nullopt;
    record.user[0] = "";
    record.user[4] = "banned";
    // The cache keeps token_type: a cached identity provider's session stays
    // refused by the opaque check.
    record.session[static_cast<std::size_t>(SessionField::token_type)] = "jwt";
    const auto buffer = encode(record);
    LookupRecord decoded;
    ASSERT_TRUE(flat_decode(buffer.data(), buffer.size(), decoded));
    expect_same(decoded, record);
    EXPECT_EQ(decoded.get(SessionField::token_type), "jwt");
    ASSERT_TRUE(decoded.session[1].has_value());
    EXPECT_TRUE(decoded.session[1]->empty());
    EXPECT_FALSE(decoded.session[3].has_value());
    // Views point into the buffer.
    EXPECT_EQ(reinterpret_cast<const unsigned char*>(decoded.session[0]->data()),
              buffer.data() + 4);
}

TEST(FlatRecord, LayoutIsLittleEndian) {
    LookupRecord record;
    const std::string value(0x0102, 'v');
    record.session[0] = value;
    const auto buffer = encode(record);
    ASSERT_EQ(buffer.size(), kFlatFieldCount * 4 + value.size());
    EXPECT_EQ(buffer[0], 0x02);
    EXPECT_EQ(buffer[1], 0x01);
    EXPECT_EQ(buffer[2], 0x00);
    EXPECT_EQ(buffer[3], 0x00);
    EXPECT_EQ(buffer[4], 'v');
    // The next field (session[1], nil) follows the value.
    EXPECT_EQ(buffer[4 + value.size()], 0xFF);
}

TEST(FlatRecord, RoundTripBinaryAndLarge) {
    const std::string binary = "\0\xff\r\n\x00 end"s;
    const std::string large(3 << 20, 'L');
    LookupRecord record;
    for (std::size_t i = 0; i < kSessionFieldCount; ++i) record.session[i] = binary;
    record.user[1] = large;
    record.user[2] = "x";
    const auto buffer = encode(record);
    EXPECT_EQ(buffer.size(),
              kFlatFieldCount * 4 + kSessionFieldCount * binary.size() + large.size() + 1);
    LookupRecord decoded;
    ASSERT_TRUE(flat_decode(buffer.data(), buffer.size(), decoded));
    expect_same(decoded, record);
}

TEST(FlatRecord, RefusesTruncatedAndTrailing) {
    LookupRecord record;
    record.session[0] = "user_1";
    record.user[3] = "a@example.com";
    const auto buffer = encode(record);
    LookupRecord decoded;
    for (std::size_t len = 0; len < buffer.size(); ++len) {
        EXPECT_FALSE(flat_decode(buffer.data(), len, decoded)) << "length " << len;
    }
    auto longer = buffer;
    longer.push_back(0);
    EXPECT_FALSE(flat_decode(longer.data(), longer.size(), decoded));
    EXPECT_TRUE(flat_decode(buffer.data(), buffer.size(), decoded));
}

TEST(FlatRecord, RefusesLengthBeyondBuffer) {
    std::vector<unsigned char> buffer(kFlatFieldCount * 4, 0);  // all empty strings
    LookupRecord decoded;
    ASSERT_TRUE(flat_decode(buffer.data(), buffer.size(), decoded));
    buffer[0] = 0xFE;
    buffer[1] = 0xFF;
    buffer[2] = 0xFF;
    buffer[3] = 0xFF;  // 0xFFFFFFFE: not nil, far past the end
    EXPECT_FALSE(flat_decode(buffer.data(), buffer.size(), decoded));
}

TEST(FlatRecord, NullEmptyBuffer) {
    LookupRecord decoded;
    EXPECT_FALSE(flat_decode(nullptr, 0, decoded));
}

}  // namespace
}  // namespace session::core
