#include "core/signature.hpp"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <array>
#include <memory>
#include <stdexcept>

#include "core/config.hpp"

namespace syncd {
namespace {

struct MacDeleter {
    void operator()(EVP_MAC* m) const noexcept { EVP_MAC_free(m); }
};
struct MacCtxDeleter {
    void operator()(EVP_MAC_CTX* c) const noexcept { EVP_MAC_CTX_free(c); }
};
using MacPtr = std::unique_ptr<EVP_MAC, MacDeleter>;
using MacCtxPtr = std::unique_ptr<EVP_MAC_CTX, MacCtxDeleter>;

using Digest = std::array<unsigned char, 32>;

const EVP_MAC* hmac_algorithm() {
    // Fetched once; OpenSSL's fetch is thread-safe and the object immutable.
    static const MacPtr mac(EVP_MAC_fetch(nullptr, "HMAC", nullptr));
    if (!mac) throw std::runtime_error("OpenSSL has no HMAC");
    return mac.get();
}

Digest hmac_sha256(const std::string& key, std::string_view id, std::string_view timestamp,
                   std::string_view body) {
    MacCtxPtr ctx(EVP_MAC_CTX_new(const_cast<EVP_MAC*>(hmac_algorithm())));
    if (!ctx) throw std::runtime_error("EVP_MAC_CTX_new failed");
    char digest_name[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
        OSSL_PARAM_construct_end(),
    };
    const auto* k = reinterpret_cast<const unsigned char*>(key.data());
    auto update = [&](std::string_view part) {
        return EVP_MAC_update(ctx.get(), reinterpret_cast<const unsigned char*>(part.data()),
                              part.size()) == 1;
    };
    Digest out{};
    size_t len = 0;
    if (EVP_MAC_init(ctx.get(), k, key.size(), params) != 1 || !update(id) || !update(".") ||
        !update(timestamp) || !update(".") || !update(body) ||
        EVP_MAC_final(ctx.get(), out.data(), &len, out.size()) != 1 || len != out.size()) {
        throw std::runtime_error("HMAC-SHA256 failed");
    }
    return out;
}

bool is_base64_char(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

}  // namespace

std::optional<std::string> base64_decode(std::string_view in) {
    if (in.empty() || in.size() % 4 != 0) return std::nullopt;
    std::size_t pad = 0;
    if (in.back() == '=') pad = in[in.size() - 2] == '=' ? 2 : 1;
    for (std::size_t i = 0; i < in.size() - pad; ++i) {
        if (!is_base64_char(in[i])) return std::nullopt;
    }
    std::string out(in.size() / 4 * 3, '\0');
    int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                            reinterpret_cast<const unsigned char*>(in.data()),
                            static_cast<int>(in.size()));
    if (n < 0 || static_cast<std::size_t>(n) != out.size()) return std::nullopt;
    out.resize(out.size() - pad);
    return out;
}

std::string base64_encode(std::string_view in) {
    std::string out((in.size() + 2) / 3 * 4 + 1, '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                            reinterpret_cast<const unsigned char*>(in.data()),
                            static_cast<int>(in.size()));
    out.resize(n < 0 ? 0 : static_cast<std::size_t>(n));
    return out;
}

SecretKeys parse_secrets(const std::string& key, std::string_view list) {
    SecretKeys keys;
    std::size_t pos = 0;
    int index = 0;
    while (pos < list.size()) {
        auto start = list.find_first_not_of(" \t\r\n", pos);
        if (start == std::string_view::npos) break;
        auto end = list.find_first_of(" \t\r\n", start);
        std::string_view entry =
            list.substr(start, end == std::string_view::npos ? end : end - start);
        pos = end == std::string_view::npos ? list.size() : end;
        ++index;
        if (entry.rfind("whsec_", 0) == 0) entry.remove_prefix(6);
        if (entry.empty()) {
            throw ConfigError(key + ": secret " + std::to_string(index) + " is empty");
        }
        auto decoded = base64_decode(entry);
        if (!decoded || decoded->empty()) {
            throw ConfigError(key + ": secret " + std::to_string(index) +
                              " is not whsec_ followed by standard base64");
        }
        keys.push_back(std::move(*decoded));
    }
    if (keys.empty()) throw ConfigError(key + ": no secret given");
    return keys;
}

const char* verdict_name(Verdict v) noexcept {
    switch (v) {
        case Verdict::ok:
            return "ok";
        case Verdict::missing_header:
            return "missing_header";
        case Verdict::bad_timestamp:
            return "bad_timestamp";
        case Verdict::too_old:
            return "too_old";
        case Verdict::too_new:
            return "too_new";
        case Verdict::bad_signature:
            return "bad_signature";
    }
    return "unknown";
}

Verdict verify_signature(const SecretKeys& keys, const WebhookHeaders& headers,
                         std::string_view body, std::int64_t now) {
    if (!headers.id || !headers.timestamp || !headers.signature || headers.id->empty()) {
        return Verdict::missing_header;
    }
    std::string_view ts = *headers.timestamp;
    if (ts.empty() || ts.size() > 15) return Verdict::bad_timestamp;
    std::int64_t sent = 0;
    for (char c : ts) {
        if (c < '0' || c > '9') return Verdict::bad_timestamp;
        sent = sent * 10 + (c - '0');
    }
    if (now - sent > kTimestampToleranceSeconds) return Verdict::too_old;
    if (sent - now > kTimestampToleranceSeconds) return Verdict::too_new;

    std::vector<Digest> expected;
    expected.reserve(keys.size());
    for (const auto& key : keys) expected.push_back(hmac_sha256(key, *headers.id, ts, body));

    bool match = false;
    std::string_view list = *headers.signature;
    std::size_t pos = 0;
    while (pos <= list.size()) {
        auto space = list.find(' ', pos);
        std::string_view entry =
            list.substr(pos, space == std::string_view::npos ? space : space - pos);
        pos = space == std::string_view::npos ? list.size() + 1 : space + 1;
        auto comma = entry.find(',');
        if (comma == std::string_view::npos || entry.substr(0, comma) != "v1") continue;
        auto given = base64_decode(entry.substr(comma + 1));
        if (!given || given->size() != sizeof(Digest)) continue;
        for (const auto& digest : expected) {
            // No early exit: every entry is compared against every key.
            match |= CRYPTO_memcmp(given->data(), digest.data(), digest.size()) == 0;
        }
    }
    return match ? Verdict::ok : Verdict::bad_signature;
}

std::string sign_payload(const std::string& key, std::string_view id, std::string_view timestamp,
                         std::string_view body) {
    Digest d = hmac_sha256(key, id, timestamp, body);
    return "v1," +
           base64_encode(std::string_view(reinterpret_cast<const char*>(d.data()), d.size()));
}

}  // namespace syncd
