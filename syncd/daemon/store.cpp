#include "daemon/store.hpp"

#include <optional>
#include <string>
#include <variant>

#include "core/rules.hpp"
#include "daemon/log.hpp"
#include "daemon/pg.hpp"

namespace syncd {
namespace {

// Every change to a user's rows first takes this user's advisory lock:
// exclusive for the user's own events (which may end sessions and delete
// memberships), shared for session and membership events. Without it a
// session committed concurrently with the user's deletion could stay active.
constexpr const char* kLockUserExclusive = "SELECT pg_advisory_xact_lock(1398361667, hashtext($1))";
constexpr const char* kLockUserShared =
    "SELECT pg_advisory_xact_lock_shared(1398361667, hashtext($1))";
// The same for an organization: exclusive for its own events (a deletion
// ends its memberships), shared for membership events, so that a membership
// committed concurrently with the organization's deletion cannot stay live.
constexpr const char* kLockOrganizationExclusive =
    "SELECT pg_advisory_xact_lock(1398361670, hashtext($1))";
constexpr const char* kLockOrganizationShared =
    "SELECT pg_advisory_xact_lock_shared(1398361670, hashtext($1))";

std::string str(std::int64_t v) {
    return std::to_string(v);
}
PgParam boolean(bool b) {
    return std::string(b ? "t" : "f");
}
PgParam opt_ms(const std::optional<std::int64_t>& v) {
    return v ? PgParam(str(*v)) : std::nullopt;
}

// The final session statuses as a PostgreSQL array literal parameter.
std::string final_statuses_array() {
    return "{ended,expired,removed,replaced,revoked,abandoned}";
}

void enqueue(PGconn* c, const char* kind, const std::string& key, bool revoke, bool cascade,
             StoreResult& result) {
    pg_exec(c, "INSERT INTO outbox (kind, key, revoke, cascade) VALUES ($1, $2, $3, $4)",
            {std::string(kind), key, boolean(revoke), boolean(cascade)});
    ++result.outbox_entries;
}

// The write-back's own triggers: what its body carries (the users row's id,
// created with it, and its role) or what the application derives from the
// same roles (organization memberships).
void queue_writeback(PGconn* c, const StoreOptions& options, const std::string& clerk_user_id,
                     StoreResult& result) {
    if (!options.writeback) return;
    enqueue_writeback(c, clerk_user_id);
    ++result.writeback_entries;
}

bool apply_user(PGconn* c, const UserRow& u, const StoreOptions& options, StoreResult& result) {
    pg_exec(c, kLockUserExclusive, {u.clerk_id});
    // A deleted row sorts first: it makes every later version final.
    auto found = pg_exec(c,
                         "SELECT deleted_at IS NOT NULL, source_updated_at, role, banned "
                         "FROM users WHERE clerk_id = $1 ORDER BY deleted_at IS NULL LIMIT 1",
                         {u.clerk_id});
    std::optional<StoredUser> stored;
    if (PQntuples(found.get()) == 1) {
        stored = StoredUser{pg_bool(found.get(), 0, 0), pg_int(found.get(), 0, 1),
                            pg_text(found.get(), 0, 2), pg_bool(found.get(), 0, 3)};
    }
    UserVerdict v = decide_user(stored, u.updated_at_ms, u.role, u.banned);
    std::vector<PgParam> params = {u.clerk_id,
                                   u.email,
                                   u.name,
                                   u.image_url,
                                   u.role,
                                   boolean(u.banned),
                                   str(u.created_at_ms),
                                   str(u.updated_at_ms)};
    if (v.decision == Decision::insert) {
        pg_exec(c,
                "INSERT INTO users (clerk_id, email, name, image_url, role, banned, created_at, "
                "updated_at, source_updated_at) VALUES ($1, $2, $3, $4, $5, $6, "
                "to_timestamp($7::bigint / 1000.0), to_timestamp($8::bigint / 1000.0), $8)",
                params);
    } else if (v.decision == Decision::update) {
        pg_exec(c,
                "UPDATE users SET email = $2, name = $3, image_url = $4, role = $5, banned = $6, "
                "created_at = to_timestamp($7::bigint / 1000.0), "
                "updated_at = to_timestamp($8::bigint / 1000.0), source_updated_at = $8 "
                "WHERE clerk_id = $1 AND deleted_at IS NULL",
                params);
    } else {
        return false;
    }
    if (v.end_sessions) {
        // Clerk revokes a banned user's sessions; kept active here, an unban
        // would project them back and their old tokens would pass again.
        pg_exec(c,
                "UPDATE sessions SET status = 'revoked', updated_at = now() "
                "WHERE clerk_user_id = $1 AND NOT (status = ANY($2::text[]))",
                {u.clerk_id, final_statuses_array()});
    }
    enqueue(c, "user", u.clerk_id, v.revoke, v.cascade, result);
    // Not on any other update: the echo of a write-back (its public_metadata
    // now holds the dbId and role sent) changes neither the row's id nor
    // its role.
    if (v.decision == Decision::insert || stored->role != u.role) {
        queue_writeback(c, options, u.clerk_id, result);
    }
    return true;
}

bool apply_user_deletion(PGconn* c, const UserDeletion& d, StoreResult& result) {
    pg_exec(c, kLockUserExclusive, {d.clerk_id});
    auto updated =
        pg_exec(c,
                "UPDATE users SET deleted_at = now(), updated_at = now(), email = NULL, "
                "name = NULL, image_url = NULL WHERE clerk_id = $1 AND deleted_at IS NULL",
                {d.clerk_id});
    bool changed = std::string(PQcmdTuples(updated.get())) != "0";
    if (!changed) {
        // Deleted before it was ever created here (unordered delivery): a
        // tombstone, so that the late user.created cannot create it.
        auto inserted = pg_exec(c,
                                "INSERT INTO users (clerk_id, deleted_at) SELECT $1, now() "
                                "WHERE NOT EXISTS (SELECT 1 FROM users WHERE clerk_id = $1)",
                                {d.clerk_id});
        changed = std::string(PQcmdTuples(inserted.get())) != "0";
    }
    auto ended = pg_exec(c,
                         "UPDATE sessions SET status = 'ended', updated_at = now() "
                         "WHERE clerk_user_id = $1 AND NOT (status = ANY($2::text[]))",
                         {d.clerk_id, final_statuses_array()});
    auto removed = pg_exec(c,
                           "UPDATE memberships SET deleted_at = now(), updated_at = now() "
                           "WHERE clerk_user_id = $1 AND deleted_at IS NULL",
                           {d.clerk_id});
    changed = changed || std::string(PQcmdTuples(ended.get())) != "0" ||
              std::string(PQcmdTuples(removed.get())) != "0";
    if (!changed) return false;
    enqueue(c, "user", d.clerk_id, true, true, result);
    return true;
}

// A session of a user already deleted here is stored as ended; a session
// created no later than its user's ban arrived late and is revoked, as the
// ban revoked the others (one created after it may follow an unban that has
// not arrived yet).
constexpr const char* kEffectiveStatus =
    "CASE WHEN EXISTS (SELECT 1 FROM users WHERE clerk_id = $2 AND deleted_at IS NOT NULL) "
    "THEN 'ended' "
    "WHEN NOT ($3 = ANY($9::text[])) AND EXISTS (SELECT 1 FROM users WHERE clerk_id = $2 AND "
    "deleted_at IS NULL AND banned AND source_updated_at >= $6::bigint) THEN 'revoked' "
    "ELSE $3 END";

bool apply_session(PGconn* c, const SessionRow& s, StoreResult& result) {
    pg_exec(c, kLockUserShared, {s.clerk_user_id});
    std::vector<PgParam> params = {s.id,
                                   s.clerk_user_id,
                                   s.status,
                                   str(s.expires_at_ms),
                                   opt_ms(s.last_active_at_ms),
                                   str(s.created_at_ms),
                                   str(s.updated_at_ms),
                                   opt_ms(s.abandon_at_ms),
                                   final_statuses_array()};
    auto inserted = pg_exec(
        c,
        (std::string("INSERT INTO sessions (id, clerk_user_id, status, expires_at, last_active_at, "
                     "created_at, updated_at, source_updated_at, abandon_at) VALUES ($1, $2, ") +
         kEffectiveStatus +
         ", to_timestamp($4::bigint / 1000.0), to_timestamp($5::bigint / 1000.0), "
         "to_timestamp($6::bigint / 1000.0), to_timestamp($7::bigint / 1000.0), $7, "
         "to_timestamp($8::bigint / 1000.0)) "
         "ON CONFLICT (id) DO NOTHING RETURNING status")
            .c_str(),
        params);
    std::optional<StoredSession> stored;
    if (PQntuples(inserted.get()) == 0) {
        auto found = pg_exec(
            c, "SELECT status, source_updated_at FROM sessions WHERE id = $1 FOR UPDATE", {s.id});
        stored = StoredSession{pg_text(found.get(), 0, 0), pg_int(found.get(), 0, 1)};
        Decision d = decide_session(stored, s.status, s.updated_at_ms);
        if (d != Decision::update) return false;
        pg_exec(
            c,
            (std::string("UPDATE sessions SET clerk_user_id = $2, status = ") + kEffectiveStatus +
             ", expires_at = to_timestamp($4::bigint / 1000.0), "
             "last_active_at = to_timestamp($5::bigint / 1000.0), "
             "created_at = to_timestamp($6::bigint / 1000.0), "
             "updated_at = to_timestamp($7::bigint / 1000.0), source_updated_at = $7, "
             "abandon_at = to_timestamp($8::bigint / 1000.0) "
             "WHERE id = $1")
                .c_str(),
            params);
    }
    enqueue(c, "session", s.id, s.status != "active", false, result);
    return true;
}

bool apply_membership(PGconn* c, const MembershipRow& m, const StoreOptions& options,
                      StoreResult& result) {
    pg_exec(c, kLockUserShared, {m.clerk_user_id});
    pg_exec(c, kLockOrganizationShared, {m.organization_id});
    std::vector<PgParam> params = {m.id,
                                   m.clerk_user_id,
                                   m.organization_id,
                                   m.organization_slug,
                                   m.role,
                                   pg_text_array(m.permissions),
                                   str(m.created_at_ms),
                                   str(m.updated_at_ms),
                                   boolean(m.deleted)};
    // A membership of a user or an organization already deleted here is
    // stored as deleted.
    const char* deleted_at =
        "CASE WHEN $9::boolean OR EXISTS (SELECT 1 FROM users WHERE clerk_id = $2 AND "
        "deleted_at IS NOT NULL) OR EXISTS (SELECT 1 FROM organizations WHERE id = $3 AND "
        "deleted_at IS NOT NULL) THEN now() END";
    auto inserted = pg_exec(
        c,
        (std::string("INSERT INTO memberships (id, clerk_user_id, organization_id, "
                     "organization_slug, role, permissions, created_at, updated_at, deleted_at, "
                     "source_updated_at) VALUES ($1, $2, $3, $4, $5, $6::text[], "
                     "to_timestamp($7::bigint / 1000.0), to_timestamp($8::bigint / 1000.0), ") +
         deleted_at + ", $8) ON CONFLICT (id) DO NOTHING RETURNING id")
            .c_str(),
        params);
    bool revoke = m.deleted;
    bool roles_changed = PQntuples(inserted.get()) == 1 && !m.deleted;  // a new role
    if (PQntuples(inserted.get()) == 0) {
        auto found = pg_exec(c,
                             "SELECT deleted_at IS NOT NULL, source_updated_at, role "
                             "FROM memberships WHERE id = $1 FOR UPDATE",
                             {m.id});
        StoredMembership stored{pg_bool(found.get(), 0, 0), pg_int(found.get(), 0, 1),
                                pg_text(found.get(), 0, 2)};
        MembershipVerdict v = decide_membership(stored, m.role, m.deleted, m.updated_at_ms);
        if (v.decision != Decision::update) return false;
        revoke = v.revoke;
        roles_changed = v.revoke;  // its role changed or it was removed
        pg_exec(c,
                (std::string("UPDATE memberships SET clerk_user_id = $2, organization_id = $3, "
                             "organization_slug = $4, role = $5, permissions = $6::text[], "
                             "created_at = to_timestamp($7::bigint / 1000.0), "
                             "updated_at = to_timestamp($8::bigint / 1000.0), deleted_at = ") +
                 deleted_at + ", source_updated_at = $8 WHERE id = $1")
                    .c_str(),
                params);
    }
    enqueue(c, "user", m.clerk_user_id, revoke, false, result);
    if (roles_changed) queue_writeback(c, options, m.clerk_user_id, result);
    return true;
}

bool apply_organization(PGconn* c, const OrganizationRow& o) {
    pg_exec(c, kLockOrganizationExclusive, {o.id});
    auto found = pg_exec(c,
                         "SELECT deleted_at IS NOT NULL, source_updated_at FROM organizations "
                         "WHERE id = $1 FOR UPDATE",
                         {o.id});
    std::optional<StoredOrganization> stored;
    if (PQntuples(found.get()) == 1) {
        stored = StoredOrganization{pg_bool(found.get(), 0, 0), pg_int(found.get(), 0, 1)};
    }
    std::vector<PgParam> params = {o.id, o.slug, o.name, str(o.created_at_ms),
                                   str(o.updated_at_ms)};
    switch (decide_organization(stored, o.updated_at_ms)) {
        case Decision::insert:
            // Under the exclusive lock no one else inserts this id.
            pg_exec(c,
                    "INSERT INTO organizations (id, slug, name, created_at, updated_at, "
                    "source_updated_at) VALUES ($1, $2, $3, to_timestamp($4::bigint / 1000.0), "
                    "to_timestamp($5::bigint / 1000.0), $5)",
                    params);
            break;
        case Decision::update:
            pg_exec(c,
                    "UPDATE organizations SET slug = $2, name = $3, "
                    "created_at = to_timestamp($4::bigint / 1000.0), "
                    "updated_at = to_timestamp($5::bigint / 1000.0), source_updated_at = $5 "
                    "WHERE id = $1",
                    params);
            break;
        default:
            return false;
    }
    // Roles name organizations by id: a new slug or name changes no key.
    return true;
}

bool apply_organization_deletion(PGconn* c, const OrganizationDeletion& d,
                                 const StoreOptions& options, StoreResult& result) {
    pg_exec(c, kLockOrganizationExclusive, {d.id});
    // Deleted before it was ever created here (unordered delivery), the row
    // is a tombstone, so that the late organization.created cannot revive it.
    auto marked = pg_exec(c,
                          "INSERT INTO organizations (id, created_at, updated_at, deleted_at, "
                          "source_updated_at) VALUES ($1, now(), now(), now(), 0) "
                          "ON CONFLICT (id) DO UPDATE SET deleted_at = now(), updated_at = now() "
                          "WHERE organizations.deleted_at IS NULL RETURNING 1",
                          {d.id});
    // Each member loses the role it had there: re-projected and revoked (and
    // queued for the write-back when it is on), in one statement however
    // large the organization.
    auto revoked = pg_exec(c,
                           "WITH ended AS (UPDATE memberships SET deleted_at = now(), "
                           "updated_at = now() WHERE organization_id = $1 AND deleted_at IS NULL "
                           "RETURNING clerk_user_id), "
                           "queued AS (INSERT INTO writeback (clerk_user_id) "
                           "SELECT DISTINCT clerk_user_id FROM ended WHERE $2::boolean ORDER BY 1 "
                           "ON CONFLICT (clerk_user_id) DO UPDATE "
                           "SET generation = writeback.generation + 1) "
                           "INSERT INTO outbox (kind, key, revoke, cascade) "
                           "SELECT DISTINCT 'user', clerk_user_id, true, false FROM ended",
                           {d.id, boolean(options.writeback)});
    int members = std::stoi(PQcmdTuples(revoked.get()));
    result.outbox_entries += members;
    if (options.writeback) result.writeback_entries += members;
    return PQntuples(marked.get()) > 0 || members > 0;
}

struct Applier {
    PGconn* c;
    const StoreOptions& options;
    StoreResult& result;
    bool operator()(const Unhandled&) const { return false; }
    bool operator()(const UserRow& u) const { return apply_user(c, u, options, result); }
    bool operator()(const UserDeletion& d) const { return apply_user_deletion(c, d, result); }
    bool operator()(const SessionRow& s) const { return apply_session(c, s, result); }
    bool operator()(const MembershipRow& m) const {
        return apply_membership(c, m, options, result);
    }
    bool operator()(const OrganizationRow& o) const { return apply_organization(c, o); }
    bool operator()(const OrganizationDeletion& d) const {
        return apply_organization_deletion(c, d, options, result);
    }
};

}  // namespace

const char* outcome_name(Outcome o) noexcept {
    switch (o) {
        case Outcome::applied:
            return "applied";
        case Outcome::stale:
            return "stale";
        case Outcome::ignored:
            return "ignored";
        case Outcome::duplicate:
            return "duplicate";
    }
    return "unknown";
}

bool apply_change(PGconn* conn, const Change& change, const StoreOptions& options,
                  StoreResult& result) {
    return std::visit(Applier{conn, options, result}, change);
}

void enqueue_writeback(PGconn* conn, const std::string& clerk_user_id) {
    // A pending row keeps its schedule (a Clerk in trouble is not hammered
    // by each new change); a row being sent sees the new generation and is
    // sent again.
    pg_exec(conn,
            "INSERT INTO writeback (clerk_user_id) VALUES ($1) ON CONFLICT (clerk_user_id) "
            "DO UPDATE SET generation = writeback.generation + 1",
            {clerk_user_id});
}

StoreResult store_event(PGconn* conn, const std::string& delivery_id, const Event& event,
                        const StoreOptions& options) {
    StoreResult result;
    bool handled = !std::holds_alternative<Unhandled>(event.change);
    PgTransaction tx(conn);
    // The delivery id first: a concurrent redelivery waits here on the
    // primary key until this transaction ends, then sees the conflict.
    auto fresh = pg_exec(conn,
                         "INSERT INTO webhook_events (id, type, event_timestamp, outcome) "
                         "VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING RETURNING 1",
                         {delivery_id, event.type, opt_ms(event.timestamp_ms),
                          std::string(handled ? "applied" : "ignored")});
    if (PQntuples(fresh.get()) == 0) {
        result.outcome = Outcome::duplicate;
        return result;  // rolled back: nothing to keep
    }
    if (!handled) {
        result.outcome = Outcome::ignored;
    } else if (!std::visit(Applier{conn, options, result}, event.change)) {
        result.outcome = Outcome::stale;
        pg_exec(conn, "UPDATE webhook_events SET outcome = 'stale' WHERE id = $1", {delivery_id});
    }
    tx.commit();
    return result;
}

void store_dead_letter(PGconn* conn, const std::string& delivery_id, std::string_view body,
                       const std::string& reason) {
    // bytea in hex: a body that is not UTF-8, or holds a NUL, is kept whole.
    static constexpr char kHex[] = "0123456789abcdef";
    std::string hex = "\\x";
    hex.reserve(2 + body.size() * 2);
    for (unsigned char ch : body) {
        hex += kHex[ch >> 4];
        hex += kHex[ch & 0x0f];
    }
    pg_exec(conn,
            "INSERT INTO dead_letters (id, reason, payload) VALUES ($1, $2, $3::bytea) "
            "ON CONFLICT (id) DO UPDATE SET deliveries = dead_letters.deliveries + 1, "
            "last_received_at = now()",
            {delivery_id, reason, hex});
}

bool keep_dead_letter(PgPool& pool, const std::string& delivery_id, std::string_view body,
                      const std::string& reason) noexcept {
    for (int attempt = 0;; ++attempt) {
        try {
            auto conn = pool.acquire();
            store_dead_letter(conn.get(), delivery_id, body, reason);
            log::warn("delivery " + delivery_id + " kept in dead_letters: " + reason);
            return true;
        } catch (const PgError& e) {
            if (e.connection_lost && attempt == 0) continue;
            log::error("delivery " + delivery_id + " not kept in dead_letters: " + e.what());
            return false;
        } catch (const std::exception& e) {
            log::error("delivery " + delivery_id + " not kept in dead_letters: " + e.what());
            return false;
        }
    }
}

}  // namespace syncd
