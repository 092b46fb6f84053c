// Clerk session tokens (RS256/384/512 JWS, compact form): the keys a location
// trusts, verification, and the claims the module uses. Pure logic: no
// nginx. Crypto is OpenSSL's, JSON is simdjson's.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

typedef struct evp_pkey_st EVP_PKEY;

namespace session::core {

// Clerk's token categories (the `cat` header). Absent is accepted (older
// tokens); any other category is not a session token.
inline constexpr std::string_view kSessionTokenCategory = "cl_B7d4PD111AAA";
inline constexpr std::string_view kIgnoreCategory = "cl_I7d4PD111III";

// Largest decoded header or payload accepted, checked before parsing.
inline constexpr std::size_t kMaxJwtPartLength = 8192;

// The RSA public keys of one `session_jwt_keys` directive, parsed once when
// the configuration loads. Move-only; frees its EVP_PKEYs.
class JwtKeys {
  public:
    struct Key {
        std::string kid;  // empty for a PEM key (and a JWK without kid)
        std::string alg;  // the JWK's "alg" when given (RS256...), else empty
        std::shared_ptr<EVP_PKEY> pkey;
    };

    JwtKeys() = default;

    // Adds every key of one file's content: a JWKS document ({"keys": [...]},
    // RSA keys with "n" and "e"; keys of another kty or with "use" other than
    // "sig" are skipped), a single JWK object, or one or more PEM
    // SubjectPublicKeyInfo blocks ("-----BEGIN PUBLIC KEY-----"). False, with
    // `error` naming the problem (never key material), when the content is
    // malformed, holds no usable key, or a key is RSA under 2048 bits.
    bool add(std::string_view content, std::string& error);

    // Appends `other`'s keys (sharing their EVP_PKEYs), except those whose
    // kid this set already has: the keys added first win (session_jwt_keys
    // files before the set read from Redis).
    void merge(const JwtKeys& other);

    std::size_t size() const noexcept { return keys_.size(); }
    const std::vector<Key>& keys() const noexcept { return keys_; }

    // SHA-256 over every key's public DER, in order: a cached verdict is
    // bound to the key set that produced it.
    std::array<unsigned char, 32> fingerprint() const;

  private:
    std::vector<Key> keys_;
};

// Why a token is refused. The module maps every one of them to `invalid`
// (the handshake looks at expired / not_yet_valid / issued_in_future).
enum class JwtError {
    none,
    malformed,         // not three base64url parts, bad base64url, bad JSON, too large,
                       // a duplicate member name, exp missing, a time claim not a number
    type,              // `typ` present and not "JWT"
    algorithm,         // `alg` not RS256/RS384/RS512 (none, HS*, ...), or not the JWK's alg
    category,          // `cat` present and neither the session nor the ignore category
    unknown_key,       // no key for this `kid` (and no kid-less key)
    signature,         // the signature does not verify
    subject,           // `sub` missing, empty or not a string; or `sid` likewise
    issuer,            // `iss` is not the configured issuer
    authorized_party,  // `azp` missing or not allowed (when parties are configured)
    expired,           // now >= exp + leeway (the SDK: exp <= now - skew)
    not_yet_valid,     // now < nbf - leeway
    issued_in_future,  // now < iat - leeway
    pending,           // `sts` is "pending": signed in with a pending task
};

std::string_view jwt_error_name(JwtError error) noexcept;

// Three non-empty parts of base64url characters separated by two dots: such
// a token is verified as a JWT; anything else is an opaque session id.
bool looks_like_jwt(std::string_view token) noexcept;

// Exactly two dots (memchr, vectorised): what a token must have to be worth
// a cache lookup as a JWT before looks_like_jwt has scanned it.
bool has_two_dots(std::string_view token) noexcept;

// base64url without padding (RFC 7515 section 2); padding '=' is refused.
// False on any character outside the alphabet or an impossible length.
bool base64url_decode(std::string_view in, std::string& out);

// The claims of a verified session token that the module uses. Views point
// into a flat buffer (see decode_claims) that outlives the struct.
struct SessionClaims {
    std::string_view sub;  // user id (user_...)
    std::string_view sid;  // session id (sess_...)
    std::string_view iss;
    std::string_view azp;  // empty when absent
    std::string_view sts;  // empty when absent
    std::int64_t exp = 0;
    bool has_nbf = false;
    std::int64_t nbf = 0;
    bool has_iat = false;
    std::int64_t iat = 0;
    // At the configured role claim path (dotted, e.g. metadata.role): a string
    // gives role = roles = it; an array of strings gives role = the first and
    // roles = all, space-separated. Empty when absent or of another type.
    // No field holds a control character (such a value is left out), and the
    // space-separated lists (roles, org_permissions) leave out words that are
    // empty or hold a space; non-string array elements are skipped.
    std::string_view role;
    std::string_view roles;
    // The active organization, as Clerk's SDK presents it: v2 from `o` (and
    // `fea`), v1 from org_id / org_role / org_slug / org_permissions.
    std::string_view org_id;
    std::string_view org_slug;
    std::string_view org_role;  // with the "org:" prefix, e.g. org:admin
    std::string_view
        org_permissions;  // space-separated, e.g. "org:billing:read org:billing:manage"
    // Every top-level claim whose value is a string, number or boolean and
    // whose name is [A-Za-z0-9_]{1,255} (for $session_claim_<name>);
    // integers in decimal, other numbers in their shortest round-trip form
    // (1.5, 1e3 gives 1000), booleans as true/false. Strings holding a control
    // character (< 0x20 or 0x7f) are left out: they would reach headers.
    std::string_view scalars;  // encoded; read with find_scalar

    // The value of top-level claim `name`, if it is one of the scalars.
    bool find_scalar(std::string_view name, std::string_view& value) const noexcept;
};

// Verifies `token` (a session token) against `keys`, in the order of Clerk's
// SDK: decode; typ; alg; cat; key by kid (a kid-less key when no key has the
// token's kid); signature (EVP_DigestVerify); sub and sid are non-empty
// strings free of control characters; exp a number (nbf, iat too when
// present; a fraction is dropped). On success (and only then) writes the
// claims, flat, to `flat`, with the role taken from `role_claim` (a dotted
// path). Time, issuer, azp and sts are checked by check_claims, on every use,
// cached or not. Throws nothing but std::bad_alloc. Reuses
// per-thread (thread_local) parsers and buffers: no allocation once warm.
JwtError verify_session_token(std::string_view token, const JwtKeys& keys,
                              std::string_view role_claim, std::string& flat);

// Reads a buffer written by verify_session_token; views point into it. False
// when it is truncated or inconsistent.
bool decode_claims(const unsigned char* flat, std::size_t len, SessionClaims& out) noexcept;

// What a location asks of a verified token's claims.
struct ClaimPolicy {
    std::string_view issuer;  // exact match of iss (empty: only a token without iss)
    const std::string_view* authorized_parties = nullptr;  // azp must be one; none: not checked
    std::size_t authorized_party_count = 0;
    std::int64_t leeway_s = 5;
};

// The issuer first (the SDK does not pin it; we do: a token of another
// instance is never worth a handshake), then in the SDK's order azp, exp,
// nbf, iat (each with the leeway), and last sts pending.
JwtError check_claims(const SessionClaims& claims, const ClaimPolicy& policy,
                      std::int64_t now_s) noexcept;

// A handshake token: typ, alg, cat (as for session tokens: the SDK mints
// handshake tokens with the session category), key,
// signature as above; exp when present, with the leeway. Writes the strings
// of its `handshake` claim (Set-Cookie directives) to `directives`;
// `malformed` when the claim is missing or not an array of strings.
JwtError verify_handshake_token(std::string_view token, const JwtKeys& keys, std::int64_t now_s,
                                std::int64_t leeway_s, std::vector<std::string>& directives);

}  // namespace session::core
