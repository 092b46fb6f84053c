#include "core/revocation.hpp"

#include "core/token.hpp"

namespace session::core {

std::optional<Revocation> parse_revocation(std::string_view message) noexcept {
    constexpr std::string_view kSession = "session ";
    constexpr std::string_view kUser = "user ";
    Revocation revocation{RevocationKind::session, {}};
    if (message == "keys") {
        return Revocation{RevocationKind::keys, {}};
    }
    if (message.substr(0, kSession.size()) == kSession) {
        revocation.id = message.substr(kSession.size());
    } else if (message.substr(0, kUser.size()) == kUser) {
        revocation.kind = RevocationKind::user;
        revocation.id = message.substr(kUser.size());
    } else {
        return std::nullopt;
    }
    // Session ids are tokens; user ids (user_...) share the token alphabet.
    if (!is_valid_token(revocation.id)) {
        return std::nullopt;
    }
    return revocation;
}

}  // namespace session::core
