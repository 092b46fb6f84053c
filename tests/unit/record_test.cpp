#include "core/record.hpp"

#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

namespace session::core {
namespace {

constexpr std::int64_t kNow = 1'700'000'000'000;  // Unix ms

// A valid, active session of an active admin; tests change one thing each.
LookupRecord valid_record() {
    LookupRecord record;
    record.session[static_cast<std::size_t>(SessionField::user_id)] = "user_1";
    record.session[static_cast<std::size_t>(SessionField::expires_at)] = "1700000060000";
    record.user[static_cast<std::size_t>(UserField::role)] = "admin";
    return record;
}

void set(LookupRecord& record, SessionField field, std::optional<std::string_view> value) {
    record.session[static_cast<std::size_t>(field)] = value;
}
void set(LookupRecord& record, UserField field, std::optional<std::string_view> value) {
    record.user[static_cast<std::size_t>(field)] = value;
}

Policy require(const std::vector<std::string_view>& roles) {
    Policy policy;
    policy.required_roles = roles.data();
    policy.required_role_count = roles.size();
    return policy;
}

Outcome outcome_of(const LookupRecord& record, std::int64_t now = kNow,
                   const Policy& policy = Policy{}) {
    return evaluate(record, now, policy).outcome;
}

TEST(ParseInt64, Accepts) {
    EXPECT_EQ(parse_int64("0"), 0);
    EXPECT_EQ(parse_int64("42"), 42);
    EXPECT_EQ(parse_int64("007"), 7);
    EXPECT_EQ(parse_int64("1700000000000"), 1700000000000);
    EXPECT_EQ(parse_int64("999999999999999999"), 999999999999999999);  // 18 digits
}

TEST(ParseInt64, Refuses) {
    for (const std::string_view text :
         {"", "-1", "+1", " 1", "1 ", "1.5", "1e3", "0x10", "abc", "12a", "1000000000000000000",
          "9223372036854775807", "99999999999999999999999"}) {
        EXPECT_EQ(parse_int64(text), std::nullopt) << text;
    }
    EXPECT_EQ(parse_int64(std::string_view("1\0", 2)), std::nullopt);
}

TEST(OutcomeName, AllNames) {
    EXPECT_EQ(outcome_name(Outcome::ok), "ok");
    EXPECT_EQ(outcome_name(Outcome::missing), "missing");
    EXPECT_EQ(outcome_name(Outcome::invalid), "invalid");
    EXPECT_EQ(outcome_name(Outcome::expired), "expired");
    EXPECT_EQ(outcome_name(Outcome::revoked), "revoked");
    EXPECT_EQ(outcome_name(Outcome::forbidden), "forbidden");
    EXPECT_EQ(outcome_name(Outcome::error), "error");
    EXPECT_EQ(outcome_name(Outcome::stale), "stale");
}

TEST(Evaluate, ValidSession) {
    const Verdict verdict = evaluate(valid_record(), kNow, Policy{});
    EXPECT_EQ(verdict.outcome, Outcome::ok);
    EXPECT_FALSE(verdict.touch);
}

TEST(Evaluate, MissingUserIdIsInvalid) {
    LookupRecord record = valid_record();
    set(record, SessionField::user_id, std::nullopt);
    EXPECT_EQ(outcome_of(record), Outcome::invalid);
    set(record, SessionField::user_id, "");
    EXPECT_EQ(outcome_of(record), Outcome::invalid);
}

TEST(Evaluate, EmptyRecordIsInvalid) {
    EXPECT_EQ(outcome_of(LookupRecord{}), Outcome::invalid);
}

TEST(Evaluate, BadExpiresAtIsInvalid) {
    for (const std::optional<std::string_view> value :
         {std::optional<std::string_view>{}, std::optional<std::string_view>{""},
          std::optional<std::string_view>{"-1"}, std::optional<std::string_view>{"soon"},
          std::optional<std::string_view>{"1700000060000.5"},
          std::optional<std::string_view>{" 1700000060000"}}) {
        LookupRecord record = valid_record();
        set(record, SessionField::expires_at, value);
        EXPECT_EQ(outcome_of(record), Outcome::invalid) << value.value_or("<nil>");
    }
}

TEST(Evaluate, ExpiresAtBoundary) {
    LookupRecord record = valid_record();
    set(record, SessionField::expires_at, "1700000000000");
    EXPECT_EQ(outcome_of(record, kNow), Outcome::expired);  // == now: expired
    EXPECT_EQ(outcome_of(record, kNow - 1), Outcome::ok);   // valid strictly before
    EXPECT_EQ(outcome_of(record, kNow + 1), Outcome::expired);
    set(record, SessionField::expires_at, "0");
    EXPECT_EQ(outcome_of(record), Outcome::expired);
}

TEST(Evaluate, SessionStatus) {
    LookupRecord record = valid_record();
    set(record, SessionField::status, "active");
    EXPECT_EQ(outcome_of(record), Outcome::ok);
    for (const std::string_view status : {"ended", "revoked", "removed", "", "Active", "active "}) {
        set(record, SessionField::status, status);
        EXPECT_EQ(outcome_of(record), Outcome::revoked) << '"' << status << '"';
    }
}

// token_type says whether the session id is itself the credential. Absent
// or "opaque": yes. "jwt": an identity provider's session id, which every
// token's sid claim shows: the opaque check refuses it. Anything else fails
// closed.
TEST(Evaluate, TokenType) {
    LookupRecord record = valid_record();
    set(record, SessionField::token_type, "opaque");
    EXPECT_EQ(outcome_of(record), Outcome::ok);
    for (const std::string_view type : {"jwt", "", "Opaque", "opaque ", "JWT", "bearer"}) {
        set(record, SessionField::token_type, type);
        EXPECT_EQ(outcome_of(record), Outcome::invalid) << '"' << type << '"';
    }
    // A refused id never asks for a touch.
    Policy touch;
    touch.touch_interval_ms = 1;
    set(record, SessionField::token_type, "jwt");
    EXPECT_FALSE(evaluate(record, kNow, touch).touch);
}

TEST(Evaluate, UserStatus) {
    LookupRecord record = valid_record();
    set(record, UserField::status, "active");
    EXPECT_EQ(outcome_of(record), Outcome::ok);
    set(record, UserField::status, "banned");
    EXPECT_EQ(outcome_of(record), Outcome::revoked);
    set(record, UserField::status, "deleted");
    EXPECT_EQ(outcome_of(record), Outcome::revoked);
    // Unknown means refused: a state this code does not know (a future
    // `suspended`, a typo, another case) must not let the user through.
    for (std::string_view status : {"pending", "suspended", "Active", "active ", "", "banned!"}) {
        set(record, UserField::status, status);
        EXPECT_EQ(outcome_of(record), Outcome::revoked) << "'" << status << "'";
    }
    set(record, UserField::status, std::nullopt);
    EXPECT_EQ(outcome_of(record), Outcome::ok);
}

TEST(ControlBytes, FieldLabelsFollowTheFieldNames) {
    // The labels name the fields in the order the script reads them.
    for (std::size_t i = 0; i < kSessionFieldCount; ++i) {
        LookupRecord record;
        record.session[i] = "a\nb";
        EXPECT_EQ(find_control_byte_field(record), "sess:" + std::string(kSessionFieldNames[i]));
    }
    for (std::size_t i = 0; i < kUserFieldCount; ++i) {
        LookupRecord record;
        record.user[i] = "a\rb";
        EXPECT_EQ(find_control_byte_field(record), "user:" + std::string(kUserFieldNames[i]));
    }
}

TEST(ControlBytes, EveryByteBelow0x20And0x7fIsFound) {
    for (int byte = 0; byte < 256; ++byte) {
        const std::string value = std::string("x@example.com") + static_cast<char>(byte);
        LookupRecord record = valid_record();
        set(record, UserField::email, value);
        const bool control = byte < 0x20 || byte == 0x7f;
        EXPECT_EQ(find_control_byte_field(record).empty(), !control) << byte;
        EXPECT_EQ(outcome_of(record), control ? Outcome::invalid : Outcome::ok) << byte;
    }
}

TEST(ControlBytes, CleanRecordHasNone) {
    EXPECT_EQ(find_control_byte_field(valid_record()), "");
    EXPECT_EQ(find_control_byte_field(LookupRecord{}), "");
    LookupRecord record = valid_record();
    set(record, UserField::roles, "");                                  // empty is clean
    set(record, UserField::email, "j\xc3\xa9r\xc3\xb4me@example.com");  // UTF-8 is clean
    EXPECT_EQ(find_control_byte_field(record), "");
}

TEST(ControlBytes, RefusedBeforeAnythingElse) {
    // Even a revoked or expired record is `invalid`: none of it is trusted.
    LookupRecord record = valid_record();
    set(record, SessionField::status, "revoked");
    set(record, SessionField::expires_at, "1");
    set(record, UserField::db_id, std::string_view("42\0", 3));
    EXPECT_EQ(outcome_of(record), Outcome::invalid);
    // In a session field too (the opaque check reads every one).
    LookupRecord session_side = valid_record();
    set(session_side, SessionField::user_id, "user_1\r\nX-Evil: 1");
    EXPECT_EQ(outcome_of(session_side), Outcome::invalid);
    set(session_side, SessionField::user_id, "user_1");
    set(session_side, SessionField::last_active_at, "1\x7f");
    EXPECT_EQ(outcome_of(session_side), Outcome::invalid);
}

TEST(Evaluate, DeletedTombstoneWithoutRole) {
    LookupRecord record = valid_record();
    set(record, UserField::role, std::nullopt);
    set(record, UserField::status, "deleted");
    EXPECT_EQ(outcome_of(record), Outcome::revoked);
}

TEST(Evaluate, IdleTimeout) {
    LookupRecord record = valid_record();
    set(record, SessionField::idle_timeout, "60");
    const std::string exactly_at_limit = std::to_string(kNow - 60'000);
    const std::string just_past = std::to_string(kNow - 60'001);
    const std::string recent = std::to_string(kNow - 1'000);
    set(record, SessionField::last_active_at, exactly_at_limit);
    EXPECT_EQ(outcome_of(record), Outcome::ok);  // not passed: now - last == idle
    set(record, SessionField::last_active_at, just_past);
    EXPECT_EQ(outcome_of(record), Outcome::expired);
    set(record, SessionField::last_active_at, recent);
    EXPECT_EQ(outcome_of(record), Outcome::ok);
}

TEST(Evaluate, IdleTimeoutNeedsBothFields) {
    LookupRecord record = valid_record();
    set(record, SessionField::idle_timeout, "1");
    EXPECT_EQ(outcome_of(record), Outcome::ok);  // no last_active_at yet
    LookupRecord other = valid_record();
    set(other, SessionField::last_active_at, "0");
    EXPECT_EQ(outcome_of(other), Outcome::ok);  // no idle_timeout
}

TEST(Evaluate, IdleTimeoutZero) {
    LookupRecord record = valid_record();
    set(record, SessionField::idle_timeout, "0");
    const std::string now_text = std::to_string(kNow);
    const std::string before = std::to_string(kNow - 1);
    set(record, SessionField::last_active_at, now_text);
    EXPECT_EQ(outcome_of(record), Outcome::ok);
    set(record, SessionField::last_active_at, before);
    EXPECT_EQ(outcome_of(record), Outcome::expired);
}

TEST(Evaluate, IdleTimeoutHugeNeverOverflows) {
    LookupRecord record = valid_record();
    set(record, SessionField::expires_at, "999999999999999999");
    set(record, SessionField::idle_timeout, "999999999999999999");
    set(record, SessionField::last_active_at, "0");
    EXPECT_EQ(outcome_of(record), Outcome::ok);
    EXPECT_EQ(outcome_of(record, std::numeric_limits<std::int64_t>::min()), Outcome::ok);
}

TEST(Evaluate, LastActiveInTheFuture) {
    // Another server's clock may run ahead: not idle.
    LookupRecord record = valid_record();
    set(record, SessionField::idle_timeout, "60");
    const std::string future = std::to_string(kNow + 5'000);
    set(record, SessionField::last_active_at, future);
    EXPECT_EQ(outcome_of(record), Outcome::ok);
}

TEST(Evaluate, MalformedOptionalFieldsAreInvalid) {
    LookupRecord record = valid_record();
    set(record, SessionField::idle_timeout, "sixty");
    EXPECT_EQ(outcome_of(record), Outcome::invalid);
    record = valid_record();
    set(record, SessionField::last_active_at, "yesterday");
    EXPECT_EQ(outcome_of(record), Outcome::invalid);
    record = valid_record();
    set(record, SessionField::idle_timeout, "-5");
    EXPECT_EQ(outcome_of(record), Outcome::invalid);
}

TEST(Evaluate, MissingUserHashIsAuthenticatedWithoutRoles) {
    LookupRecord record = valid_record();
    set(record, UserField::role, std::nullopt);
    ASSERT_TRUE(record.user_missing());
    EXPECT_EQ(outcome_of(record), Outcome::ok);
    const std::vector<std::string_view> roles = {"admin"};
    EXPECT_EQ(outcome_of(record, kNow, require(roles)), Outcome::forbidden);
}

TEST(Evaluate, RequiredRoles) {
    LookupRecord record = valid_record();
    set(record, UserField::role, "member");
    set(record, UserField::roles, "member acme/org:admin");
    const std::vector<std::string_view> admin = {"admin"};
    const std::vector<std::string_view> org_admin = {"acme/org:admin"};
    const std::vector<std::string_view> any = {"admin", "member"};
    const std::vector<std::string_view> none = {};
    EXPECT_EQ(outcome_of(record, kNow, require(admin)), Outcome::forbidden);
    EXPECT_EQ(outcome_of(record, kNow, require(org_admin)), Outcome::ok);
    EXPECT_EQ(outcome_of(record, kNow, require(any)), Outcome::ok);
    EXPECT_EQ(outcome_of(record, kNow, require(none)), Outcome::ok);
}

TEST(Evaluate, RolesRequiredButNoneGiven) {
    Policy policy;
    policy.required_roles = nullptr;
    policy.required_role_count = 1;
    EXPECT_EQ(outcome_of(valid_record(), kNow, policy), Outcome::forbidden);
}

TEST(Evaluate, Precedence) {
    const std::vector<std::string_view> admin = {"admin"};
    // revoked beats expired beats forbidden.
    LookupRecord record = valid_record();
    set(record, UserField::role, "member");
    set(record, SessionField::expires_at, "1");
    set(record, SessionField::status, "revoked");
    EXPECT_EQ(outcome_of(record, kNow, require(admin)), Outcome::revoked);
    set(record, SessionField::status, std::nullopt);
    EXPECT_EQ(outcome_of(record, kNow, require(admin)), Outcome::expired);
    set(record, SessionField::expires_at, "1700000060000");
    EXPECT_EQ(outcome_of(record, kNow, require(admin)), Outcome::forbidden);
    // A banned user's expired session is revoked.
    set(record, SessionField::expires_at, "1");
    set(record, UserField::status, "banned");
    EXPECT_EQ(outcome_of(record), Outcome::revoked);
    // Idle expiry also beats forbidden.
    record = valid_record();
    set(record, UserField::role, "member");
    set(record, SessionField::idle_timeout, "1");
    set(record, SessionField::last_active_at, "0");
    EXPECT_EQ(outcome_of(record, kNow, require(admin)), Outcome::expired);
    // invalid beats everything.
    set(record, SessionField::user_id, std::nullopt);
    set(record, SessionField::status, "revoked");
    EXPECT_EQ(outcome_of(record, kNow, require(admin)), Outcome::invalid);
    // token_type=jwt too: a tombstone, or a live session, of an identity
    // provider's session is invalid as an opaque token, not revoked or ok.
    record = valid_record();
    set(record, SessionField::token_type, "jwt");
    set(record, SessionField::status, "revoked");
    EXPECT_EQ(outcome_of(record), Outcome::invalid);
    set(record, SessionField::status, std::nullopt);
    set(record, UserField::status, "banned");
    EXPECT_EQ(outcome_of(record), Outcome::invalid);
    set(record, UserField::status, std::nullopt);
    EXPECT_EQ(outcome_of(record, kNow, require(admin)), Outcome::invalid);
}

TEST(Evaluate, Touch) {
    Policy policy;
    policy.touch_interval_ms = 30'000;
    LookupRecord record = valid_record();
    EXPECT_TRUE(evaluate(record, kNow, policy).touch);  // never touched yet

    const std::string at_interval = std::to_string(kNow - 30'000);
    const std::string inside = std::to_string(kNow - 29'999);
    set(record, SessionField::last_active_at, at_interval);
    EXPECT_TRUE(evaluate(record, kNow, policy).touch);
    set(record, SessionField::last_active_at, inside);
    EXPECT_FALSE(evaluate(record, kNow, policy).touch);
    EXPECT_EQ(evaluate(record, kNow, policy).outcome, Outcome::ok);

    // Touch off.
    set(record, SessionField::last_active_at, std::nullopt);
    EXPECT_FALSE(evaluate(record, kNow, Policy{}).touch);
    policy.touch_interval_ms = -1;
    EXPECT_FALSE(evaluate(record, kNow, policy).touch);
}

TEST(Evaluate, NoTouchUnlessOk) {
    Policy policy;
    policy.touch_interval_ms = 1;
    const std::vector<std::string_view> admin = {"superuser"};
    policy.required_roles = admin.data();
    policy.required_role_count = admin.size();
    const Verdict forbidden = evaluate(valid_record(), kNow, policy);
    EXPECT_EQ(forbidden.outcome, Outcome::forbidden);
    EXPECT_FALSE(forbidden.touch);

    LookupRecord expired = valid_record();
    set(expired, SessionField::expires_at, "1");
    Policy touch_only;
    touch_only.touch_interval_ms = 1;
    EXPECT_FALSE(evaluate(expired, kNow, touch_only).touch);
}

TEST(HasRole, PrimaryRole) {
    LookupRecord record = valid_record();
    EXPECT_TRUE(has_role(record, "admin"));
    EXPECT_FALSE(has_role(record, "Admin"));
    EXPECT_FALSE(has_role(record, "adm"));
    EXPECT_FALSE(has_role(record, "admins"));
    EXPECT_FALSE(has_role(record, ""));
}

TEST(HasRole, RolesWordsMatchWhole) {
    LookupRecord record = valid_record();
    set(record, UserField::role, "superadmin");
    set(record, UserField::roles, "superadmin adminx acme/org:admin");
    EXPECT_FALSE(has_role(record, "admin"));
    EXPECT_TRUE(has_role(record, "superadmin"));
    EXPECT_TRUE(has_role(record, "adminx"));
    EXPECT_TRUE(has_role(record, "acme/org:admin"));
    EXPECT_FALSE(has_role(record, "org:admin"));
    EXPECT_FALSE(has_role(record, "acme/org"));
    EXPECT_FALSE(has_role(record, "superadmin adminx"));
}

TEST(HasRole, RolesEdgeSpacing) {
    LookupRecord record;
    set(record, UserField::roles, "admin");
    EXPECT_TRUE(has_role(record, "admin"));
    set(record, UserField::roles, " admin ");
    EXPECT_TRUE(has_role(record, "admin"));
    set(record, UserField::roles, "a  admin");
    EXPECT_TRUE(has_role(record, "admin"));
    EXPECT_FALSE(has_role(record, ""));
    set(record, UserField::roles, "");
    EXPECT_FALSE(has_role(record, "admin"));
    set(record, UserField::roles, std::nullopt);
    EXPECT_FALSE(has_role(record, "admin"));
}

TEST(UserMissing, AnyFieldMeansPresent) {
    LookupRecord record;
    EXPECT_TRUE(record.user_missing());
    for (std::size_t i = 0; i < kUserFieldCount; ++i) {
        LookupRecord one;
        one.user[i] = "";
        EXPECT_FALSE(one.user_missing()) << i;
    }
}

}  // namespace
}  // namespace session::core

namespace session::core {
namespace {

// A session hash without the user's copies: only a session that passes on
// its own is worth the second read.
TEST(NeedsUserRead, LiveSessionNamingAUser) {
    LookupRecord record = valid_record();
    EXPECT_TRUE(needs_user_read(record, kNow));
    set(record, SessionField::status, "active");
    set(record, SessionField::token_type, "opaque");
    EXPECT_TRUE(needs_user_read(record, kNow));
}

TEST(NeedsUserRead, UserFieldsAlreadyThereDoNotCount) {
    // Whatever the user half holds (a ban, a control byte), the question is
    // about the session hash alone.
    LookupRecord record = valid_record();
    set(record, UserField::status, "banned");
    set(record, UserField::email, "a\r\nb");
    EXPECT_TRUE(needs_user_read(record, kNow));
}

TEST(NeedsUserRead, SessionThatRefusesByItself) {
    EXPECT_FALSE(needs_user_read(LookupRecord{}, kNow));  // no such session

    const auto refused = [](void (*change)(LookupRecord&)) {
        LookupRecord record = valid_record();
        change(record);
        return !needs_user_read(record, kNow);
    };
    EXPECT_TRUE(refused([](LookupRecord& r) { set(r, SessionField::user_id, std::nullopt); }));
    EXPECT_TRUE(refused([](LookupRecord& r) { set(r, SessionField::user_id, ""); }));
    EXPECT_TRUE(refused([](LookupRecord& r) { set(r, SessionField::user_id, "u\n1"); }));
    EXPECT_TRUE(refused([](LookupRecord& r) { set(r, SessionField::expires_at, "soon"); }));
    EXPECT_TRUE(refused([](LookupRecord& r) { set(r, SessionField::expires_at, "1"); }));
    EXPECT_TRUE(refused([](LookupRecord& r) { set(r, SessionField::status, "revoked"); }));
    EXPECT_TRUE(refused([](LookupRecord& r) { set(r, SessionField::token_type, "jwt"); }));
    EXPECT_TRUE(refused([](LookupRecord& r) { set(r, SessionField::idle_timeout, "x"); }));
    EXPECT_TRUE(refused([](LookupRecord& r) {
        set(r, SessionField::idle_timeout, "60");
        set(r, SessionField::last_active_at, "1699999000000");  // idle for 1000 s
    }));
}

TEST(NeedsUserRead, RolesAreTheUsersBusiness) {
    // A role gate is judged on the combined record, never on the session:
    // the session hash holds no role, and it must still ask for the user.
    LookupRecord record = valid_record();
    set(record, UserField::role, std::nullopt);
    EXPECT_TRUE(needs_user_read(record, kNow));
}

}  // namespace
}  // namespace session::core
