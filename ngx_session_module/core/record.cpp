#include "core/record.hpp"

#include <hiredis/hiredis.h>

#include <limits>

namespace session::core {
namespace {

constexpr std::int64_t kMsPerSecond = 1000;

// One HMGET answer: exactly `count` elements, each a bulk string or nil.
// Anything else (a status, an integer, a nested array or error) is a shape
// HMGET never produces.
template <std::size_t N>
bool decode_hmget(const redisReply* reply,
                  std::array<std::optional<std::string_view>, N>& fields) noexcept {
    if (reply == nullptr || reply->type != REDIS_REPLY_ARRAY || reply->elements != N ||
        reply->element == nullptr) {
        return false;
    }
    for (std::size_t i = 0; i < N; ++i) {
        const redisReply* element = reply->element[i];
        if (element == nullptr) return false;
        if (element->type == REDIS_REPLY_NIL) {
            fields[i] = std::nullopt;
        } else if (element->type == REDIS_REPLY_STRING) {
            // A zero-length bulk string may come with str == nullptr from
            // other reader implementations; a view must never be (nullptr, n>0).
            fields[i] = element->len == 0 ? std::string_view()
                                          : std::string_view(element->str, element->len);
        } else {
            return false;
        }
    }
    return true;
}

// now - since >= amount, without overflow for any int64 values: the clock and
// the stored time come from different machines and may be skewed or garbage.
bool elapsed_at_least(std::int64_t now, std::int64_t since, std::int64_t amount) noexcept {
    // Unsigned subtraction of ordered values is exact in uint64.
    if (now >= since) {
        if (amount <= 0) return true;
        const std::uint64_t elapsed =
            static_cast<std::uint64_t>(now) - static_cast<std::uint64_t>(since);
        return elapsed >= static_cast<std::uint64_t>(amount);
    }
    // `since` lies in the future: the elapsed time is negative.
    if (amount >= 0) return false;
    const std::uint64_t behind =
        static_cast<std::uint64_t>(since) - static_cast<std::uint64_t>(now);
    const std::uint64_t allowed = std::uint64_t{0} - static_cast<std::uint64_t>(amount);
    return behind <= allowed;
}

bool elapsed_more_than(std::int64_t now, std::int64_t since, std::int64_t amount) noexcept {
    if (amount == std::numeric_limits<std::int64_t>::max()) return false;
    return elapsed_at_least(now, since, amount + 1);
}

// An optional decimal field. A plain struct rather than std::optional: GCC's
// -Wmaybe-uninitialized misfires on optional<int64_t> here, and nginx's
// build of this file stops on warnings.
struct OptionalNumber {
    bool present = false;
    bool valid = true;  // absent, or a non-negative decimal
    std::int64_t value = 0;
};

OptionalNumber read_number(std::optional<std::string_view> text) noexcept {
    OptionalNumber number;
    if (!text.has_value()) return number;
    number.present = true;
    const auto parsed = parse_int64(*text);
    number.valid = parsed.has_value();
    number.value = parsed.value_or(0);
    return number;
}

// What find_control_byte_field names, in the order of kSessionFieldNames and
// kUserFieldNames (record_test checks that they agree).
constexpr std::array<std::string_view, kSessionFieldCount> kSessionFieldLabels = {
    "sess:user_id",      "sess:expires_at",     "sess:status",
    "sess:idle_timeout", "sess:last_active_at", "sess:token_type"};
constexpr std::array<std::string_view, kUserFieldCount> kUserFieldLabels = {
    "user:role", "user:roles", "user:db_id", "user:email", "user:status"};

// Where each copy in kSessionReadFieldNames (after the session's own
// fields) belongs in LookupRecord::user.
constexpr std::array<UserField, kUserFieldCount> kCopiedUserFields = {
    UserField::status, UserField::role, UserField::roles, UserField::db_id, UserField::email};

bool has_control_byte(std::optional<std::string_view> value) noexcept {
    if (!value.has_value()) return false;
    for (char c : *value) {
        const auto byte = static_cast<unsigned char>(c);
        if (byte < 0x20 || byte == 0x7f) return true;
    }
    return false;
}

bool has_any_role(const LookupRecord& record, const Policy& policy) noexcept {
    // A location that asks for roles but hands none over is misconfigured:
    // refuse rather than pass everyone.
    if (policy.required_roles == nullptr) return false;
    for (std::size_t i = 0; i < policy.required_role_count; ++i) {
        if (has_role(record, policy.required_roles[i])) return true;
    }
    return false;
}

}  // namespace

bool LookupRecord::user_missing() const noexcept {
    for (const auto& field : user) {
        if (field.has_value()) return false;
    }
    return true;
}

DecodeStatus decode_session_hmget(const redisReply* reply, LookupRecord& out) noexcept {
    if (reply != nullptr && reply->type == REDIS_REPLY_ERROR) return DecodeStatus::redis_error;
    if (!decode_hmget(reply, out.session)) {
        out.session = {};
        return DecodeStatus::malformed;
    }
    return DecodeStatus::ok;
}

DecodeStatus decode_user_hmget(const redisReply* reply, LookupRecord& out) noexcept {
    if (reply != nullptr && reply->type == REDIS_REPLY_ERROR) return DecodeStatus::redis_error;
    if (!decode_hmget(reply, out.user)) {
        out.user = {};
        return DecodeStatus::malformed;
    }
    return DecodeStatus::ok;
}

DecodeStatus decode_session_read(const redisReply* reply, LookupRecord& out,
                                 bool& user_copied) noexcept {
    out = LookupRecord{};
    user_copied = false;
    if (reply != nullptr && reply->type == REDIS_REPLY_ERROR) return DecodeStatus::redis_error;
    std::array<std::optional<std::string_view>, kSessionReadFieldCount> fields;
    if (!decode_hmget(reply, fields)) return DecodeStatus::malformed;
    for (std::size_t i = 0; i < kSessionFieldCount; ++i) out.session[i] = fields[i];
    // user_status is the marker: copies without it are not trusted to be
    // complete (a writer's own fields named like ours), so the user hash
    // decides as it did before version 2.
    user_copied = fields[kSessionFieldCount].has_value();
    if (user_copied) {
        for (std::size_t i = 0; i < kUserFieldCount; ++i) {
            out.user[static_cast<std::size_t>(kCopiedUserFields[i])] =
                fields[kSessionFieldCount + i];
        }
    }
    return DecodeStatus::ok;
}

bool needs_user_read(const LookupRecord& session_only, std::int64_t now_ms) noexcept {
    LookupRecord session = session_only;
    session.user = {};
    return evaluate(session, now_ms, Policy{}).outcome == Outcome::ok;
}

std::string_view find_control_byte_field(const LookupRecord& record) noexcept {
    for (std::size_t i = 0; i < kSessionFieldCount; ++i) {
        if (has_control_byte(record.session[i])) return kSessionFieldLabels[i];
    }
    for (std::size_t i = 0; i < kUserFieldCount; ++i) {
        if (has_control_byte(record.user[i])) return kUserFieldLabels[i];
    }
    return {};
}

std::string_view outcome_name(Outcome outcome) noexcept {
    switch (outcome) {
        case Outcome::ok:
            return "ok";
        case Outcome::missing:
            return "missing";
        case Outcome::invalid:
            return "invalid";
        case Outcome::expired:
            return "expired";
        case Outcome::revoked:
            return "revoked";
        case Outcome::forbidden:
            return "forbidden";
        case Outcome::error:
            return "error";
        case Outcome::stale:
            return "stale";
    }
    return "unknown";
}

// Precedence, when several apply:
//   invalid > revoked > expired > forbidden > ok.
// - a control byte in any field first: the record is not something a writer
//   following the contract produces, and its values must never reach a
//   header, so nothing in it is trusted (not even a revocation).
// - invalid first: a token_type other than absent or "opaque" says the id is
//   not a credential ("jwt": an identity provider's session id, named in
//   every token's sid claim and visible to the browser; anything else fails
//   closed), so the request presented no secret at all, whatever the
//   session's state. Without user_id or a numeric expires_at the record is
//   not a session at all, so nothing else about it means anything.
// - revoked before expired: a revocation is a deliberate, permanent decision
//   (logout, ban, deletion); reporting it as a mere expiry would hide it from
//   logs and $session_status, and "expired" invites the client to refresh.
// - expired before forbidden: a role check only makes sense for a live
//   session; an expired one must be re-authenticated (401), not refused (403).
// Malformed optional fields (idle_timeout, last_active_at not decimal) make
// the record invalid: failing closed beats silently disabling idle expiry
// because a writer stored garbage.
Verdict evaluate(const LookupRecord& record, std::int64_t now_ms, const Policy& policy) noexcept {
    Verdict verdict;

    if (!policy.fields_checked && !find_control_byte_field(record).empty()) {
        verdict.outcome = Outcome::invalid;
        return verdict;
    }

    const auto token_type = record.get(SessionField::token_type);
    if (token_type.has_value() && *token_type != "opaque") {
        verdict.outcome = Outcome::invalid;
        return verdict;
    }

    const auto user_id = record.get(SessionField::user_id);
    const auto expires_at = parse_int64(record.get(SessionField::expires_at).value_or(""));
    if (!user_id.has_value() || user_id->empty() || !expires_at.has_value()) {
        verdict.outcome = Outcome::invalid;
        return verdict;
    }
    const OptionalNumber idle_timeout_s = read_number(record.get(SessionField::idle_timeout));
    const OptionalNumber last_active_at = read_number(record.get(SessionField::last_active_at));
    if (!idle_timeout_s.valid || !last_active_at.valid) {
        verdict.outcome = Outcome::invalid;
        return verdict;
    }

    // Anything but absent or active refuses, on both hashes: a status this
    // code does not know (a future `suspended`, a typo) must not let a
    // session or a user through.
    const auto session_status = record.get(SessionField::status);
    const auto user_status = record.get(UserField::status);
    if ((session_status.has_value() && *session_status != "active") ||
        (user_status.has_value() && *user_status != "active")) {
        verdict.outcome = Outcome::revoked;
        return verdict;
    }

    // Valid strictly before expires_at.
    if (*expires_at <= now_ms) {
        verdict.outcome = Outcome::expired;
        return verdict;
    }
    if (idle_timeout_s.present && last_active_at.present) {
        // parse_int64 allows 18 digits; seconds beyond int64 ms never pass.
        const std::int64_t idle_ms =
            idle_timeout_s.value > std::numeric_limits<std::int64_t>::max() / kMsPerSecond
                ? std::numeric_limits<std::int64_t>::max()
                : idle_timeout_s.value * kMsPerSecond;
        // Expired once now - last_active_at > idle_timeout: exactly at the
        // limit is still valid.
        if (elapsed_more_than(now_ms, last_active_at.value, idle_ms)) {
            verdict.outcome = Outcome::expired;
            return verdict;
        }
    }

    if (policy.required_role_count > 0 && !has_any_role(record, policy)) {
        verdict.outcome = Outcome::forbidden;
        return verdict;
    }

    verdict.outcome = Outcome::ok;
    verdict.touch = policy.touch_interval_ms > 0 &&
                    (!last_active_at.present ||
                     elapsed_at_least(now_ms, last_active_at.value, policy.touch_interval_ms));
    return verdict;
}

bool has_role(const LookupRecord& record, std::string_view role) noexcept {
    // An empty role would match an empty `role` field or a doubled space.
    if (role.empty()) return false;
    if (record.get(UserField::role) == role) return true;

    const auto roles = record.get(UserField::roles);
    if (!roles.has_value()) return false;
    // Whole words only: "admin" must not match "superadmin" or "admins".
    std::string_view rest = *roles;
    while (!rest.empty()) {
        const std::size_t space = rest.find(' ');
        const std::string_view word = rest.substr(0, space);
        if (word == role) return true;
        if (space == std::string_view::npos) break;
        rest.remove_prefix(space + 1);
    }
    return false;
}

std::optional<std::int64_t> parse_int64(std::string_view text) noexcept {
    // 18 digits keep every value below 10^18 < INT64_MAX: no overflow check.
    constexpr std::size_t kMaxDigits = 18;
    if (text.empty() || text.size() > kMaxDigits) return std::nullopt;
    std::int64_t value = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        value = value * 10 + (c - '0');
    }
    return value;
}

}  // namespace session::core
