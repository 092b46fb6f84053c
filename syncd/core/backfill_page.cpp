#include "core/backfill_page.hpp"

#include <nlohmann/json.hpp>

#include <time.h>

#include <algorithm>
#include <cctype>

namespace syncd::backfill {
namespace {

using nlohmann::json;

const char* event_type(Kind kind) {
    switch (kind) {
        case Kind::users:
            return "user.updated";
        case Kind::organizations:
            return "organization.updated";
        case Kind::memberships:
            return "organizationMembership.updated";
        case Kind::sessions:
            // decode_session takes the status from the object; the type is
            // only its fallback.
            return "session.created";
    }
    return "";
}

std::int64_t millis(const json& obj, const char* key) {
    auto it = obj.find(key);
    if (it == obj.end() || !it->is_number_integer()) return 0;
    return std::max<std::int64_t>(0, it->get<std::int64_t>());
}

}  // namespace

const char* kind_name(Kind k) noexcept {
    switch (k) {
        case Kind::users:
            return "users";
        case Kind::organizations:
            return "organizations";
        case Kind::memberships:
            return "memberships";
        case Kind::sessions:
            return "sessions";
    }
    return "unknown";
}

ListedPage decode_list_page(std::string_view body, Kind kind) {
    json doc = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) throw DecodeError("list answer is not valid JSON");
    ListedPage page;
    const json* items = &doc;
    if (doc.is_object()) {
        auto data = doc.find("data");
        if (data == doc.end() || !data->is_array()) {
            throw DecodeError("list answer has no data array");
        }
        items = &*data;
        auto total = doc.find("total_count");
        if (total != doc.end() && total->is_number_integer()) {
            page.total_count = total->get<std::int64_t>();
        }
    } else if (!doc.is_array()) {
        throw DecodeError("list answer is neither an array nor an object");
    }
    page.objects.reserve(items->size());
    for (const auto& item : *items) {
        ListedObject obj;
        if (!item.is_object()) {
            obj.error = "list element is not an object";
            page.objects.push_back(std::move(obj));
            continue;
        }
        auto id = item.find("id");
        if (id != item.end() && id->is_string()) obj.id = id->get<std::string>();
        obj.created_at_ms = millis(item, "created_at");
        obj.updated_at_ms = millis(item, "updated_at");
        // The webhook's decoder, on the envelope the webhook would carry:
        // the same fields are required and the same ones dropped.
        const std::string envelope = json{{"type", event_type(kind)}, {"data", item}}.dump();
        try {
            obj.change = decode_event(envelope).change;
        } catch (const DecodeError& e) {
            obj.error = e.what();
        }
        page.objects.push_back(std::move(obj));
    }
    return page;
}

std::int64_t decode_total_count(std::string_view body) {
    json doc = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
    if (!doc.is_object()) throw DecodeError("count answer is not a JSON object");
    auto total = doc.find("total_count");
    if (total == doc.end() || !total->is_number_integer() || total->get<std::int64_t>() < 0) {
        throw DecodeError("count answer has no total_count");
    }
    return total->get<std::int64_t>();
}

std::int64_t request_offset(const ListCursor& cursor) noexcept {
    return cursor.offset > 0 ? cursor.offset - 1 : 0;
}

PageStep advance(const ListCursor& cursor, std::int64_t requested,
                 const std::vector<ListedObject>& objects, int limit) {
    PageStep step;
    step.next = cursor;
    const auto n = static_cast<std::int64_t>(objects.size());
    auto finish = [&](std::size_t from, bool filter) {
        for (std::size_t i = from; i < objects.size(); ++i) {
            const auto& o = objects[i];
            if (filter && (o.created_at_ms < cursor.last_created_at || o.id == cursor.last_id)) {
                continue;
            }
            step.take.push_back(i);
        }
        step.next.offset = requested + n;
        if (!objects.empty()) {
            step.next.last_id = objects.back().id;
            step.next.last_created_at = objects.back().created_at_ms;
        }
        step.last_page = n < limit;
        return step;
    };
    if (cursor.offset == 0) return finish(0, false);  // the first page
    if (requested == request_offset(cursor)) {
        if (!objects.empty() && objects.front().id == cursor.last_id) return finish(1, false);
        // The listing moved: search backwards (unless already at the start).
        if (requested == 0) return finish(0, true);
        step.step_back_to = std::max<std::int64_t>(0, requested - (limit - 1));
        return step;
    }
    // Searching: far enough back once an older object comes first.
    if (requested > 0 &&
        (objects.empty() || objects.front().created_at_ms >= cursor.last_created_at)) {
        step.step_back_to = std::max<std::int64_t>(0, requested - (limit - 1));
        return step;
    }
    return finish(0, true);
}

Tally tally(const std::optional<StoredVersion>& before, bool applied,
            std::int64_t incoming_updated_at_ms) noexcept {
    if (applied) return before ? Tally::updated : Tally::created;
    if (before && !before->final && before->updated_at_ms == incoming_updated_at_ms) {
        return Tally::unchanged;
    }
    return Tally::stale;
}

std::int64_t parse_since(const std::string& value, std::int64_t now_ms) {
    if (!value.empty() && std::isdigit(static_cast<unsigned char>(value[0])) &&
        value.find('-') == std::string::npos) {
        return now_ms - parse_duration("--since", value) * 1000;
    }
    static constexpr const char* kFormats[] = {"%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S",
                                               "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"};
    for (const char* format : kFormats) {
        struct tm tm {};
        const char* end = strptime(value.c_str(), format, &tm);
        if (!end || *end != '\0') continue;
        time_t at = timegm(&tm);
        if (at == static_cast<time_t>(-1)) continue;
        return static_cast<std::int64_t>(at) * 1000;
    }
    throw ConfigError(
        "--since: expected a UTC time such as 2026-11-01T00:00:00Z or a duration "
        "such as 36h or 7d");
}

}  // namespace syncd::backfill
