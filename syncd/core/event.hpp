// Decoding a Clerk event envelope into the rows it carries. Pure logic over
// nlohmann-json: no database, no Redis. Personal data that syncd does not
// keep (IP addresses, user agents, metadata other than the role) is never
// copied out of the JSON.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace syncd {

// The body is not an event syncd can store: answered with 400. The message
// names the field, never its value.
class DecodeError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

struct UserRow {
    std::string clerk_id;
    std::optional<std::string> email;  // the primary address
    std::optional<std::string> name;
    std::optional<std::string> image_url;
    std::string role = "user";
    bool banned = false;
    std::int64_t created_at_ms = 0;
    std::int64_t updated_at_ms = 0;
};

struct UserDeletion {
    std::string clerk_id;
};

struct SessionRow {
    std::string id;
    std::string clerk_user_id;
    std::string status;
    std::int64_t expires_at_ms = 0;
    std::optional<std::int64_t> last_active_at_ms;
    // Clerk drops an inactive session at abandon_at without sending a
    // webhook: past it, the session is over whatever its status says.
    std::optional<std::int64_t> abandon_at_ms;
    std::int64_t created_at_ms = 0;
    std::int64_t updated_at_ms = 0;
};

struct MembershipRow {
    std::string id;
    std::string clerk_user_id;
    std::string organization_id;
    std::optional<std::string> organization_slug;
    std::string role;
    std::vector<std::string> permissions;
    std::int64_t created_at_ms = 0;
    std::int64_t updated_at_ms = 0;
    bool deleted = false;
};

// organization.created / organization.updated. Roles name organizations by
// id (slugs are renamed and reused), so a new slug changes no Redis key.
struct OrganizationRow {
    std::string id;
    std::optional<std::string> slug;
    std::optional<std::string> name;
    std::int64_t created_at_ms = 0;
    std::int64_t updated_at_ms = 0;
};

// organization.deleted: the payload may be a stub ({object, id, deleted}),
// so only the id is relied on.
struct OrganizationDeletion {
    std::string id;
};

// An event type syncd stores as seen and otherwise ignores.
struct Unhandled {};

using Change = std::variant<Unhandled, UserRow, UserDeletion, SessionRow, MembershipRow,
                            OrganizationRow, OrganizationDeletion>;

struct Event {
    std::string type;
    std::optional<std::int64_t> timestamp_ms;  // the envelope's, informational
    Change change;
};

// Parses the raw body. Throws DecodeError when it is not JSON, not an
// object, has no string `type` or no object `data`, or when a handled type
// lacks a field syncd cannot do without (an id, a user id, updated_at), or
// when a string it would store (the type, an id, a slug, a role, an email,
// ...) contains a NUL character.
Event decode_event(std::string_view body);

// The event types syncd acts on; anything else is Unhandled.
bool is_handled_type(std::string_view type);

// "user" when `role` is not a usable role name (empty, too long, or with
// spaces or control characters, which would break the space-separated
// `roles` field).
bool is_valid_role_word(std::string_view role);

}  // namespace syncd
