#include "daemon/state.hpp"

#include <map>

#include "daemon/pg.hpp"

namespace syncd {
namespace {

UserStatus status_of(bool found, bool deleted, bool banned) {
    if (!found) return UserStatus::unknown;
    if (deleted) return UserStatus::deleted;
    return banned ? UserStatus::banned : UserStatus::active;
}

// Times are read back as milliseconds since the epoch.
constexpr const char* kSessionColumns =
    "SELECT s.id, s.clerk_user_id, s.status, "
    "(extract(epoch FROM s.expires_at) * 1000)::bigint, "
    "(extract(epoch FROM s.last_active_at) * 1000)::bigint, "
    "u.id IS NOT NULL, u.deleted_at IS NOT NULL, coalesce(u.banned, false), "
    "(extract(epoch FROM s.updated_at) * 1000)::bigint, "
    "(extract(epoch FROM u.updated_at) * 1000)::bigint, "
    "(extract(epoch FROM s.abandon_at) * 1000)::bigint, "
    "u.db_id, u.email, u.role "
    "FROM sessions s LEFT JOIN LATERAL (SELECT id, deleted_at, banned, updated_at, "
    "id::text AS db_id, email, role FROM users "
    "WHERE clerk_id = s.clerk_user_id ORDER BY deleted_at IS NULL LIMIT 1) u ON true ";

SessionState session_from(const PGresult* r, int row) {
    SessionState s;
    s.id = pg_text(r, row, 0);
    s.clerk_user_id = pg_text(r, row, 1);
    s.status = pg_text(r, row, 2);
    s.expires_at_ms = pg_int(r, row, 3);
    s.last_active_at_ms = pg_opt_int(r, row, 4);
    s.user_status = status_of(pg_bool(r, row, 5), pg_bool(r, row, 6), pg_bool(r, row, 7));
    s.updated_at_ms = pg_int(r, row, 8);
    s.user_updated_at_ms = pg_int(r, row, 9);
    s.abandon_at_ms = pg_opt_int(r, row, 10);
    if (s.user_status != UserStatus::unknown) {
        // The fields the session hash copies; memberships are attached after.
        UserState u;
        u.clerk_id = s.clerk_user_id;
        u.status = s.user_status;
        if (s.user_status != UserStatus::deleted) {
            u.db_id = pg_text(r, row, 11);
            u.email = pg_opt_text(r, row, 12);
            u.role = pg_text(r, row, 13);
        }
        s.user = std::move(u);
    }
    return s;
}

// One row per clerk_id (DISTINCT ON with kUserOrder): a deleted row wins,
// as a deletion is final. The latest session expiry is read only for a
// deleted user, whose tombstone outlives it.
constexpr const char* kUserColumns =
    "SELECT DISTINCT ON (u.clerk_id) u.clerk_id, u.id::text, u.email, u.role, u.banned, "
    "u.deleted_at IS NOT NULL, "
    "CASE WHEN u.deleted_at IS NOT NULL THEN (SELECT (extract(epoch FROM max(expires_at)) * "
    "1000)::bigint FROM sessions WHERE clerk_user_id = u.clerk_id) END "
    "FROM users u ";
constexpr const char* kUserOrder = "ORDER BY u.clerk_id, u.deleted_at IS NULL ";

UserState user_from(const PGresult* r, int row) {
    UserState u;
    u.clerk_id = pg_text(r, row, 0);
    u.db_id = pg_text(r, row, 1);
    u.email = pg_opt_text(r, row, 2);
    u.role = pg_text(r, row, 3);
    u.status = status_of(true, pg_bool(r, row, 5), pg_bool(r, row, 4));
    u.latest_session_expiry_ms = pg_opt_int(r, row, 6).value_or(0);
    return u;
}

// The live memberships of every user not deleted, in one query; a user's
// stay in the order they were created. The only membership query: a
// projection and reconcile must not disagree on `roles`, nor a user hash
// and the copy in its session hashes.
void attach_memberships(PGconn* c, const std::vector<UserState*>& users) {
    std::vector<std::string> wanted;
    std::multimap<std::string, UserState*> by_id;
    for (UserState* u : users) {
        if (u->status == UserStatus::deleted) continue;
        if (by_id.find(u->clerk_id) == by_id.end()) wanted.push_back(u->clerk_id);
        by_id.emplace(u->clerk_id, u);
    }
    if (wanted.empty()) return;
    auto members = pg_exec(c,
                           "SELECT clerk_user_id, organization_id, role "
                           "FROM memberships WHERE clerk_user_id = ANY($1::text[]) "
                           "AND deleted_at IS NULL ORDER BY clerk_user_id, created_at, id",
                           {pg_text_array(wanted)});
    for (int i = 0; i < PQntuples(members.get()); ++i) {
        auto range = by_id.equal_range(pg_text(members.get(), i, 0));
        for (auto it = range.first; it != range.second; ++it) {
            it->second->memberships.emplace_back(pg_text(members.get(), i, 1),
                                                 pg_text(members.get(), i, 2));
        }
    }
}

void attach_memberships(PGconn* c, std::vector<UserState>& users) {
    std::vector<UserState*> ptrs;
    for (auto& u : users) ptrs.push_back(&u);
    attach_memberships(c, ptrs);
}

// The copies' roles of sessions read with kSessionColumns.
void attach_memberships(PGconn* c, std::vector<SessionState>& sessions) {
    std::vector<UserState*> ptrs;
    for (auto& s : sessions) {
        if (s.user) ptrs.push_back(&*s.user);
    }
    attach_memberships(c, ptrs);
}

std::vector<SessionState> sessions_from(const PGresult* r) {
    std::vector<SessionState> out;
    for (int i = 0; i < PQntuples(r); ++i) out.push_back(session_from(r, i));
    return out;
}

}  // namespace

std::optional<UserState> load_user(PGconn* c, const std::string& clerk_user_id) {
    auto res = pg_exec(
        c, (std::string(kUserColumns) + "WHERE u.clerk_id = $1 " + kUserOrder + "LIMIT 1").c_str(),
        {clerk_user_id});
    if (PQntuples(res.get()) == 0) return std::nullopt;
    std::vector<UserState> users{user_from(res.get(), 0)};
    attach_memberships(c, users);
    return std::move(users.front());
}

std::vector<UserState> load_user_page(PGconn* c, const std::string& after, int limit,
                                      std::int64_t now_ms) {
    // A deleted user is left out once its tombstone's life, as
    // project_user computes it at the deletion, is over: 30 days, or a day
    // past its latest session expiry. Rewriting it would extend it forever.
    auto res =
        pg_exec(c,
                (std::string(kUserColumns) +
                 "WHERE u.clerk_id > $1 AND NOT EXISTS ("
                 "SELECT 1 FROM users d WHERE d.clerk_id = u.clerk_id "
                 "AND d.deleted_at < to_timestamp($3::bigint / 1000.0) - "
                 "make_interval(secs => $4::bigint) "
                 "AND NOT EXISTS (SELECT 1 FROM sessions x WHERE x.clerk_user_id = "
                 "d.clerk_id AND x.expires_at > to_timestamp($3::bigint / 1000.0) - "
                 "make_interval(secs => $5::bigint))) " +
                 kUserOrder + "LIMIT $2")
                    .c_str(),
                {after, std::to_string(limit), std::to_string(now_ms),
                 std::to_string(kTombstoneMinTtlSeconds), std::to_string(kTombstoneMarginSeconds)});
    std::vector<UserState> users;
    for (int i = 0; i < PQntuples(res.get()); ++i) users.push_back(user_from(res.get(), i));
    attach_memberships(c, users);
    return users;
}

std::optional<SessionState> load_session(PGconn* c, const std::string& session_id) {
    auto res = pg_exec(c, (std::string(kSessionColumns) + "WHERE s.id = $1").c_str(), {session_id});
    auto out = sessions_from(res.get());
    if (out.empty()) return std::nullopt;
    attach_memberships(c, out);
    return std::move(out.front());
}

std::vector<SessionState> load_sessions(PGconn* c, const std::vector<std::string>& session_ids) {
    auto res = pg_exec(c, (std::string(kSessionColumns) + "WHERE s.id = ANY($1::text[])").c_str(),
                       {pg_text_array(session_ids)});
    auto out = sessions_from(res.get());
    attach_memberships(c, out);
    return out;
}

std::vector<SessionState> load_live_sessions_of(PGconn* c,
                                                const std::vector<std::string>& clerk_user_ids,
                                                std::int64_t now_ms) {
    if (clerk_user_ids.empty()) return {};
    auto res = pg_exec(c,
                       (std::string(kSessionColumns) +
                        "WHERE s.clerk_user_id = ANY($1::text[]) AND s.status = 'active' "
                        "AND s.expires_at > to_timestamp($2::bigint / 1000.0) ORDER BY s.id")
                           .c_str(),
                       {pg_text_array(clerk_user_ids), std::to_string(now_ms)});
    return sessions_from(res.get());
}

std::vector<SessionState> load_user_sessions(PGconn* c, const std::string& clerk_user_id) {
    auto res = pg_exec(c,
                       (std::string(kSessionColumns) +
                        "WHERE s.clerk_user_id = $1 AND s.expires_at > now() ORDER BY s.id")
                           .c_str(),
                       {clerk_user_id});
    return sessions_from(res.get());
}

std::vector<SessionState> load_session_page(PGconn* c, const std::string& after, int limit,
                                            std::int64_t now_ms) {
    // Every session with a future expiry (a key it has may let a token
    // through: it is written, turned into a tombstone or deleted), and one
    // that ended, or whose user was banned or deleted, inside the tombstone
    // window. The rest, most of the table, can have no key left: PEXPIREAT
    // or the tombstone's TTL has removed it.
    auto res = pg_exec(c,
                       (std::string(kSessionColumns) +
                        "WHERE s.id > $1 AND (s.expires_at > to_timestamp($3::bigint / 1000.0) - "
                        "make_interval(secs => $4::bigint) "
                        "OR s.updated_at > to_timestamp($3::bigint / 1000.0) - "
                        "make_interval(secs => $4::bigint) "
                        "OR ((u.banned OR u.deleted_at IS NOT NULL) AND "
                        "u.updated_at > to_timestamp($3::bigint / 1000.0) - "
                        "make_interval(secs => $4::bigint))) "
                        "ORDER BY s.id LIMIT $2")
                           .c_str(),
                       {after, std::to_string(limit), std::to_string(now_ms),
                        std::to_string(kSessionTombstoneTtlSeconds)});
    auto out = sessions_from(res.get());
    attach_memberships(c, out);
    return out;
}

}  // namespace syncd
