// JwtKeys::add, verify_session_token, verify_handshake_token and
// decode_claims on arbitrary bytes: no crash, no read outside the input, and
// what a verified token yields is what the module may put in headers.
//
// Random bytes never carry a valid signature, so an input that starts with
// "sign:" is "<header JSON>\n<payload JSON>", which the harness signs with its
// own key before verifying: the claims code sees arbitrary JSON too.
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/jwt.hpp"

namespace {

using session::core::base64url_decode;
using session::core::check_claims;
using session::core::ClaimPolicy;
using session::core::decode_claims;
using session::core::JwtError;
using session::core::JwtKeys;
using session::core::looks_like_jwt;
using session::core::SessionClaims;
using session::core::verify_handshake_token;
using session::core::verify_session_token;

void require(bool condition) {
    if (!condition) std::abort();
}

bool has_control(std::string_view text) {
    for (unsigned char c : text) {
        if (c < 0x20 || c == 0x7f) return true;
    }
    return false;
}

std::string base64url(std::string_view bytes) {
    std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
    const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(bytes.data()),
                                  static_cast<int>(bytes.size()));
    out.resize(static_cast<std::size_t>(n));
    while (!out.empty() && out.back() == '=') out.pop_back();
    for (char& c : out) {
        if (c == '+') c = '-';
        if (c == '/') c = '_';
    }
    return out;
}

// The harness's key pair, made once: the private half signs "sign:" inputs,
// the public half (as a PEM, so kid-less: any kid selects it) verifies.
struct Fixture {
    EVP_PKEY* private_key = nullptr;
    JwtKeys keys;

    Fixture() {
        private_key = EVP_RSA_gen(2048);
        require(private_key != nullptr);
        std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
        require(bio && PEM_write_bio_PUBKEY(bio.get(), private_key) == 1);
        char* data = nullptr;
        const long length = BIO_get_mem_data(bio.get(), &data);
        std::string error;
        require(keys.add(std::string_view(data, static_cast<std::size_t>(length)), error));
    }
};

const Fixture& fixture() {
    static const Fixture instance;
    return instance;
}

std::string sign(std::string_view header, std::string_view payload) {
    const std::string input = base64url(header) + "." + base64url(payload);
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    std::size_t length = 0;
    require(ctx && EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr,
                                      fixture().private_key) == 1);
    require(EVP_DigestSign(ctx.get(), nullptr, &length,
                           reinterpret_cast<const unsigned char*>(input.data()),
                           input.size()) == 1);
    std::string signature(length, '\0');
    require(EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &length,
                           reinterpret_cast<const unsigned char*>(input.data()),
                           input.size()) == 1);
    signature.resize(length);
    return input + "." + base64url(signature);
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
