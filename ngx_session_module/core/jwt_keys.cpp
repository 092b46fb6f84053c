// JwtKeys: the RSA public keys of one `session_jwt_keys` directive, built
// once at configuration load so that no request ever builds a key.
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <simdjson.h>

#include <climits>
#include <cstring>
#include <memory>

#include "core/jwt.hpp"

namespace session::core {
namespace {

constexpr int kMinRsaBits = 2048;

struct PkeyFree {
    void operator()(EVP_PKEY* p) const noexcept { EVP_PKEY_free(p); }
};
struct PkeyCtxFree {
    void operator()(EVP_PKEY_CTX* p) const noexcept { EVP_PKEY_CTX_free(p); }
};
struct BignumFree {
    void operator()(BIGNUM* p) const noexcept { BN_free(p); }
};
struct ParamBuildFree {
    void operator()(OSSL_PARAM_BLD* p) const noexcept { OSSL_PARAM_BLD_free(p); }
};
struct ParamFree {
    void operator()(OSSL_PARAM* p) const noexcept { OSSL_PARAM_free(p); }
};
struct BioFree {
    void operator()(BIO* p) const noexcept { BIO_free(p); }
};
struct MdCtxFree {
    void operator()(EVP_MD_CTX* p) const noexcept { EVP_MD_CTX_free(p); }
};
struct OpenSslFree {
    void operator()(void* p) const noexcept { OPENSSL_free(p); }
};

using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree>;
using BignumPtr = std::unique_ptr<BIGNUM, BignumFree>;
using ParamBuildPtr = std::unique_ptr<OSSL_PARAM_BLD, ParamBuildFree>;
using ParamPtr = std::unique_ptr<OSSL_PARAM, ParamFree>;
using BioPtr = std::unique_ptr<BIO, BioFree>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;
template <typename T>
using OpenSslPtr = std::unique_ptr<T, OpenSslFree>;

bool is_rs_algorithm(std::string_view alg) noexcept {
    return alg == "RS256" || alg == "RS384" || alg == "RS512";
}

// A kid goes into an nginx error message: only when it is short and
// printable, so that a hostile file cannot forge log lines.
bool is_printable_label(std::string_view text) noexcept {
    if (text.empty() || text.size() > 64) return false;
    for (unsigned char c : text) {
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') return false;
    }
    return true;
}

std::string jwk_label(std::string_view kid, std::size_t index) {
    if (is_printable_label(kid)) return "JWK \"" + std::string(kid) + "\"";
    return "JWK #" + std::to_string(index + 1);
}

// Refuses what OpenSSL would accept but a verifier must not: keys too small
// to resist factoring, and keys that are not well-formed RSA public keys.
bool check_rsa_key(EVP_PKEY* pkey, const std::string& label, std::string& error) {
    const int bits = EVP_PKEY_get_bits(pkey);
    if (bits < kMinRsaBits) {
        error = label + ": RSA key of " + std::to_string(bits) + " bits, at least " +
                std::to_string(kMinRsaBits) + " required";
        return false;
    }
    PkeyCtxPtr check(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey, nullptr));
    if (!check || EVP_PKEY_public_check(check.get()) != 1) {
        ERR_clear_error();
        error = label + ": not a valid RSA public key";
        return false;
    }
    return true;
}

// `n` or `e` of a JWK as a BIGNUM; null when not base64url or empty.
BignumPtr decode_bignum(std::string_view encoded) {
    std::string bytes;
    if (!base64url_decode(encoded, bytes) || bytes.empty()) return nullptr;
    return BignumPtr(BN_bin2bn(reinterpret_cast<const unsigned char*>(bytes.data()),
                               static_cast<int>(bytes.size()), nullptr));
}

PkeyPtr rsa_key_from_components(const BIGNUM* n, const BIGNUM* e) {
    ParamBuildPtr build(OSSL_PARAM_BLD_new());
    if (!build || OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_N, n) != 1 ||
        OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_E, e) != 1) {
        return nullptr;
    }
    ParamPtr params(OSSL_PARAM_BLD_to_param(build.get()));
    PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr));
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1) return nullptr;
    EVP_PKEY* raw = nullptr;
    if (EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) return nullptr;
    return PkeyPtr(raw);
}

// A string member of a JWK: absent is fine (`present` false); any other
// type is an error.
bool jwk_string(simdjson::dom::object jwk, std::string_view name, std::string_view& value,
                bool& present) {
    simdjson::dom::element member;
    if (jwk.at_key(name).get(member) != simdjson::SUCCESS) {
        present = false;
        return true;
    }
    present = true;
    return member.get(value) == simdjson::SUCCESS;
}

enum class JwkOutcome { added, skipped, failed };

JwkOutcome add_jwk(simdjson::dom::element value, std::size_t index, std::vector<JwtKeys::Key>& out,
                   std::string& error) {
    simdjson::dom::object jwk;
    if (value.get(jwk) != simdjson::SUCCESS) {
        error = "JWK #" + std::to_string(index + 1) + " is not an object";
        return JwkOutcome::failed;
    }
    std::string_view kid, kty, use, alg, n, e;
    bool has_kid = false, has_kty = false, has_use = false, has_alg = false, has_n = false,
         has_e = false;
    // The kid first: every later message names the key by it.
    if (!jwk_string(jwk, "kid", kid, has_kid)) {
        error = "JWK #" + std::to_string(index + 1) + ": \"kid\" is not a string";
        return JwkOutcome::failed;
    }
    const std::string label = jwk_label(kid, index);
    if (!jwk_string(jwk, "kty", kty, has_kty) || !has_kty) {
        error = label + ": \"kty\" is missing or not a string";
        return JwkOutcome::failed;
    }
    if (!jwk_string(jwk, "use", use, has_use) || !jwk_string(jwk, "alg", alg, has_alg)) {
        error = label + ": \"use\" or \"alg\" is not a string";
        return JwkOutcome::failed;
    }
    // Keys for other purposes may share a JWKS with the signing keys.
    if (kty != "RSA" || (has_use && use != "sig") || (has_alg && !is_rs_algorithm(alg))) {
        return JwkOutcome::skipped;
    }
    if (!jwk_string(jwk, "n", n, has_n) || !has_n) {
        error = label + ": \"n\" is missing or not a string";
        return JwkOutcome::failed;
    }
    if (!jwk_string(jwk, "e", e, has_e) || !has_e) {
        error = label + ": \"e\" is missing or not a string";
        return JwkOutcome::failed;
    }
    const BignumPtr modulus = decode_bignum(n);
    if (!modulus) {
        error = label + ": \"n\" is not base64url";
        return JwkOutcome::failed;
    }
    const BignumPtr exponent = decode_bignum(e);
    if (!exponent) {
        error = label + ": \"e\" is not base64url";
        return JwkOutcome::failed;
    }
    PkeyPtr pkey = rsa_key_from_components(modulus.get(), exponent.get());
    if (!pkey) {
        ERR_clear_error();
        error = label + ": not a valid RSA public key";
        return JwkOutcome::failed;
    }
    if (!check_rsa_key(pkey.get(), label, error)) return JwkOutcome::failed;
    for (const auto& existing : out) {
        if (!kid.empty() && existing.kid == kid) {
            error = label + ": duplicate kid";
            return JwkOutcome::failed;
        }
    }
    out.push_back(JwtKeys::Key{std::string(kid), has_alg ? std::string(alg) : std::string(),
                               std::shared_ptr<EVP_PKEY>(pkey.release(), EVP_PKEY_free)});
    return JwkOutcome::added;
}

bool add_json(std::string_view content, std::vector<JwtKeys::Key>& out, std::string& error) {
    simdjson::dom::parser parser;
    const simdjson::padded_string padded(content);
    simdjson::dom::element root;
    if (const auto code = parser.parse(padded).get(root); code != simdjson::SUCCESS) {
        error = std::string("invalid JSON: ") + simdjson::error_message(code);
        return false;
    }
    simdjson::dom::object object;
    if (root.get(object) != simdjson::SUCCESS) {
        error = "JSON is not an object (a JWKS or a JWK)";
        return false;
    }
    simdjson::dom::element keys_member;
    if (object.at_key("keys").get(keys_member) != simdjson::SUCCESS) {
        // A single JWK.
        switch (add_jwk(root, 0, out, error)) {
            case JwkOutcome::added:
                return true;
            case JwkOutcome::failed:
                return false;
            case JwkOutcome::skipped:
                break;
        }
    } else {
        simdjson::dom::array keys;
        if (keys_member.get(keys) != simdjson::SUCCESS) {
            error = "JWKS \"keys\" is not an array";
            return false;
        }
        std::size_t index = 0;
        for (simdjson::dom::element key : keys) {
            if (add_jwk(key, index++, out, error) == JwkOutcome::failed) return false;
        }
    }
    if (out.empty()) {
        error = "no usable key: no RSA signing key (kty \"RSA\", use \"sig\", alg RS256/384/512)";
        return false;
    }
    return true;
}

bool add_pem(std::string_view content, std::vector<JwtKeys::Key>& out, std::string& error) {
    BioPtr bio(BIO_new_mem_buf(content.data(), static_cast<int>(content.size())));
    if (!bio) {
        error = "out of memory";
        return false;
    }
    std::size_t block = 0;
    for (;;) {
        char* raw_name = nullptr;
        char* raw_header = nullptr;
        unsigned char* raw_data = nullptr;
        long length = 0;
        const int read = PEM_read_bio(bio.get(), &raw_name, &raw_header, &raw_data, &length);
        OpenSslPtr<char> name(raw_name);
        OpenSslPtr<char> header(raw_header);
        OpenSslPtr<unsigned char> data(raw_data);
        if (read != 1) {
            const unsigned long reason = ERR_GET_REASON(ERR_peek_last_error());
            ERR_clear_error();
            // No further BEGIN line: the end of the file, not an error.
            if (reason == PEM_R_NO_START_LINE && block > 0) break;
            error = "PEM block " + std::to_string(block + 1) + " is malformed";
            return false;
        }
        ++block;
        const std::string label = "PEM block " + std::to_string(block);
        if (std::strcmp(name.get(), PEM_STRING_PUBLIC) != 0) {
            error = label + " is not \"" PEM_STRING_PUBLIC "\" (SubjectPublicKeyInfo)";
            return false;
        }
        const unsigned char* cursor = data.get();
        PkeyPtr pkey(d2i_PUBKEY(nullptr, &cursor, length));
        if (!pkey || cursor != data.get() + length) {
            ERR_clear_error();
            error = label + " is not a valid public key";
            return false;
        }
        // Another key type (EC...) is skipped, as in a JWKS.
        if (!EVP_PKEY_is_a(pkey.get(), "RSA")) continue;
        if (!check_rsa_key(pkey.get(), label, error)) return false;
        out.push_back(JwtKeys::Key{std::string(), std::string(),
                                   std::shared_ptr<EVP_PKEY>(pkey.release(), EVP_PKEY_free)});
    }
    if (out.empty()) {
        error = "no usable key: no RSA public key in the PEM blocks";
        return false;
    }
    return true;
}

std::string_view trim_blank(std::string_view text) noexcept {
    const auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
    while (!text.empty() && blank(text.front())) text.remove_prefix(1);
    while (!text.empty() && blank(text.back())) text.remove_suffix(1);
    return text;
}

}  // namespace

bool JwtKeys::add(std::string_view content, std::string& error) {
    // Built aside and appended only when the whole content is good: a
    // refused file leaves the set as it was.
    std::vector<Key> added;
    const std::string_view trimmed = trim_blank(content);
    bool ok = false;
    if (trimmed.size() > static_cast<std::size_t>(INT_MAX)) {
        error = "key file too large";
    } else if (!trimmed.empty() && trimmed.front() == '{') {
        ok = add_json(trimmed, added, error);
    } else if (trimmed.find("-----BEGIN ") != std::string_view::npos) {
        ok = add_pem(trimmed, added, error);
    } else {
        error = "neither a JWKS, a JWK nor PEM public keys";
    }
    if (!ok) return false;
    for (auto& key : added) {
        for (const auto& existing : keys_) {
            if (!key.kid.empty() && existing.kid == key.kid) {
                error = jwk_label(key.kid, 0) + ": duplicate kid";
                return false;
            }
        }
    }
    for (auto& key : added) keys_.push_back(std::move(key));
    return true;
}

void JwtKeys::merge(const JwtKeys& other) {
    const std::size_t own = keys_.size();
    for (const auto& key : other.keys_) {
        bool shadowed = false;
        for (std::size_t i = 0; i < own && !key.kid.empty(); ++i) {
            shadowed = shadowed || keys_[i].kid == key.kid;
        }
        if (!shadowed) keys_.push_back(key);
    }
}

std::array<unsigned char, 32> JwtKeys::fingerprint() const {
    std::array<unsigned char, 32> digest{};
    MdCtxPtr ctx(EVP_MD_CTX_new());
    if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) return digest;
    for (const auto& key : keys_) {
        unsigned char* raw = nullptr;
        const int length = i2d_PUBKEY(key.pkey.get(), &raw);
        OpenSslPtr<unsigned char> der(raw);
        if (length <= 0) continue;
        EVP_DigestUpdate(ctx.get(), der.get(), static_cast<std::size_t>(length));
    }
    unsigned int size = 0;
    EVP_DigestFinal_ex(ctx.get(), digest.data(), &size);
    return digest;
}

}  // namespace session::core
