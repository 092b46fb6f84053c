// `syncd backfill`'s pure half: decoding a page of a Backend API list into
// the same Change values a webhook carries (through core/event.hpp), and
// the paging rule that survives objects deleted or inserted while the
// import runs. No network, no database.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.hpp"
#include "core/event.hpp"

namespace syncd::backfill {

// In the order a run imports them: a session or a membership names a user.
enum class Kind { users, organizations, memberships, sessions };
constexpr Kind kKinds[] = {Kind::users, Kind::organizations, Kind::memberships, Kind::sessions};
const char* kind_name(Kind k) noexcept;

struct ListedObject {
    std::string id;  // empty when the element had none (then `change` is empty too)
    std::int64_t created_at_ms = 0;
    std::int64_t updated_at_ms = 0;
    std::optional<Change> change;  // nullopt: not decodable; `error` says why
    std::string error;             // names a field, never a value
};

struct ListedPage {
    std::vector<ListedObject> objects;
    std::optional<std::int64_t> total_count;  // when the envelope carries it
};

// A list answer: a bare JSON array (GET /v1/users, /v1/sessions without
// paginated=true) or Clerk's envelope {"data": [...], "total_count": N}.
// Each element is decoded as the webhook event of its kind would be
// (user.updated, organization.updated, organizationMembership.updated,
// session.created with the session's own status); an element that does not
// decode is returned with its error, not thrown, so that one bad object
// does not stop an import. Throws DecodeError when the body is neither form.
ListedPage decode_list_page(std::string_view body, Kind kind);

// GET /v1/users/count: {"object": "total_count", "total_count": N}.
// Throws DecodeError otherwise.
std::int64_t decode_total_count(std::string_view body);

// Where a list kind stands: the position after the last object committed,
// in the listing ordered by created_at ascending, and that object.
struct ListCursor {
    std::int64_t offset = 0;
    std::string last_id;
    std::int64_t last_created_at = 0;
};

// Each page after the first is asked from one position earlier, so that
// its first object must be the last one committed. When it is not, objects
// before the cursor were deleted and the later ones moved back: without the
// check they would be skipped. New objects have the newest created_at and
// land at the end, moving nothing.
std::int64_t request_offset(const ListCursor& cursor) noexcept;

struct PageStep {
    // The objects of the page to import (indices into it).
    std::vector<std::size_t> take;
    ListCursor next;
    bool last_page = false;  // fewer objects than the limit: the kind is done
    // The listing moved under the cursor: ask again from `step_back_to`
    // (nothing taken from this page); set while searching backwards.
    std::optional<std::int64_t> step_back_to;
};

// What to take from a page asked at `requested` with `limit`. When the
// overlap check fails, steps back a page at a time until an object older
// than the cursor's (or the start of the list) comes first, then takes what
// is not older than the cursor's object (objects of the same millisecond
// are imported again, which the ordering rules make harmless).
PageStep advance(const ListCursor& cursor, std::int64_t requested,
                 const std::vector<ListedObject>& objects, int limit);

// How one listed object compared with what was stored before it was
// applied: the counters of the final summary.
enum class Tally { created, updated, unchanged, stale };
struct StoredVersion {
    std::int64_t updated_at_ms = 0;
    bool final = false;  // deleted user, organization or membership, ended session
};
Tally tally(const std::optional<StoredVersion>& before, bool applied,
            std::int64_t incoming_updated_at_ms) noexcept;

// --since TIME: an RFC 3339 UTC time ("2026-11-01T00:00:00Z", the Z and
// the time optional) or a duration before `now_ms` ("36h", "7d"; see
// parse_duration). Milliseconds since the epoch; throws ConfigError naming
// --since.
std::int64_t parse_since(const std::string& value, std::int64_t now_ms);

}  // namespace syncd::backfill
