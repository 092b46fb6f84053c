// decode_session_read (the opaque check's one-key read) and decode_user_hmget
// on replies parsed by hiredis's own reader from RESP bytes, so the structs
// are exactly those the module receives.
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

// The one-key read: the session's six fields, then the user's copies
// (user_status role roles db_id email), as kSessionReadFieldNames asks.
const std::string kSessionFields =
    bulk("user_1") + bulk("1700000060000") + kNil + bulk("60") + bulk("1700000000000") + kNil;
const std::string kCopies =
    bulk("active") + bulk("admin") + bulk("admin org_1/org:admin") + bulk("42") + bulk("a@x.org");
const std::string kNoCopies = kNil + kNil + kNil + kNil + kNil;
std::string read_reply(const std::string& session, const std::string& copies) {
    return "*11\r\n" + session + copies;
}
const std::string kUserArray =
    array({bulk("member"), bulk("member"), bulk("7"), bulk("u@x.org"), bulk("banned")});

// The record's views point into the reply, so the reply must outlive every
// check on the record: each test keeps the last one parsed here.
class DecodeSessionRead : public testing::Test {
  protected:
    DecodeStatus decode(const std::string& resp, LookupRecord& record) {
        reply_ = parse_resp(resp);
        if (!reply_) return DecodeStatus::malformed;  // parse_resp already failed
        return decode_session_read(reply_.get(), record, user_copied_);
    }

    ReplyPtr reply_;
    bool user_copied_ = false;
};

TEST(SessionReadFields, AreTheSessionFieldsThenTheUsersCopies) {
    for (std::size_t i = 0; i < kSessionFieldCount; ++i) {
        EXPECT_EQ(kSessionReadFieldNames[i], kSessionFieldNames[i]) << i;
    }
    EXPECT_EQ(kSessionReadFieldNames[kSessionFieldCount], "user_status");
}

TEST_F(DecodeSessionRead, VersionTwoHashCarriesItsUser) {
    LookupRecord record;
    ASSERT_EQ(decode(read_reply(kSessionFields, kCopies), record), DecodeStatus::ok);
    EXPECT_TRUE(user_copied_);
    EXPECT_EQ(record.get(SessionField::user_id), "user_1");
    EXPECT_EQ(record.get(SessionField::expires_at), "1700000060000");
    EXPECT_EQ(record.get(SessionField::status), std::nullopt);
    EXPECT_EQ(record.get(SessionField::idle_timeout), "60");
    EXPECT_EQ(record.get(SessionField::last_active_at), "1700000000000");
    EXPECT_EQ(record.get(SessionField::token_type), std::nullopt);
    EXPECT_EQ(record.get(UserField::status), "active");
    EXPECT_EQ(record.get(UserField::role), "admin");
    EXPECT_EQ(record.get(UserField::roles), "admin org_1/org:admin");
    EXPECT_EQ(record.get(UserField::db_id), "42");
    EXPECT_EQ(record.get(UserField::email), "a@x.org");
    // The views point into the reply, not into copies.
    EXPECT_EQ(record.get(SessionField::user_id)->data(), reply_->element[0]->str);
    EXPECT_EQ(record.get(UserField::email)->data(), reply_->element[10]->str);
    EXPECT_EQ(evaluate(record, 1700000000000, Policy{}).outcome, Outcome::ok);
}

TEST_F(DecodeSessionRead, UserStatusOfTheCopyDecides) {
    LookupRecord record;
    const std::string banned =
        bulk("banned") + bulk("admin") + bulk("admin") + bulk("42") + bulk("a@x.org");
    ASSERT_EQ(decode(read_reply(kSessionFields, banned), record), DecodeStatus::ok);
    EXPECT_TRUE(user_copied_);
    EXPECT_EQ(evaluate(record, 1700000000000, Policy{}).outcome, Outcome::revoked);
}

TEST_F(DecodeSessionRead, WithoutUserStatusTheCopiesAreIgnored) {
    // An application's own `role` field in its session hash is not a copy:
    // the user hash decides.
    LookupRecord record;
    ASSERT_EQ(decode(read_reply(kSessionFields, kNil + bulk("admin") + kNil + kNil + kNil), record),
              DecodeStatus::ok);
    EXPECT_FALSE(user_copied_);
    EXPECT_TRUE(record.user_missing());
    EXPECT_EQ(record.get(SessionField::user_id), "user_1");
    EXPECT_TRUE(needs_user_read(record, 1700000000000));
}

TEST_F(DecodeSessionRead, ThenTheUserHash) {
    LookupRecord record;
    ASSERT_EQ(decode(read_reply(kSessionFields, kNoCopies), record), DecodeStatus::ok);
    ASSERT_FALSE(user_copied_);
    const ReplyPtr user = parse_resp(kUserArray);
    ASSERT_TRUE(user);
    ASSERT_EQ(decode_user_hmget(user.get(), record), DecodeStatus::ok);
    EXPECT_EQ(record.get(SessionField::user_id), "user_1");
    EXPECT_EQ(record.get(UserField::role), "member");
    EXPECT_EQ(record.get(UserField::status), "banned");
    EXPECT_EQ(evaluate(record, 1700000000000, Policy{}).outcome, Outcome::revoked);
}

TEST_F(DecodeSessionRead, NoSuchSession) {
    LookupRecord record;
    ASSERT_EQ(decode(read_reply(kNil + kNil + kNil + kNil + kNil + kNil, kNoCopies), record),
              DecodeStatus::ok);
    EXPECT_FALSE(user_copied_);
    for (const auto& field : record.session) EXPECT_FALSE(field.has_value());
    EXPECT_TRUE(record.user_missing());
    EXPECT_EQ(evaluate(record, 0, Policy{}).outcome, Outcome::invalid);
    EXPECT_FALSE(needs_user_read(record, 0));
}

TEST_F(DecodeSessionRead, EmptyStringsAreNotNil) {
    LookupRecord record;
    const std::string empty6 = bulk("") + bulk("") + bulk("") + bulk("") + bulk("") + bulk("");
    ASSERT_EQ(decode(read_reply(empty6, bulk("") + bulk("") + kNil + bulk("") + kNil), record),
              DecodeStatus::ok);
    // An empty user_status is present: a copy, and not `active`.
    EXPECT_TRUE(user_copied_);
    for (const auto& field : record.session) {
        ASSERT_TRUE(field.has_value());
        EXPECT_TRUE(field->empty());
    }
    EXPECT_EQ(record.get(UserField::status), "");
    EXPECT_EQ(record.get(UserField::role), "");
    EXPECT_EQ(record.get(UserField::roles), std::nullopt);
}

TEST_F(DecodeSessionRead, ErrorReplies) {
    LookupRecord record;
    EXPECT_EQ(
        decode("-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", record),
        DecodeStatus::redis_error);
    EXPECT_EQ(decode("-OOM command not allowed\r\n", record), DecodeStatus::redis_error);
    EXPECT_EQ(decode("-NOPERM this user has no permissions\r\n", record),
              DecodeStatus::redis_error);
}

TEST_F(DecodeSessionRead, NullReply) {
    LookupRecord record;
    bool user_copied = true;
    EXPECT_EQ(decode_session_read(nullptr, record, user_copied), DecodeStatus::malformed);
    EXPECT_FALSE(user_copied);
}

TEST_F(DecodeSessionRead, WrongTopLevelTypes) {
    for (const std::string& resp : {"+OK\r\n"s, ":1\r\n"s, kNil, bulk("x"), "*-1\r\n"s, "*0\r\n"s,
                                    array({read_reply(kSessionFields, kCopies)})}) {
        LookupRecord record;
        EXPECT_EQ(decode(resp, record), DecodeStatus::malformed) << resp;
    }
}

TEST_F(DecodeSessionRead, WrongArrayCounts) {
    // Six: the JWT overlay's session read; ten and twelve: off by one.
    const std::string six = "*6\r\n" + kSessionFields;
    const std::string ten = "*10\r\n" + kSessionFields + kNil + kNil + kNil + kNil;
    const std::string twelve = "*12\r\n" + kSessionFields + kCopies + kNil;
    // The lookup script's old answer: the session's array and the user's.
    const std::string script = array({"*6\r\n" + kSessionFields, kUserArray});
    for (const std::string& resp : {six, ten, twelve, script}) {
        LookupRecord record;
        EXPECT_EQ(decode(resp, record), DecodeStatus::malformed) << resp;
    }
}

TEST_F(DecodeSessionRead, WrongElementTypes) {
    const std::string rest = kNil + kNil + kNil + kNil + kNoCopies;
    for (const std::string& second : {":1700000060000\r\n"s, "+1\r\n"s, "-ERR x\r\n"s, "*0\r\n"s}) {
        LookupRecord record;
        EXPECT_EQ(decode(read_reply(bulk("u") + second + rest, ""), record),
                  DecodeStatus::malformed)
            << second;
    }
    // In a copy too.
    LookupRecord record;
    EXPECT_EQ(
        decode(read_reply(kSessionFields, bulk("active") + ":1\r\n" + kNil + kNil + kNil), record),
        DecodeStatus::malformed);
}

TEST_F(DecodeSessionRead, MalformedLeavesEmptyRecord) {
    LookupRecord record;
    record.session[0] = "stale";
    record.user[0] = "stale";
    user_copied_ = true;
    ASSERT_EQ(
        decode(read_reply(kSessionFields, bulk("active") + ":1\r\n" + kNil + kNil + kNil), record),
        DecodeStatus::malformed);
    EXPECT_FALSE(user_copied_);
    for (const auto& field : record.session) EXPECT_FALSE(field.has_value());
    EXPECT_TRUE(record.user_missing());
}

TEST_F(DecodeSessionRead, HugeValue) {
    const std::string big(8 << 20, 'r');
    LookupRecord record;
    ASSERT_EQ(
        decode(read_reply(kSessionFields, bulk("active") + bulk("admin") + bulk(big) + kNil + kNil),
               record),
        DecodeStatus::ok);
    ASSERT_TRUE(record.get(UserField::roles).has_value());
    EXPECT_EQ(*record.get(UserField::roles), big);
}

TEST_F(DecodeSessionRead, BinaryValues) {
    const std::string binary = "a\0b\r\nc\xff\x00"s;
    const std::string crlf_only = "\r\n";
    LookupRecord record;
    ASSERT_EQ(decode(read_reply(bulk(binary) + bulk("1") + bulk(crlf_only) + kNil + kNil + kNil,
                                bulk("active") + bulk(binary) + kNil + kNil + bulk("x\r\n$-1\r\n")),
                     record),
              DecodeStatus::ok);
    EXPECT_EQ(record.get(SessionField::user_id), binary);
    EXPECT_EQ(record.get(SessionField::user_id)->size(), 8u);
    EXPECT_EQ(record.get(SessionField::status), crlf_only);
    EXPECT_EQ(record.get(UserField::role), binary);
    EXPECT_EQ(record.get(UserField::email), "x\r\n$-1\r\n");
    EXPECT_EQ(evaluate(record, 0, Policy{}).outcome, Outcome::invalid);
}

}  // namespace
}  // namespace session::core
