#include "daemon/state.hpp"

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
    "(extract(epoch FROM u.updated_at) * 1000)::bigint "
    "FROM sessions s LEFT JOIN LATERAL (SELECT id, deleted_at, banned, updated_at FROM users "
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
    return s;
}

std::vector<std::string> ids(const PgResult& res) {
    std::vector<std::string> out;
    for (int i = 0; i < PQntuples(res.get()); ++i) out.push_back(pg_text(res.get(), i, 0));
    return out;
}

}  // namespace

std::optional<UserState> load_user(PGconn* c, const std::string& clerk_user_id) {
    auto user =
        pg_exec(c,
                "SELECT id::text, email, role, banned, deleted_at IS NOT NULL, "
                "(SELECT (extract(epoch FROM max(expires_at)) * 1000)::bigint FROM sessions "
                "WHERE clerk_user_id = $1) "
                "FROM users WHERE clerk_id = $1 ORDER BY deleted_at IS NULL LIMIT 1",
                {clerk_user_id});
    if (PQntuples(user.get()) == 0) return std::nullopt;
    UserState u;
    u.clerk_id = clerk_user_id;
    u.db_id = pg_text(user.get(), 0, 0);
    u.email = pg_opt_text(user.get(), 0, 1);
    u.role = pg_text(user.get(), 0, 2);
    u.status = status_of(true, pg_bool(user.get(), 0, 4), pg_bool(user.get(), 0, 3));
    u.latest_session_expiry_ms = pg_int(user.get(), 0, 5);
    if (u.status == UserStatus::deleted) return u;
    auto members = pg_exec(c,
                           "SELECT coalesce(organization_slug, organization_id), role "
                           "FROM memberships WHERE clerk_user_id = $1 AND deleted_at IS NULL "
                           "ORDER BY created_at, id",
                           {clerk_user_id});
    for (int i = 0; i < PQntuples(members.get()); ++i) {
        u.memberships.emplace_back(pg_text(members.get(), i, 0), pg_text(members.get(), i, 1));
    }
    return u;
}

std::optional<SessionState> load_session(PGconn* c, const std::string& session_id) {
    auto res = pg_exec(c, (std::string(kSessionColumns) + "WHERE s.id = $1").c_str(), {session_id});
    if (PQntuples(res.get()) == 0) return std::nullopt;
    return session_from(res.get(), 0);
}

std::vector<SessionState> load_sessions(PGconn* c, const std::vector<std::string>& session_ids) {
    auto res = pg_exec(c, (std::string(kSessionColumns) + "WHERE s.id = ANY($1::text[])").c_str(),
                       {pg_text_array(session_ids)});
    std::vector<SessionState> out;
    for (int i = 0; i < PQntuples(res.get()); ++i) out.push_back(session_from(res.get(), i));
    return out;
}

std::vector<SessionState> load_user_sessions(PGconn* c, const std::string& clerk_user_id) {
    auto res = pg_exec(c,
                       (std::string(kSessionColumns) +
                        "WHERE s.clerk_user_id = $1 AND s.expires_at > now() ORDER BY s.id")
                           .c_str(),
                       {clerk_user_id});
    std::vector<SessionState> out;
    for (int i = 0; i < PQntuples(res.get()); ++i) out.push_back(session_from(res.get(), i));
    return out;
}

std::vector<std::string> list_user_ids(PGconn* c, const std::string& after, int limit) {
    return ids(pg_exec(c,
                       "SELECT DISTINCT clerk_id FROM users WHERE clerk_id > $1 "
                       "ORDER BY clerk_id LIMIT $2",
                       {after, std::to_string(limit)}));
}

std::vector<std::string> list_session_ids(PGconn* c, const std::string& after, int limit) {
    return ids(pg_exec(c, "SELECT id FROM sessions WHERE id > $1 ORDER BY id LIMIT $2",
                       {after, std::to_string(limit)}));
}

}  // namespace syncd
