// Messages on the revocation channel (docs/redis-contract.md):
// "session <session id>", "user <user id>", or "keys" (the key set at
// <prefix>jwks changed: session_jwt_keys redis).
#pragma once

#include <optional>
#include <string_view>

namespace session::core {

// deleted_key: not a message on the channel but Redis's keyspace
// notification that a key was deleted or expired (better-auth mode); `id`
// is the key.
enum class RevocationKind { session, user, keys, deleted_key };

struct Revocation {
    RevocationKind kind;
    std::string_view id;  // a view into the message; empty for keys
};

// nullopt for anything else: an unknown kind, a missing or empty id, an id
// with white space or characters no token has (is_valid_token).
std::optional<Revocation> parse_revocation(std::string_view message) noexcept;

}  // namespace session::core
