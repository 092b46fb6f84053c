// Reads the rows a projection needs from PostgreSQL: one user with its
// memberships, one session with its user's status, a user's sessions.
#pragma once

#include <libpq-fe.h>

#include <optional>
#include <string>
#include <vector>

#include "core/projection.hpp"

namespace syncd {

// nullopt when PostgreSQL has no row for this user id.
std::optional<UserState> load_user(PGconn* c, const std::string& clerk_user_id);

std::optional<SessionState> load_session(PGconn* c, const std::string& session_id);

// Several sessions in one query; ids without a row are absent from the result.
std::vector<SessionState> load_sessions(PGconn* c, const std::vector<std::string>& session_ids);

// The user's sessions that have not expired yet, with the user's status.
std::vector<SessionState> load_user_sessions(PGconn* c, const std::string& clerk_user_id);

// A page of ids in order, after `after` (empty: from the start).
std::vector<std::string> list_user_ids(PGconn* c, const std::string& after, int limit);
std::vector<std::string> list_session_ids(PGconn* c, const std::string& after, int limit);

}  // namespace syncd
