// Arbitrary bytes through hiredis's reader, as Redis's answers would arrive;
// every complete reply goes through decode_session_read (the opaque check's
// one-key read), the flat encoding and evaluate.
#include <hiredis/hiredis.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "core/flat_record.hpp"
#include "core/record.hpp"

namespace {

using namespace session::core;

void require(bool condition) {
    if (!condition) std::abort();
}

// hiredis 0.14 allocates an array's element vector from the count in the
// header ("*4000000000\r\n") before any element arrives: a memory bomb in
// hiredis itself, not in the code under test, and impossible from a real
// Redis answering our HMGET. Refuse such arrays so the fuzzer explores the
// decoder instead of reporting out-of-memory.
constexpr int kMaxArrayElements = 1 << 16;
redisReplyObjectFunctions g_limited_functions;
void* (*g_default_create_array)(const redisReadTask*, int) = nullptr;

void* create_limited_array(const redisReadTask* task, int elements) {
    if (elements > kMaxArrayElements) return nullptr;  // the reader reports OOM and stops
    return g_default_create_array(task, elements);
}

redisReader* create_reader() {
    redisReader* reader = redisReaderCreate();
    if (reader == nullptr) return nullptr;
    if (g_default_create_array == nullptr) {
        g_limited_functions = *reader->fn;
        g_default_create_array = g_limited_functions.createArray;
        g_limited_functions.createArray = create_limited_array;
    }
    reader->fn = &g_limited_functions;
    return reader;
}

bool same_field(const std::optional<std::string_view>& a,
                const std::optional<std::string_view>& b) {
    if (a.has_value() != b.has_value()) return false;
    return !a.has_value() || *a == *b;
}

void check_record(const LookupRecord& record) {
    // Round trip through the cache's flat layout.
    std::vector<unsigned char> flat(flat_size(record));
    flat_encode(record, flat.data());
    LookupRecord decoded;
    require(flat_decode(flat.data(), flat.size(), decoded));
    for (std::size_t i = 0; i < kSessionFieldCount; ++i) {
        require(same_field(record.session[i], decoded.session[i]));
    }
    for (std::size_t i = 0; i < kUserFieldCount; ++i) {
        require(same_field(record.user[i], decoded.user[i]));
    }
    require(record.user_missing() == decoded.user_missing());
    // A truncated buffer is refused, never read past.
    if (!flat.empty()) {
        std::vector<unsigned char> truncated(flat.begin(), flat.end() - 1);
        LookupRecord ignored;
        require(!flat_decode(truncated.data(), truncated.size(), ignored));
    }

    const std::string_view roles[] = {"admin", "acme/org:admin", ""};
    const std::int64_t moments[] = {0, 1'700'000'000'000, INT64_MAX, INT64_MIN};
    for (const std::int64_t now : moments) {
        for (const std::int64_t interval : {std::int64_t{0}, std::int64_t{30'000}, INT64_MAX}) {
            Policy policy;
            policy.touch_interval_ms = interval;
            Verdict verdict = evaluate(record, now, policy);
            require(verdict.outcome != Outcome::missing && verdict.outcome != Outcome::error &&
                    verdict.outcome != Outcome::stale && verdict.outcome != Outcome::forbidden);
            require(!verdict.touch || verdict.outcome == Outcome::ok);
            // The flat copy must judge the same.
            const Verdict again = evaluate(decoded, now, policy);
            require(again.outcome == verdict.outcome && again.touch == verdict.touch);

            policy.required_roles = roles;
            policy.required_role_count = 3;
            verdict = evaluate(record, now, policy);
            require(verdict.outcome != Outcome::missing && verdict.outcome != Outcome::error &&
                    verdict.outcome != Outcome::stale);
            require(!verdict.touch || verdict.outcome == Outcome::ok);
        }
    }
    for (const std::string_view role : roles) {
        const bool held = has_role(record, role);
        require(!held || !role.empty());
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    redisReader* reader = create_reader();
    if (reader == nullptr) return 0;
    if (redisReaderFeed(reader, reinterpret_cast<const char*>(data), size) == REDIS_OK) {
        for (;;) {
            void* reply = nullptr;
            if (redisReaderGetReply(reader, &reply) != REDIS_OK || reply == nullptr) break;
            LookupRecord record;
            bool user_copied = false;
            const DecodeStatus status =
                decode_session_read(static_cast<const redisReply*>(reply), record, user_copied);
            if (status == DecodeStatus::ok) {
                // Without the copies the user half is empty until the user read.
                require(user_copied || record.user_missing());
                // A session that asks for its user hash passes on its own.
                if (!user_copied && needs_user_read(record, 1'700'000'000'000)) {
                    require(evaluate(record, 1'700'000'000'000, Policy{}).outcome == Outcome::ok);
                }
                check_record(record);
            } else {
                // A refused reply leaves nothing behind that could be used.
                for (const auto& field : record.session) require(!field.has_value());
                require(record.user_missing());
            }
            freeReplyObject(reply);
        }
    }
    redisReaderFree(reader);
    return 0;
}
