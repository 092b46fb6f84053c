// Reads the rows a projection needs from PostgreSQL: one user with its
// memberships, one session with its user's status, a user's sessions.
#pragma once

#include <libpq-fe.h>

#include <cstdint>
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

// Sessions come with their user's row (SessionState::user) for the copies
// of contract version 2, memberships included, except where said.

// The user's sessions that have not expired yet, with the user's status;
// `user` without memberships: the caller has loaded the user (load_user)
// and copies from that one row.
std::vector<SessionState> load_user_sessions(PGconn* c, const std::string& clerk_user_id);

// The active, unexpired sessions of these users in one query (reconcile's
// user_sessions: sets); `user` without memberships, which a set ignores.
std::vector<SessionState> load_live_sessions_of(PGconn* c,
                                                const std::vector<std::string>& clerk_user_ids,
                                                std::int64_t now_ms);

// Reconcile's pages, in key order after `after` (empty: from the start),
// one query each (plus one for the page's memberships), `now_ms` being the
// time the page is projected at. Only the rows that can need a key:
// every user but those deleted long enough ago that their tombstone has
// expired; sessions that may hold a key (future expiry) or need a
// tombstone (ended inside kSessionTombstoneTtlSeconds).
std::vector<UserState> load_user_page(PGconn* c, const std::string& after, int limit,
                                      std::int64_t now_ms);
std::vector<SessionState> load_session_page(PGconn* c, const std::string& after, int limit,
                                            std::int64_t now_ms);

}  // namespace syncd
