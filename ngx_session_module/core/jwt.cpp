// Session and handshake token verification (see jwt.hpp): decoding,
// the header's checks, the key and the signature, and the claims every
// session token must carry. The rest of the claims: clerk_claims.cpp; their
// flat form, which the cache and the request pool hold: jwt_flat.cpp.
//
// Runs per request when the cache is off, so the hot path allocates nothing
// in the steady state: the JSON parsers, the decode buffers and the digest
// context live per thread (nginx workers have one) and are reused.
#include "core/jwt.hpp"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <simdjson.h>

#include <climits>
#include <cstring>
#include <optional>

#include "core/clerk_claims.hpp"
#include "core/jwt_flat.hpp"
#include "core/jwt_json.hpp"
#include "core/jwt_text.hpp"

namespace session::core {
namespace {

using namespace jwt_detail;

// Base64url text that decodes to at most kMaxJwtPartLength bytes.
constexpr std::size_t kMaxEncodedPartLength = (kMaxJwtPartLength * 4 + 2) / 3;

struct MdCtxFree {
    void operator()(EVP_MD_CTX* p) const noexcept { EVP_MD_CTX_free(p); }
};
struct PkeyCtxFree {
    void operator()(EVP_PKEY_CTX* p) const noexcept { EVP_PKEY_CTX_free(p); }
};

// An RSA PKCS#1 v1.5 verification context for one key and digest, set up
// once: OpenSSL 3 spends about as long setting one up (provider fetches
// under a lock) as the rest of the verification minus the RSA operation.
// It holds a reference to its key, so the key's address cannot be reused by
// another key while the entry exists.
struct Verifier {
    std::shared_ptr<EVP_PKEY> pkey;
    const EVP_MD* digest = nullptr;
    std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx;
};
constexpr std::size_t kVerifierSlots = 16;

// Everything a verification reuses from one call to the next.
struct Workspace {
    std::string translated;  // base64url turned into padded base64
    std::string header;      // decoded parts; the JSON ones followed by
    std::string payload;     // SIMDJSON_PADDING bytes for simdjson
    std::string signature;
    ClaimsScratch claims;  // what the claims are built in
    // Two parsers: the header's fields stay valid while the payload is read.
    simdjson::dom::parser header_parser;
    simdjson::dom::parser payload_parser;
    std::unique_ptr<EVP_MD_CTX, MdCtxFree> md_ctx;
    std::array<Verifier, kVerifierSlots> verifiers;
    std::size_t next_verifier = 0;  // round-robin replacement

    Workspace() : md_ctx(EVP_MD_CTX_new()) {
        // Sized once for the largest part: no reallocation per request.
        // On failure parse() allocates on first use instead.
        if (header_parser.allocate(kMaxJwtPartLength, 64) != simdjson::SUCCESS) return;
        if (payload_parser.allocate(kMaxJwtPartLength, 64) != simdjson::SUCCESS) return;
    }
};

Workspace& workspace() {
    thread_local Workspace instance;
    return instance;
}

// base64url character -> base64 character, 0 for anything else.
constexpr std::array<char, 256> make_base64_table() {
    std::array<char, 256> table{};
    for (int c = 'A'; c <= 'Z'; ++c) table[c] = static_cast<char>(c);
    for (int c = 'a'; c <= 'z'; ++c) table[c] = static_cast<char>(c);
    for (int c = '0'; c <= '9'; ++c) table[c] = static_cast<char>(c);
    table['-'] = '+';
    table['_'] = '/';
    return table;
}
constexpr std::array<char, 256> kBase64FromUrl = make_base64_table();

// Decodes into `out` (resized to the decoded length plus `padding` zero
// bytes) and returns the decoded length; npos when not base64url. OpenSSL
// decodes; this only maps the alphabet and restores the '=' padding.
std::size_t decode_into(std::string_view in, std::string& translated, std::string& out,
                        std::size_t padding) {
    constexpr std::size_t kInvalid = std::string::npos;
    if (in.size() % 4 == 1 || in.size() > static_cast<std::size_t>(INT_MAX) - 3) return kInvalid;
    const std::size_t padded = (in.size() + 3) / 4 * 4;
    translated.resize(padded);
    for (std::size_t i = 0; i < in.size(); ++i) {
        const char mapped = kBase64FromUrl[static_cast<unsigned char>(in[i])];
        if (mapped == 0) return kInvalid;
        translated[i] = mapped;
    }
    for (std::size_t i = in.size(); i < padded; ++i) translated[i] = '=';
    out.resize(padded / 4 * 3 + padding);
    if (padded == 0) return 0;
    const int decoded = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                        reinterpret_cast<const unsigned char*>(translated.data()),
                                        static_cast<int>(padded));
    if (decoded < 0) return kInvalid;
    // EVP_DecodeBlock counts the bytes of the '=' padding too.
    const std::size_t length = static_cast<std::size_t>(decoded) - (padded - in.size());
    out.resize(length);
    out.resize(length + padding, '\0');
    return length;
}

// The cached verification context for `pkey` and `digest`; null when
// OpenSSL cannot set one up.
EVP_PKEY_CTX* verifier_for(Workspace& work, const std::shared_ptr<EVP_PKEY>& pkey,
                           const EVP_MD* digest) {
    for (const Verifier& verifier : work.verifiers) {
        if (verifier.ctx && verifier.pkey == pkey && verifier.digest == digest) {
            return verifier.ctx.get();
        }
    }
    std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(
        EVP_PKEY_CTX_new_from_pkey(nullptr, pkey.get(), nullptr));
    if (!ctx || EVP_PKEY_verify_init(ctx.get()) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_PADDING) != 1 ||
        EVP_PKEY_CTX_set_signature_md(ctx.get(), digest) != 1) {
        return nullptr;
    }
    Verifier& slot = work.verifiers[work.next_verifier++ % kVerifierSlots];
    slot.pkey = pkey;
    slot.digest = digest;
    slot.ctx = std::move(ctx);
    return slot.ctx.get();
}

// ---- One verification: the decoded parts and the claims found in them.

struct Header {
    std::optional<element> alg, typ, kid, cat;
};

struct Payload {
    object root;
    std::optional<element> sub, sid, iss, azp, sts, exp, nbf, iat;
    OrgMembers org;  // read by read_org
    std::optional<element> handshake;
};

bool parse_part(std::string_view encoded, std::string& decoded, Workspace& work,
                simdjson::dom::parser& parser, object& out) {
    if (encoded.size() > kMaxEncodedPartLength) return false;
    const std::size_t length =
        decode_into(encoded, work.translated, decoded, simdjson::SIMDJSON_PADDING);
    if (length == std::string::npos || length > kMaxJwtPartLength) return false;
    element root;
    if (parser.parse(decoded.data(), length, false).get(root) != simdjson::SUCCESS) return false;
    return root.get(out) == simdjson::SUCCESS && has_unique_names(out);
}

// Steps shared by session and handshake tokens, in the SDK's order: decode
// (all three parts, both JSON documents), typ, alg, then ours: cat, the key
// by kid, the key's own alg, and the signature.
JwtError verify_signed(std::string_view token, const JwtKeys& keys, Workspace& work,
                       Payload& payload) {
    const std::size_t first_dot = token.find('.');
    if (first_dot == std::string_view::npos) return JwtError::malformed;
    const std::size_t second_dot = token.find('.', first_dot + 1);
    if (second_dot == std::string_view::npos ||
        token.find('.', second_dot + 1) != std::string_view::npos) {
        return JwtError::malformed;
    }
    const std::string_view encoded_header = token.substr(0, first_dot);
    const std::string_view encoded_payload =
        token.substr(first_dot + 1, second_dot - first_dot - 1);
    const std::string_view encoded_signature = token.substr(second_dot + 1);
    if (encoded_header.empty() || encoded_payload.empty() || encoded_signature.empty()) {
        return JwtError::malformed;
    }

    object header_object;
    if (!parse_part(encoded_header, work.header, work, work.header_parser, header_object)) {
        return JwtError::malformed;
    }
    if (!parse_part(encoded_payload, work.payload, work, work.payload_parser, payload.root)) {
        return JwtError::malformed;
    }
    if (encoded_signature.size() > kMaxEncodedPartLength) return JwtError::malformed;
    const std::size_t signature_length =
        decode_into(encoded_signature, work.translated, work.signature, 0);
    if (signature_length == std::string::npos) return JwtError::malformed;

    Header header;
    for (auto field : header_object) {
        if (field.key == "alg")
            header.alg = field.value;
        else if (field.key == "typ")
            header.typ = field.value;
        else if (field.key == "kid")
            header.kid = field.value;
        else if (field.key == "cat")
            header.cat = field.value;
    }

    std::string_view text;
    if (header.typ && (!get_string(header.typ, text) || text != "JWT")) return JwtError::type;

    std::string_view alg;
    const EVP_MD* digest = nullptr;
    if (get_string(header.alg, alg)) {
        // Fetched once: an implicit fetch per call would cost a lookup.
        static EVP_MD* const sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
        static EVP_MD* const sha384 = EVP_MD_fetch(nullptr, "SHA384", nullptr);
        static EVP_MD* const sha512 = EVP_MD_fetch(nullptr, "SHA512", nullptr);
        if (alg == "RS256")
            digest = sha256;
        else if (alg == "RS384")
            digest = sha384;
        else if (alg == "RS512")
            digest = sha512;
    }
    if (digest == nullptr) return JwtError::algorithm;

    if (header.cat && (!get_string(header.cat, text) ||
                       (text != kSessionTokenCategory && text != kIgnoreCategory))) {
        return JwtError::category;
    }

    std::string_view kid;
    if (header.kid && !get_string(header.kid, kid)) return JwtError::unknown_key;
    const JwtKeys::Key* key = nullptr;
    const JwtKeys::Key* kidless = nullptr;
    for (const auto& candidate : keys.keys()) {
        if (candidate.kid.empty()) {
            if (kidless == nullptr) kidless = &candidate;
        } else if (header.kid && candidate.kid == kid) {
            key = &candidate;
            break;
        }
    }
    if (key == nullptr) key = kidless;
    if (key == nullptr || !key->pkey) return JwtError::unknown_key;
    if (!key->alg.empty() && key->alg != alg) return JwtError::algorithm;

    // The signed input is the header and payload exactly as sent.
    const std::string_view signing_input = token.substr(0, second_dot);
    EVP_MD_CTX* md_ctx = work.md_ctx.get();
    EVP_PKEY_CTX* verifier = verifier_for(work, key->pkey, digest);
    unsigned char hash[EVP_MAX_MD_SIZE];
    unsigned int hash_length = 0;
    const bool valid =
        md_ctx != nullptr && verifier != nullptr &&
        EVP_DigestInit_ex(md_ctx, digest, nullptr) == 1 &&
        EVP_DigestUpdate(md_ctx, signing_input.data(), signing_input.size()) == 1 &&
        EVP_DigestFinal_ex(md_ctx, hash, &hash_length) == 1 &&
        EVP_PKEY_verify(verifier, reinterpret_cast<const unsigned char*>(work.signature.data()),
                        signature_length, hash, hash_length) == 1;
    if (!valid) {
        // Left in the queue, the errors would surface in nginx's next SSL log.
        ERR_clear_error();
        return JwtError::signature;
    }
    return JwtError::none;
}

void index_payload(Payload& payload) {
    for (auto field : payload.root) {
        const std::string_view name = field.key;
        if (name.size() < 1) continue;
        switch (name[0]) {
            case 's':
                if (name == "sub")
                    payload.sub = field.value;
                else if (name == "sid")
                    payload.sid = field.value;
                else if (name == "sts")
                    payload.sts = field.value;
                break;
            case 'i':
                if (name == "iss")
                    payload.iss = field.value;
                else if (name == "iat")
                    payload.iat = field.value;
                break;
            case 'a':
                if (name == "azp") payload.azp = field.value;
                break;
            case 'e':
                if (name == "exp") payload.exp = field.value;
                break;
            case 'n':
                if (name == "nbf") payload.nbf = field.value;
                break;
            case 'v':
                if (name == "v") payload.org.v = field.value;
                break;
            case 'o':
                if (name == "o")
                    payload.org.o = field.value;
                else if (name == "org_id")
                    payload.org.org_id = field.value;
                else if (name == "org_role")
                    payload.org.org_role = field.value;
                else if (name == "org_slug")
                    payload.org.org_slug = field.value;
                else if (name == "org_permissions")
                    payload.org.org_permissions = field.value;
                break;
            case 'f':
                if (name == "fea") payload.org.fea = field.value;
                break;
            case 'h':
                if (name == "handshake") payload.handshake = field.value;
                break;
            default:
                break;
        }
    }
}

// A negative leeway is none; a huge one must not overflow exp + leeway.
std::int64_t clamp_leeway(std::int64_t leeway_s) noexcept {
    return leeway_s < 0 ? 0 : (leeway_s > kMaxTimestamp ? kMaxTimestamp : leeway_s);
}

}  // namespace

std::string_view jwt_error_name(JwtError error) noexcept {
    switch (error) {
        case JwtError::none:
            return "none";
        case JwtError::malformed:
            return "malformed";
        case JwtError::type:
            return "type";
        case JwtError::algorithm:
            return "algorithm";
        case JwtError::category:
            return "category";
        case JwtError::unknown_key:
            return "unknown_key";
        case JwtError::signature:
            return "signature";
        case JwtError::subject:
            return "subject";
        case JwtError::issuer:
            return "issuer";
        case JwtError::authorized_party:
            return "authorized_party";
        case JwtError::expired:
            return "expired";
        case JwtError::not_yet_valid:
            return "not_yet_valid";
        case JwtError::issued_in_future:
            return "issued_in_future";
        case JwtError::pending:
            return "pending";
    }
    return "unknown";
}

bool looks_like_jwt(std::string_view token) noexcept {
    // Runs on every request's token: one branch-free pass of comparisons
    // (no table lookups, so the compiler can vectorise it), then the cheap
    // structural checks.
    unsigned outside = 0;
    std::size_t dots = 0;
    for (char c : token) {
        const auto byte = static_cast<unsigned char>(c);
        const unsigned letter = static_cast<unsigned char>((byte | 0x20) - 'a') < 26;
        const unsigned digit = static_cast<unsigned char>(byte - '0') < 10;
        const unsigned dot = byte == '.';
        outside |= (letter | digit | dot | (byte == '-') | (byte == '_')) ^ 1u;
        dots += dot;
    }
    return outside == 0 && dots == 2 && token.front() != '.' && token.back() != '.' &&
           token.find("..") == std::string_view::npos;
}

bool has_two_dots(std::string_view token) noexcept {
    const char* p = token.data();
    const char* end = p + token.size();
    for (int dots = 0; dots < 2; ++dots) {
        p = static_cast<const char*>(std::memchr(p, '.', static_cast<std::size_t>(end - p)));
        if (p == nullptr) return false;
        ++p;
    }
    return std::memchr(p, '.', static_cast<std::size_t>(end - p)) == nullptr;
}

bool base64url_decode(std::string_view in, std::string& out) {
    std::string translated;
    return decode_into(in, translated, out, 0) != std::string::npos;
}

JwtError verify_session_token(std::string_view token, const JwtKeys& keys,
                              std::string_view role_claim, std::string& flat) {
    Workspace& work = workspace();
    Payload payload;
    if (const JwtError error = verify_signed(token, keys, work, payload); error != JwtError::none) {
        return error;
    }
    index_payload(payload);

    SessionClaims claims;
    if (!get_string(payload.sub, claims.sub) || claims.sub.empty() ||
        has_control_character(claims.sub) || !get_string(payload.sid, claims.sid) ||
        claims.sid.empty() || has_control_character(claims.sid)) {
        return JwtError::subject;
    }
    if (!payload.exp || !read_time(*payload.exp, claims.exp)) return JwtError::malformed;
    claims.has_nbf = payload.nbf.has_value();
    if (claims.has_nbf && !read_time(*payload.nbf, claims.nbf)) return JwtError::malformed;
    claims.has_iat = payload.iat.has_value();
    if (claims.has_iat && !read_time(*payload.iat, claims.iat)) return JwtError::malformed;
    claims.iss = header_safe_string(payload.iss);
    claims.azp = header_safe_string(payload.azp);
    claims.sts = header_safe_string(payload.sts);

    ClaimsScratch& scratch = work.claims;
    scratch.clear();
    read_role(payload.root, role_claim, scratch, claims.role, claims.roles);
    const OrgClaims org = read_org(payload.org, scratch);
    claims.org_id = org.id;
    claims.org_slug = org.slug;
    claims.org_role = org.role;
    claims.org_permissions = org.permissions;
    collect_scalars(payload.root, scratch.scalars);
    claims.scalars = scratch.scalars;

    encode_claims(claims, flat);
    return JwtError::none;
}

JwtError check_claims(const SessionClaims& claims, const ClaimPolicy& policy,
                      std::int64_t now_s) noexcept {
    if (claims.iss != policy.issuer) return JwtError::issuer;
    if (policy.authorized_party_count > 0) {
        bool allowed = false;
        for (std::size_t i = 0; i < policy.authorized_party_count && !allowed; ++i) {
            allowed = !claims.azp.empty() && claims.azp == policy.authorized_parties[i];
        }
        if (!allowed) return JwtError::authorized_party;
    }
    const std::int64_t leeway = clamp_leeway(policy.leeway_s);
    // The SDK: expired when exp <= now - skew (milliseconds); with whole
    // seconds of `now` that is now >= exp + leeway.
    if (now_s >= claims.exp + leeway) return JwtError::expired;
    if (claims.has_nbf && now_s < claims.nbf - leeway) return JwtError::not_yet_valid;
    if (claims.has_iat && now_s < claims.iat - leeway) return JwtError::issued_in_future;
    if (claims.sts == "pending") return JwtError::pending;
    return JwtError::none;
}

JwtError verify_handshake_token(std::string_view token, const JwtKeys& keys, std::int64_t now_s,
                                std::int64_t leeway_s, std::vector<std::string>& directives) {
    Workspace& work = workspace();
    Payload payload;
    if (const JwtError error = verify_signed(token, keys, work, payload); error != JwtError::none) {
        return error;
    }
    index_payload(payload);
    if (payload.exp) {
        std::int64_t exp = 0;
        if (!read_time(*payload.exp, exp)) return JwtError::malformed;
        if (now_s >= exp + clamp_leeway(leeway_s)) return JwtError::expired;
    }
    array list;
    if (!payload.handshake || payload.handshake->get(list) != simdjson::SUCCESS) {
        return JwtError::malformed;
    }
    std::vector<std::string> result;
    for (element item : list) {
        std::string_view text;
        if (item.get(text) != simdjson::SUCCESS) return JwtError::malformed;
        result.emplace_back(text);
    }
    directives = std::move(result);
    return JwtError::none;
}

}  // namespace session::core
