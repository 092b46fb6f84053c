// The mapping from each Clerk event type to the rows syncd stores.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/event.hpp"

namespace syncd {
namespace {

using nlohmann::json;

json envelope(const std::string& type, json data) {
    return {{"data", std::move(data)},
            {"object", "event"},
            {"type", type},
            {"timestamp", 1716883200000},
            {"instance_id", "ins_123"},
            {"event_attributes",
             {{"http_request", {{"client_ip", "192.0.2.1"}, {"user_agent", "Mozilla/5.0"}}}}}};
}

json clerk_user() {
    return {{"object", "user"},
            {"id", "user_29w83sxmDNGwOuEthce5gg56FcC"},
            {"first_name", " Ada "},
            {"last_name", "Lovelace"},
            {"username", "ada"},
            {"image_url", "https://img.clerk.com/x.png"},
            {"primary_email_address_id", "idn_2"},
            {"email_addresses",
             {{{"id", "idn_1"}, {"email_address", "old@example.com"}},
              {{"id", "idn_2"},
               {"email_address", "ada@example.com"},
               {"verification", {{"status", "verified"}}}}}},
            {"public_metadata", {{"role", "admin"}}},
            {"private_metadata", nullptr},
            {"banned", false},
            {"locked", false},
            {"created_at", 1654012591514},
            {"updated_at", 1654012591835}};
}

json clerk_session(const std::string& status) {
    return {{"object", "session"},
            {"id", "sess_2TfqvfX1x1Nm2ZBm9Zx0nS3VxYz"},
            {"user_id", "user_29w83sxmDNGwOuEthce5gg56FcC"},
            {"client_id", "client_1"},
            {"status", status},
            {"expire_at", 1700604800000},
            {"abandon_at", 1702592000000},
            {"last_active_at", 1700000000000},
            {"created_at", 1700000000000},
            {"updated_at", 1700000001000},
            {"latest_activity", {{"ip_address", "192.0.2.1"}, {"city", "London"}}}};
}

json clerk_membership() {
    return {{"object", "organization_membership"},
            {"id", "orgmem_1"},
            {"role", "org:admin"},
            {"role_name", "Admin"},
            {"permissions", {"org:posts:read", "org:posts:write"}},
            {"organization", {{"id", "org_1"}, {"slug", "acme"}, {"name", "Acme Inc"}}},
            {"public_user_data",
             {{"user_id", "user_29w83sxmDNGwOuEthce5gg56FcC"}, {"identifier", "ada@example.com"}}},
            {"created_at", 1700000000000},
            {"updated_at", 1700000002000}};
}

TEST(DecodeUser, CreatedMapsEveryColumn) {
    Event ev = decode_event(envelope("user.created", clerk_user()).dump());
    EXPECT_EQ(ev.type, "user.created");
    EXPECT_EQ(ev.timestamp_ms, 1716883200000);
    const auto& u = std::get<UserRow>(ev.change);
    EXPECT_EQ(u.clerk_id, "user_29w83sxmDNGwOuEthce5gg56FcC");
    EXPECT_EQ(u.email, "ada@example.com");  // the primary, not the first
    EXPECT_EQ(u.name, "Ada Lovelace");
    EXPECT_EQ(u.image_url, "https://img.clerk.com/x.png");
    EXPECT_EQ(u.role, "admin");
    EXPECT_FALSE(u.banned);
    EXPECT_EQ(u.created_at_ms, 1654012591514);
    EXPECT_EQ(u.updated_at_ms, 1654012591835);
}

TEST(DecodeUser, NameFallsBackToUsernameThenNull) {
    json u = clerk_user();
    u["first_name"] = nullptr;
    u["last_name"] = "  ";
    EXPECT_EQ(std::get<UserRow>(decode_event(envelope("user.updated", u).dump()).change).name,
              "ada");
    u["username"] = nullptr;
    EXPECT_EQ(std::get<UserRow>(decode_event(envelope("user.updated", u).dump()).change).name,
              std::nullopt);
}

TEST(DecodeUser, RoleDefaultsToUser) {
    json u = clerk_user();
    u["public_metadata"] = {{"role", 7}};
    EXPECT_EQ(std::get<UserRow>(decode_event(envelope("user.updated", u).dump()).change).role,
              "user");
    u["public_metadata"] = json::object();
    EXPECT_EQ(std::get<UserRow>(decode_event(envelope("user.updated", u).dump()).change).role,
              "user");
    u["public_metadata"] = {{"role", "two words"}};
    EXPECT_EQ(std::get<UserRow>(decode_event(envelope("user.updated", u).dump()).change).role,
              "user");
}

TEST(DecodeUser, NoPrimaryEmailAndBanned) {
    json u = clerk_user();
    u["email_addresses"] = json::array();
    u["banned"] = true;
    const auto row = std::get<UserRow>(decode_event(envelope("user.updated", u).dump()).change);
    EXPECT_EQ(row.email, std::nullopt);
    EXPECT_TRUE(row.banned);
}

TEST(DecodeUser, Deleted) {
    json d = {{"object", "user"}, {"id", "user_1"}, {"deleted", true}};
    Event ev = decode_event(envelope("user.deleted", d).dump());
    EXPECT_EQ(std::get<UserDeletion>(ev.change).clerk_id, "user_1");
}

TEST(DecodeSession, EveryType) {
    for (const char* status : {"active", "ended", "removed", "revoked", "pending"}) {
        std::string type =
            std::string("session.") + (std::string(status) == "active" ? "created" : status);
        Event ev = decode_event(envelope(type, clerk_session(status)).dump());
        const auto& s = std::get<SessionRow>(ev.change);
        EXPECT_EQ(s.id, "sess_2TfqvfX1x1Nm2ZBm9Zx0nS3VxYz");
        EXPECT_EQ(s.clerk_user_id, "user_29w83sxmDNGwOuEthce5gg56FcC");
        EXPECT_EQ(s.status, status);
        EXPECT_EQ(s.expires_at_ms, 1700604800000);
        EXPECT_EQ(s.last_active_at_ms, 1700000000000);
        EXPECT_EQ(s.updated_at_ms, 1700000001000);
    }
}

TEST(DecodeSession, StatusFromTypeWhenAbsent) {
    json s = clerk_session("x");
    s.erase("status");
    EXPECT_EQ(
        std::get<SessionRow>(decode_event(envelope("session.revoked", s).dump()).change).status,
        "revoked");
}

TEST(DecodeMembership, CreatedUpdatedDeleted) {
    for (const char* type : {"organizationMembership.created", "organizationMembership.updated",
                             "organizationMembership.deleted"}) {
        Event ev = decode_event(envelope(type, clerk_membership()).dump());
        const auto& m = std::get<MembershipRow>(ev.change);
        EXPECT_EQ(m.id, "orgmem_1");
        EXPECT_EQ(m.clerk_user_id, "user_29w83sxmDNGwOuEthce5gg56FcC");
        EXPECT_EQ(m.organization_id, "org_1");
        EXPECT_EQ(m.organization_slug, "acme");
        EXPECT_EQ(m.role, "org:admin");
        EXPECT_EQ(m.permissions, (std::vector<std::string>{"org:posts:read", "org:posts:write"}));
        EXPECT_EQ(m.deleted, std::string(type) == "organizationMembership.deleted");
    }
}

TEST(DecodeOrganization, CreatedUpdatedDeleted) {
    json org = {{"object", "organization"},
                {"id", "org_2abc"},
                {"slug", "acme"},
                {"name", "Acme"},
                {"created_at", 1700000000000},
                {"updated_at", 1700000005000},
                {"members_count", 3}};
    for (const char* type : {"organization.created", "organization.updated"}) {
        Event ev = decode_event(envelope(type, org).dump());
        const auto& o = std::get<OrganizationRow>(ev.change);
        EXPECT_EQ(o.id, "org_2abc");
        EXPECT_EQ(o.slug, "acme");
        EXPECT_EQ(o.name, "Acme");
        EXPECT_EQ(o.created_at_ms, 1700000000000);
        EXPECT_EQ(o.updated_at_ms, 1700000005000);
    }
    // The deletion may be a stub without updated_at.
    Event del =
        decode_event(envelope("organization.deleted",
                              {{"object", "organization"}, {"id", "org_2abc"}, {"deleted", true}})
                         .dump());
    EXPECT_EQ(std::get<OrganizationDeletion>(del.change).id, "org_2abc");
    org.erase("updated_at");
    EXPECT_THROW(decode_event(envelope("organization.updated", org).dump()), DecodeError);
    EXPECT_THROW(decode_event(envelope("organization.deleted", {{"deleted", true}}).dump()),
                 DecodeError);
}

TEST(DecodeSession, AbandonAtWhenPresent) {
    json s = clerk_session("active");
    EXPECT_EQ(std::get<SessionRow>(decode_event(envelope("session.created", s).dump()).change)
                  .abandon_at_ms,
              1702592000000);
    s.erase("abandon_at");
    EXPECT_FALSE(std::get<SessionRow>(decode_event(envelope("session.created", s).dump()).change)
                     .abandon_at_ms);
}

TEST(DecodeOther, UnknownTypesAreUnhandled) {
    for (const char* type : {"email.created", "organizationInvitation.created", "role.deleted",
                             "permission.updated", "session.something"}) {
        Event ev = decode_event(envelope(type, {{"object", "x"}, {"id", "x_1"}}).dump());
        EXPECT_TRUE(std::holds_alternative<Unhandled>(ev.change)) << type;
    }
}

TEST(DecodeErrors, Envelope) {
    EXPECT_THROW(decode_event("not json"), DecodeError);
    EXPECT_THROW(decode_event("[1,2]"), DecodeError);
    EXPECT_THROW(decode_event(R"({"data":{}})"), DecodeError);
    EXPECT_THROW(decode_event(R"({"type":"user.created"})"), DecodeError);
    EXPECT_THROW(decode_event(R"({"type":"user.created","data":[]})"), DecodeError);
    EXPECT_THROW(decode_event(R"({"type":5,"data":{}})"), DecodeError);
    EXPECT_THROW(decode_event("{\"type\":\"a\",\"data\":{}"), DecodeError);
}

TEST(DecodeErrors, HandledTypeWithoutRequiredFields) {
    json u = clerk_user();
    u.erase("updated_at");
    EXPECT_THROW(decode_event(envelope("user.updated", u).dump()), DecodeError);
    json s = clerk_session("active");
    s.erase("user_id");
    EXPECT_THROW(decode_event(envelope("session.created", s).dump()), DecodeError);
    json m = clerk_membership();
    m.erase("organization");
    EXPECT_THROW(decode_event(envelope("organizationMembership.created", m).dump()), DecodeError);
}

// libpq would cut a parameter at the NUL while the Redis key keeps it.
TEST(DecodeErrors, NulInStoredStringsIsRefused) {
    const std::string nul("\0", 1);
    auto refused = [](const std::string& type, const json& data) {
        try {
            decode_event(envelope(type, data).dump());
        } catch (const DecodeError& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    json s = clerk_session("active");
    s["id"] = "sess_1" + nul + "x";
    EXPECT_NE(refused("session.created", s).find("data.id"), std::string::npos);
    s = clerk_session("active");
    s["user_id"] = "user_1" + nul;
    EXPECT_NE(refused("session.created", s).find("data.user_id"), std::string::npos);
    json u = clerk_user();
    u["id"] = "user_1" + nul;
    EXPECT_NE(refused("user.created", u), "");
    EXPECT_NE(refused("user.deleted", {{"id", "user_1" + nul}}), "");
    u = clerk_user();
    u["email_addresses"][1]["email_address"] = "ada@example.com" + nul + "x";
    EXPECT_NE(refused("user.updated", u), "");
    json m = clerk_membership();
    m["organization"]["slug"] = "acme" + nul;
    EXPECT_NE(refused("organizationMembership.created", m).find("slug"), std::string::npos);
    m = clerk_membership();
    m["public_user_data"]["user_id"] = "user_1" + nul;
    EXPECT_NE(refused("organizationMembership.created", m), "");
    m = clerk_membership();
    m["role"] = "org:admin" + nul;
    EXPECT_NE(refused("organizationMembership.created", m), "");
    EXPECT_NE(refused("email.created" + nul, {{"id", "x"}}).find("type"), std::string::npos);
    // The value itself is never echoed.
    EXPECT_EQ(refused("session.created", s).find("sess_1"), std::string::npos);
}

TEST(DecodeErrors, MessageDoesNotEchoValues) {
    json u = clerk_user();
    u["updated_at"] = "ada@example.com";
    try {
        decode_event(envelope("user.updated", u).dump());
        FAIL();
    } catch (const DecodeError& e) {
        EXPECT_EQ(std::string(e.what()).find("ada@"), std::string::npos);
        EXPECT_NE(std::string(e.what()).find("updated_at"), std::string::npos);
    }
}

}  // namespace
}  // namespace syncd
