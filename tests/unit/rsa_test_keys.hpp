// RSA test keys in the forms a `session_jwt_keys` file holds (JWK, PEM) and
// tokens signed with them: shared by the JWT unit tests and the JWT fuzzer.
// No gtest here (the fuzzer does not link it): a failing OpenSSL call throws,
// which gtest reports as a failed test and the fuzzer as a crash.
#pragma once

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

namespace session::test_keys {

inline void require_openssl(bool condition, const char* what) {
    if (!condition) throw std::runtime_error(std::string("OpenSSL failed: ") + what);
}

// base64url without padding (RFC 7515 section 2).
inline std::string base64url(std::string_view bytes) {
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

// One big-number parameter of `pkey` (OSSL_PKEY_PARAM_RSA_N...), big-endian.
inline std::string bn_param(EVP_PKEY* pkey, const char* name) {
    BIGNUM* bn = nullptr;
    require_openssl(EVP_PKEY_get_bn_param(pkey, name, &bn) == 1, "EVP_PKEY_get_bn_param");
    std::string bytes(static_cast<std::size_t>(BN_num_bytes(bn)), '\0');
    BN_bn2bin(bn, reinterpret_cast<unsigned char*>(bytes.data()));
    BN_free(bn);
    return bytes;
}

// The public half of `pkey` as a signing JWK; `extra` is spliced in after
// "use" (e.g. ,"alg":"RS256").
inline std::string rsa_jwk(EVP_PKEY* pkey, const std::string& kid, const std::string& extra = "") {
    return "{\"kty\":\"RSA\",\"kid\":\"" + kid + "\",\"use\":\"sig\"" + extra + ",\"n\":\"" +
           base64url(bn_param(pkey, OSSL_PKEY_PARAM_RSA_N)) + "\",\"e\":\"" +
           base64url(bn_param(pkey, OSSL_PKEY_PARAM_RSA_E)) + "\"}";
}

// The public half of `pkey` as a PEM SubjectPublicKeyInfo block.
inline std::string pem(EVP_PKEY* pkey) {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
    require_openssl(bio && PEM_write_bio_PUBKEY(bio.get(), pkey) == 1, "PEM_write_bio_PUBKEY");
    char* data = nullptr;
    const long length = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(length));
}

// The raw signature of `input` (RSA PKCS#1 v1.5 for an RSA key).
inline std::string sign(EVP_PKEY* pkey, std::string_view input, const EVP_MD* md) {
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    require_openssl(ctx && EVP_DigestSignInit(ctx.get(), nullptr, md, nullptr, pkey) == 1,
                    "EVP_DigestSignInit");
    std::size_t length = 0;
    require_openssl(
        EVP_DigestSign(ctx.get(), nullptr, &length,
                       reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1,
        "EVP_DigestSign");
    std::string signature(length, '\0');
    require_openssl(
        EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &length,
                       reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1,
        "EVP_DigestSign");
    signature.resize(length);
    return signature;
}

// A compact JWS of `header` and `payload` (JSON text, encoded here).
inline std::string make_token(EVP_PKEY* pkey, std::string_view header, std::string_view payload,
                              const EVP_MD* md = EVP_sha256()) {
    const std::string input = base64url(header) + "." + base64url(payload);
    return input + "." + base64url(sign(pkey, input, md));
}

}  // namespace session::test_keys
