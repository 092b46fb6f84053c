// decode_lookup_reply on replies parsed by hiredis's own reader from RESP
// bytes, so the structs are exactly those the module receives.
#include <hiredis/hiredis.h>

#include <gtest/gtest.h>

#include <initializer_list>
#include <memory>
#include <string>

#include "core/record.hpp"

namespace session::core {
namespace {

using namespace std::string_literals;

struct ReplyDeleter {
    void operator()(redisReply* reply) const {
        if (reply != nullptr) freeReplyObject(reply);
    }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

ReplyPtr parse_resp(const std::string& bytes) {
    redisReader* reader = redisReaderCreate();
    EXPECT_EQ(redisReaderFeed(reader, bytes.data(), bytes.size()), REDIS_OK);
    void* reply = nullptr;
    EXPECT_EQ(redisReaderGetReply(reader, &reply), REDIS_OK);
    redisReaderFree(reader);
    EXPECT_NE(reply, nullptr) << "incomplete RESP: " << bytes;
    return ReplyPtr(static_cast<redisReply*>(reply));
}

std::string bulk(const std::string& value) {
    return "$" + std::to_string(value.size()) + "\r\n" + value + "\r\n";
}
const std::string kNil = "$-1\r\n";
std::string array(std::initializer_list<std::string> elements) {
    std::string out = "*" + std::to_string(elements.size()) + "\r\n";
    for (const auto& element : elements) out += element;
    return out;
}

const std::string kSessionArray =
    array({bulk("user_1"), bulk("1700000060000"), kNil, bulk("60"), bulk("1700000000000"), kNil});
const std::string kUserArray =
    array({bulk("admin"), bulk("admin acme/org:admin"), bulk("42"), bulk("a@example.com"), kNil});

// The record's views point into the reply, so the reply must outlive every
// check on the record: each test keeps the last one parsed here.
class DecodeLookupReply : public testing::Test {
  protected:
    DecodeStatus decode(const std::string& resp, LookupRecord& record) {
        reply_ = parse_resp(resp);
        if (!reply_) return DecodeStatus::malformed;  // parse_resp already failed
        return decode_lookup_reply(reply_.get(), record);
    }

    ReplyPtr reply_;
};

TEST_F(DecodeLookupReply, SessionAndUser) {
    const ReplyPtr reply = parse_resp(array({kSessionArray, kUserArray}));
    ASSERT_TRUE(reply);
    LookupRecord record;
    ASSERT_EQ(decode_lookup_reply(reply.get(), record), DecodeStatus::ok);
    EXPECT_EQ(record.get(SessionField::user_id), "user_1");
    EXPECT_EQ(record.get(SessionField::expires_at), "1700000060000");
    EXPECT_EQ(record.get(SessionField::status), std::nullopt);
    EXPECT_EQ(record.get(SessionField::idle_timeout), "60");
    EXPECT_EQ(record.get(SessionField::last_active_at), "1700000000000");
    EXPECT_EQ(record.get(SessionField::token_type), std::nullopt);
    EXPECT_EQ(record.get(UserField::role), "admin");
    EXPECT_EQ(record.get(UserField::roles), "admin acme/org:admin");
    EXPECT_EQ(record.get(UserField::db_id), "42");
    EXPECT_EQ(record.get(UserField::email), "a@example.com");
    EXPECT_EQ(record.get(UserField::status), std::nullopt);
    EXPECT_FALSE(record.user_missing());
    // The views point into the reply, not into copies.
    const redisReply* user_id = reply->element[0]->element[0];
    EXPECT_EQ(record.get(SessionField::user_id)->data(), user_id->str);
    EXPECT_EQ(evaluate(record, 1700000000000, Policy{}).outcome, Outcome::ok);
}

TEST_F(DecodeLookupReply, SessionWithoutUserHash) {
    LookupRecord record;
    ASSERT_EQ(decode(array({kSessionArray, array({kNil, kNil, kNil, kNil, kNil})}), record),
              DecodeStatus::ok);
    EXPECT_EQ(record.get(SessionField::user_id), "user_1");
    EXPECT_TRUE(record.user_missing());
}

TEST_F(DecodeLookupReply, NoSuchSession) {
    // The script returns only the session's HMGET when it names no user.
    LookupRecord record;
    ASSERT_EQ(decode(array({array({kNil, kNil, kNil, kNil, kNil, kNil})}), record),
              DecodeStatus::ok);
    for (const auto& field : record.session) EXPECT_FALSE(field.has_value());
    EXPECT_TRUE(record.user_missing());
    EXPECT_EQ(evaluate(record, 0, Policy{}).outcome, Outcome::invalid);
}

TEST_F(DecodeLookupReply, SessionWithoutUserIdOneArray) {
    LookupRecord record;
    ASSERT_EQ(
        decode(array({array({kNil, bulk("5"), bulk("active"), kNil, kNil, bulk("jwt")})}), record),
        DecodeStatus::ok);
    EXPECT_EQ(record.get(SessionField::expires_at), "5");
    EXPECT_EQ(record.get(SessionField::status), "active");
    EXPECT_EQ(record.get(SessionField::token_type), "jwt");
}

TEST_F(DecodeLookupReply, EmptyStringsAreNotNil) {
    LookupRecord record;
    ASSERT_EQ(decode(array({array({bulk(""), bulk(""), bulk(""), bulk(""), bulk(""), bulk("")}),
                            array({bulk(""), kNil, bulk(""), kNil, bulk("")})}),
                     record),
              DecodeStatus::ok);
    for (const auto& field : record.session) {
        ASSERT_TRUE(field.has_value());
        EXPECT_TRUE(field->empty());
    }
    EXPECT_EQ(record.get(UserField::role), "");
    EXPECT_EQ(record.get(UserField::roles), std::nullopt);
}

TEST_F(DecodeLookupReply, ErrorReplies) {
    LookupRecord record;
    EXPECT_EQ(decode("-NOSCRIPT No matching script. Please use EVAL.\r\n", record),
              DecodeStatus::redis_error);
    EXPECT_EQ(
        decode("-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", record),
        DecodeStatus::redis_error);
    EXPECT_EQ(decode("-OOM command not allowed\r\n", record), DecodeStatus::redis_error);
}

TEST_F(DecodeLookupReply, NullReply) {
    LookupRecord record;
    EXPECT_EQ(decode_lookup_reply(nullptr, record), DecodeStatus::malformed);
}

TEST_F(DecodeLookupReply, WrongTopLevelTypes) {
    for (const std::string& resp :
         {"+OK\r\n"s, ":1\r\n"s, kNil, bulk("x"), "*-1\r\n"s, "*0\r\n"s, kSessionArray}) {
        LookupRecord record;
        EXPECT_EQ(decode(resp, record), DecodeStatus::malformed) << resp;
    }
}

TEST_F(DecodeLookupReply, WrongArrayCounts) {
    const std::string three = array({kSessionArray, kUserArray, kUserArray});
    // Five session fields: a reply from the lookup script before token_type.
    const std::string five_fields = array({array({bulk("u"), bulk("1"), kNil, kNil, kNil})});
    const std::string seven_fields =
        array({array({bulk("u"), bulk("1"), kNil, kNil, kNil, kNil, kNil})});
    const std::string short_user = array({kSessionArray, array({bulk("admin"), kNil, kNil, kNil})});
    const std::string empty_user = array({kSessionArray, "*0\r\n"});
    const std::string nil_user = array({kSessionArray, "*-1\r\n"});
    for (const std::string& resp :
         {three, five_fields, seven_fields, short_user, empty_user, nil_user}) {
        LookupRecord record;
        EXPECT_EQ(decode(resp, record), DecodeStatus::malformed) << resp;
    }
}

TEST_F(DecodeLookupReply, WrongElementTypes) {
    const std::string integer_field =
        array({array({bulk("u"), ":1700000060000\r\n", kNil, kNil, kNil, kNil})});
    const std::string status_field = array({array({bulk("u"), "+1\r\n", kNil, kNil, kNil, kNil})});
    const std::string error_field =
        array({array({bulk("u"), "-ERR x\r\n", kNil, kNil, kNil, kNil})});
    const std::string nested_array = array({array({bulk("u"), "*0\r\n", kNil, kNil, kNil, kNil})});
    const std::string token_type_integer =
        array({array({bulk("u"), bulk("1"), kNil, kNil, kNil, ":1\r\n"})});
    const std::string user_integer =
        array({kSessionArray, array({":1\r\n", kNil, kNil, kNil, kNil})});
    const std::string first_not_array = array({bulk("x"), kUserArray});
    const std::string nil_first = array({kNil, kUserArray});
    for (const std::string& resp : {integer_field, status_field, error_field, nested_array,
                                    token_type_integer, user_integer, first_not_array, nil_first}) {
        LookupRecord record;
        EXPECT_EQ(decode(resp, record), DecodeStatus::malformed) << resp;
    }
}

TEST_F(DecodeLookupReply, UserArrayMustMatchUserId) {
    LookupRecord record;
    // A session naming a user, without the user's HMGET: fail closed.
    EXPECT_EQ(decode(array({kSessionArray}), record), DecodeStatus::malformed);
    // A user's HMGET for a session that names no user.
    EXPECT_EQ(decode(array({array({kNil, bulk("1"), kNil, kNil, kNil, kNil}), kUserArray}), record),
              DecodeStatus::malformed);
}

TEST_F(DecodeLookupReply, MalformedLeavesEmptyRecord) {
    LookupRecord record;
    record.session[0] = "stale";
    ASSERT_EQ(decode(array({kSessionArray, array({":1\r\n", kNil, kNil, kNil, kNil})}), record),
              DecodeStatus::malformed);
    for (const auto& field : record.session) EXPECT_FALSE(field.has_value());
    EXPECT_TRUE(record.user_missing());
}

TEST_F(DecodeLookupReply, HugeValue) {
    const std::string big(8 << 20, 'r');
    const ReplyPtr reply =
        parse_resp(array({kSessionArray, array({bulk("admin"), bulk(big), kNil, kNil, kNil})}));
    ASSERT_TRUE(reply);
    LookupRecord record;
    ASSERT_EQ(decode_lookup_reply(reply.get(), record), DecodeStatus::ok);
    ASSERT_TRUE(record.get(UserField::roles).has_value());
    EXPECT_EQ(record.get(UserField::roles)->size(), big.size());
    EXPECT_EQ(*record.get(UserField::roles), big);
}

TEST_F(DecodeLookupReply, BinaryValues) {
    const std::string binary = "a\0b\r\nc\xff\x00"s;
    const std::string crlf_only = "\r\n";
    const ReplyPtr reply =
        parse_resp(array({array({bulk(binary), bulk("1"), bulk(crlf_only), kNil, kNil, kNil}),
                          array({bulk(binary), kNil, kNil, bulk("x\r\n$-1\r\n"), kNil})}));
    ASSERT_TRUE(reply);
    LookupRecord record;
    ASSERT_EQ(decode_lookup_reply(reply.get(), record), DecodeStatus::ok);
    EXPECT_EQ(record.get(SessionField::user_id), binary);
    EXPECT_EQ(record.get(SessionField::user_id)->size(), 8u);
    EXPECT_EQ(record.get(SessionField::status), crlf_only);
    EXPECT_EQ(record.get(UserField::role), binary);
    EXPECT_EQ(record.get(UserField::email), "x\r\n$-1\r\n");
}

}  // namespace
}  // namespace session::core
