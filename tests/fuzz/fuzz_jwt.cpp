// JwtKeys::add, verify_session_token, verify_handshake_token and
// decode_claims on arbitrary bytes: no crash, no read outside the input, and
// what a verified token yields is what the module may put in headers.
//
// Random bytes never carry a valid signature, so an input that starts with
// "sign:" is "<header JSON>\n<payload JSON>", which the harness signs with its
// own key before verifying: the claims code sees arbitrary JSON too.
#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "../unit/rsa_test_keys.hpp"
#include "core/jwt.hpp"

namespace {

using namespace session::core;
using session::test_keys::make_token;
using session::test_keys::pem;

void require(bool condition) {
    if (!condition) std::abort();
}

bool has_control(std::string_view text) {
    for (unsigned char c : text) {
        if (c < 0x20 || c == 0x7f) return true;
    }
    return false;
}

// The harness's key pair, made once: the private half signs "sign:" inputs,
// the public half (as a PEM, so kid-less: any kid selects it) verifies.
struct Fixture {
    EVP_PKEY* private_key = nullptr;
    JwtKeys keys;

    Fixture() {
        private_key = EVP_RSA_gen(2048);
        require(private_key != nullptr);
        std::string error;
        require(keys.add(pem(private_key), error));
    }
};

const Fixture& fixture() {
    static const Fixture instance;
    return instance;
}

std::string sign(std::string_view header, std::string_view payload) {
    return make_token(fixture().private_key, header, payload);
}

bool is_list(std::string_view list) {
    // Words separated by single spaces, none empty.
    if (list.empty()) return true;
    if (list.front() == ' ' || list.back() == ' ') return false;
    return list.find("  ") == std::string_view::npos;
}

// `verified`: written by verify_session_token just now, so also in the
// shape it writes (decode_claims checks only what serving needs).
void check_claims_invariants(const SessionClaims& claims, bool verified) {
    require(!claims.sub.empty() && !claims.sid.empty());
    for (std::string_view field :
         {claims.sub, claims.sid, claims.iss, claims.azp, claims.sts, claims.role, claims.roles,
          claims.org_id, claims.org_slug, claims.org_role, claims.org_permissions}) {
        require(!has_control(field));
    }
    if (verified) {
        require(is_list(claims.roles));
        require(is_list(claims.org_permissions));
    }
    for (std::string_view name : {"sub", "exp", "v", "plan", "x"}) {
        std::string_view value;
        if (claims.find_scalar(name, value)) require(!has_control(value));
    }
    ClaimPolicy policy;
    policy.issuer = claims.iss;
    (void)check_claims(claims, policy, 1700000000);
}

void verify_both(std::string_view token) {
    const JwtKeys& keys = fixture().keys;
    std::string flat;
    const JwtError error = verify_session_token(token, keys, "metadata.role", flat);
    if (error == JwtError::none) {
        SessionClaims claims;
        require(decode_claims(reinterpret_cast<const unsigned char*>(flat.data()), flat.size(),
                              claims));
        check_claims_invariants(claims, true);
    }
    std::vector<std::string> directives;
    (void)verify_handshake_token(token, keys, 1700000000, 5, directives);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);

    constexpr std::string_view kSignPrefix = "sign:";
    if (input.substr(0, kSignPrefix.size()) == kSignPrefix) {
        const std::string_view rest = input.substr(kSignPrefix.size());
        const std::size_t newline = rest.find('\n');
        if (newline != std::string_view::npos) {
            verify_both(sign(rest.substr(0, newline), rest.substr(newline + 1)));
        }
        return 0;
    }

    JwtKeys keys;
    std::string error;
    if (keys.add(input, error)) {
        require(keys.size() > 0);
        (void)keys.fingerprint();
    } else {
        require(!error.empty() && keys.size() == 0);
    }

    verify_both(input);

    // Whatever the bytes, the flat decoder only accepts what it can serve.
    SessionClaims claims;
    if (decode_claims(data, size, claims)) check_claims_invariants(claims, false);

    std::string decoded;
    if (base64url_decode(input, decoded)) require(decoded.size() <= size);
    if (looks_like_jwt(input)) require(input.find('.') != std::string_view::npos);
    return 0;
}
