// Messages on the revocation channel (docs/redis-contract.md):
// "session <session id>" or "user <user id>".
#pragma once

#include <optional>
#include <string_view>

namespace session::core {

enum class RevocationKind { session, user };

struct Revocation {
    RevocationKind kind;
    std::string_view id;  // a view into the message
};

// nullopt for anything else: an unknown kind, a missing or empty id, an id
// with white space or characters no token has (is_valid_token).
std::optional<Revocation> parse_revocation(std::string_view message) noexcept;

}  // namespace session::core
