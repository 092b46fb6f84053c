#include "core/event.hpp"

#include <nlohmann/json.hpp>

#include <array>
#include <cctype>

namespace syncd {
namespace {

using nlohmann::json;

constexpr std::array<std::string_view, 5> kSessionTypes = {
    "session.created", "session.ended", "session.removed", "session.revoked", "session.pending"};

// Strings and numbers read from an object that may lack the key or hold null.
std::optional<std::string> opt_string(const json& obj, const char* key) {
    auto it = obj.find(key);
    if (it == obj.end() || !it->is_string()) return std::nullopt;
    return it->get<std::string>();
}

std::optional<std::int64_t> opt_millis(const json& obj, const char* key) {
    auto it = obj.find(key);
    if (it == obj.end() || !it->is_number_integer()) return std::nullopt;
    auto v = it->get<std::int64_t>();
    if (v < 0) return std::nullopt;
    return v;
}

std::string need_string(const json& obj, const char* key, const std::string& where) {
    auto v = opt_string(obj, key);
    if (!v || v->empty()) throw DecodeError(where + "." + key + " is missing or not a string");
    return *v;
}

std::int64_t need_millis(const json& obj, const char* key, const std::string& where) {
    auto v = opt_millis(obj, key);
    if (!v) throw DecodeError(where + "." + key + " is missing or not a non-negative integer");
    return *v;
}

// libpq takes parameters as C strings: a NUL would cut the value stored in
// PostgreSQL short while Redis keys carry it whole.
void reject_nul(const std::string& value, const char* field) {
    if (value.find('\0') != std::string::npos) {
        throw DecodeError(std::string(field) + " contains a NUL character");
    }
}
void reject_nul(const std::optional<std::string>& value, const char* field) {
    if (value) reject_nul(*value, field);
}

std::optional<std::string> non_empty(std::optional<std::string> s) {
    if (s && s->empty()) return std::nullopt;
    return s;
}

std::string trimmed(const std::string& s) {
    auto b = s.find_first_not_of(" \t\r\n");
    if (b == std::string::npos) return "";
    return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

std::optional<std::string> display_name(const json& user) {
    std::string first = opt_string(user, "first_name").value_or("");
    std::string last = opt_string(user, "last_name").value_or("");
    std::string full = trimmed(trimmed(first) + " " + trimmed(last));
    if (!full.empty()) return full;
    return non_empty(opt_string(user, "username"));
}

std::optional<std::string> primary_email(const json& user) {
    auto primary = opt_string(user, "primary_email_address_id");
    auto list = user.find("email_addresses");
    if (!primary || list == user.end() || !list->is_array()) return std::nullopt;
    for (const auto& entry : *list) {
        if (entry.is_object() && opt_string(entry, "id") == primary) {
            return non_empty(opt_string(entry, "email_address"));
        }
    }
    return std::nullopt;
}

UserRow decode_user(const json& data) {
    UserRow row;
    row.clerk_id = need_string(data, "id", "data");
    row.updated_at_ms = need_millis(data, "updated_at", "data");
    row.created_at_ms = opt_millis(data, "created_at").value_or(row.updated_at_ms);
    row.email = primary_email(data);
    row.name = display_name(data);
    row.image_url = non_empty(opt_string(data, "image_url"));
    auto meta = data.find("public_metadata");
    if (meta != data.end() && meta->is_object()) {
        auto role = opt_string(*meta, "role");
        if (role && is_valid_role_word(*role)) row.role = *role;
    }
    auto banned = data.find("banned");
    row.banned = banned != data.end() && banned->is_boolean() && banned->get<bool>();
    reject_nul(row.clerk_id, "data.id");
    reject_nul(row.email, "data.email_addresses");
    reject_nul(row.name, "data.first_name/last_name/username");
    reject_nul(row.image_url, "data.image_url");
    reject_nul(row.role, "data.public_metadata.role");
    return row;
}

std::string status_from_type(std::string_view type) {
    if (type == "session.created") return "active";
    return std::string(type.substr(type.find('.') + 1));
}

SessionRow decode_session(std::string_view type, const json& data) {
    SessionRow row;
    row.id = need_string(data, "id", "data");
    row.clerk_user_id = need_string(data, "user_id", "data");
    row.status = non_empty(opt_string(data, "status")).value_or(status_from_type(type));
    row.updated_at_ms = need_millis(data, "updated_at", "data");
    row.created_at_ms = opt_millis(data, "created_at").value_or(row.updated_at_ms);
    // A session without expire_at cannot be projected as valid: it expires
    // at once, which is the safe reading.
    row.expires_at_ms = opt_millis(data, "expire_at").value_or(0);
    row.last_active_at_ms = opt_millis(data, "last_active_at");
    row.abandon_at_ms = opt_millis(data, "abandon_at");
    reject_nul(row.id, "data.id");
    reject_nul(row.clerk_user_id, "data.user_id");
    reject_nul(row.status, "data.status");
    return row;
}

MembershipRow decode_membership(std::string_view type, const json& data) {
    MembershipRow row;
    row.id = need_string(data, "id", "data");
    auto user = data.find("public_user_data");
    if (user == data.end() || !user->is_object()) {
        throw DecodeError("data.public_user_data is missing or not an object");
    }
    row.clerk_user_id = need_string(*user, "user_id", "data.public_user_data");
    auto org = data.find("organization");
    if (org == data.end() || !org->is_object()) {
        throw DecodeError("data.organization is missing or not an object");
    }
    row.organization_id = need_string(*org, "id", "data.organization");
    row.organization_slug = non_empty(opt_string(*org, "slug"));
    row.role = need_string(data, "role", "data");
    auto perms = data.find("permissions");
    if (perms != data.end() && perms->is_array()) {
        for (const auto& p : *perms) {
            if (p.is_string()) row.permissions.push_back(p.get<std::string>());
        }
    }
    row.updated_at_ms = need_millis(data, "updated_at", "data");
    row.created_at_ms = opt_millis(data, "created_at").value_or(row.updated_at_ms);
    row.deleted = type == "organizationMembership.deleted";
    reject_nul(row.id, "data.id");
    reject_nul(row.clerk_user_id, "data.public_user_data.user_id");
    reject_nul(row.organization_id, "data.organization.id");
    reject_nul(row.organization_slug, "data.organization.slug");
    reject_nul(row.role, "data.role");
    for (const auto& p : row.permissions) reject_nul(p, "data.permissions");
    return row;
}

OrganizationRow decode_organization(const json& data) {
    OrganizationRow row;
    row.id = need_string(data, "id", "data");
    row.slug = non_empty(opt_string(data, "slug"));
    row.name = non_empty(opt_string(data, "name"));
    row.updated_at_ms = need_millis(data, "updated_at", "data");
    row.created_at_ms = opt_millis(data, "created_at").value_or(row.updated_at_ms);
    reject_nul(row.id, "data.id");
    reject_nul(row.slug, "data.slug");
    reject_nul(row.name, "data.name");
    return row;
}

}  // namespace

bool is_valid_role_word(std::string_view role) {
    if (role.empty() || role.size() > 200) return false;
    for (char c : role) {
        if (!std::isgraph(static_cast<unsigned char>(c))) return false;
    }
    return true;
}

bool is_handled_type(std::string_view type) {
    if (type == "user.created" || type == "user.updated" || type == "user.deleted") return true;
    if (type == "organizationMembership.created" || type == "organizationMembership.updated" ||
        type == "organizationMembership.deleted") {
        return true;
    }
    if (type == "organization.created" || type == "organization.updated" ||
        type == "organization.deleted") {
        return true;
    }
    for (auto t : kSessionTypes) {
        if (type == t) return true;
    }
    return false;
}

Event decode_event(std::string_view body) {
    json doc = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) throw DecodeError("body is not valid JSON");
    if (!doc.is_object()) throw DecodeError("body is not a JSON object");
    auto type = doc.find("type");
    if (type == doc.end() || !type->is_string() || type->get<std::string>().empty()) {
        throw DecodeError("type is missing or not a string");
    }
    auto data = doc.find("data");
    if (data == doc.end() || !data->is_object()) {
        throw DecodeError("data is missing or not an object");
    }
    Event ev;
    ev.type = type->get<std::string>();
    if (ev.type.size() > 200) throw DecodeError("type is too long");
    reject_nul(ev.type, "type");
    ev.timestamp_ms = opt_millis(doc, "timestamp");
    const std::string_view t = ev.type;
    if (t == "user.created" || t == "user.updated") {
        ev.change = decode_user(*data);
    } else if (t == "user.deleted") {
        ev.change = UserDeletion{need_string(*data, "id", "data")};
        reject_nul(std::get<UserDeletion>(ev.change).clerk_id, "data.id");
    } else if (t == "organization.created" || t == "organization.updated") {
        ev.change = decode_organization(*data);
    } else if (t == "organization.deleted") {
        ev.change = OrganizationDeletion{need_string(*data, "id", "data")};
        reject_nul(std::get<OrganizationDeletion>(ev.change).id, "data.id");
    } else if (t.rfind("organizationMembership.", 0) == 0 && is_handled_type(t)) {
        ev.change = decode_membership(t, *data);
    } else if (t.rfind("session.", 0) == 0 && is_handled_type(t)) {
        ev.change = decode_session(t, *data);
    } else {
        ev.change = Unhandled{};
    }
    return ev;
}

}  // namespace syncd
