// Session and handshake token verification (see jwt.hpp), and the flat form
// of a verified token's claims that the cache and the request pool hold.
//
// Runs per request when the cache is off, so the hot path allocates nothing
// in the steady state: the JSON parsers, the decode buffers and the digest
// context live per thread (nginx workers have one) and are reused.
#include "core/jwt.hpp"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <simdjson.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>

namespace session::core {
namespace {

using simdjson::dom::array;
using simdjson::dom::element;
using simdjson::dom::element_type;
using simdjson::dom::object;

// 9999-12-31T23:59:59Z: a time claim beyond it is not a time. Keeps
// exp + leeway far from overflow.
constexpr std::int64_t kMaxTimestamp = 253402300799;

// Base64url text that decodes to at most kMaxJwtPartLength bytes.
constexpr std::size_t kMaxEncodedPartLength = (kMaxJwtPartLength * 4 + 2) / 3;

// org_permissions can expand (a few bytes of `fpm` name many permissions):
// words past this many bytes are left out (fewer permissions, never more).
constexpr std::size_t kMaxPermissionsLength = 4 * kMaxJwtPartLength;

// The flat claims: "JWC1", a flags byte, exp, nbf, iat (8 bytes each,
// little-endian two's complement), then kFlatStringCount strings as a 4-byte
// little-endian length and the bytes. Nothing may follow.
constexpr char kFlatMagic[4] = {'J', 'W', 'C', '1'};
constexpr unsigned char kFlagHasNbf = 1;
constexpr unsigned char kFlagHasIat = 2;
constexpr std::size_t kFlatFixedLength = sizeof(kFlatMagic) + 1 + 3 * 8;
constexpr std::size_t kFlatStringCount = 12;

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
    std::string scalars;
    std::string roles;
    std::string org_role;
    std::string org_permissions;
    std::string binary;  // scratch for the fpm bit strings
    // Two parsers: the header's fields stay valid while the payload is read.
    simdjson::dom::parser header_parser;
    simdjson::dom::parser payload_parser;
    std::unique_ptr<EVP_MD_CTX, MdCtxFree> md_ctx;
    std::array<Verifier, kVerifierSlots> verifiers;
    std::size_t next_verifier = 0;  // round-robin replacement
    std::vector<std::string_view> permission_names;
    std::string permission;

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

// Eight bytes at a time (every cached verdict is checked again when read):
// a byte below 0x20, or one equal to 0x7f, sets its high bit in `found`.
// For the bytes that matter the borrow trick is exact: a set high bit marks
// the first such byte, and any is enough.
bool has_control_character(std::string_view text) noexcept {
    constexpr std::uint64_t kOnes = 0x0101010101010101ull;
    constexpr std::uint64_t kHighs = 0x8080808080808080ull;
    std::size_t i = 0;
    for (; i + 8 <= text.size(); i += 8) {
        std::uint64_t word;
        std::memcpy(&word, text.data() + i, sizeof(word));
        const std::uint64_t below_space = (word - 0x20 * kOnes) & ~word & kHighs;
        const std::uint64_t del = word ^ (0x7f * kOnes);
        const std::uint64_t is_del = (del - kOnes) & ~del & kHighs;
        if ((below_space | is_del) != 0) return true;
    }
    for (; i < text.size(); ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c < 0x20 || c == 0x7f) return true;
    }
    return false;
}

// A word of a space-separated list: non-empty, no space, no control.
bool is_list_word(std::string_view text) noexcept {
    return !text.empty() && text.find(' ') == std::string_view::npos &&
           !has_control_character(text);
}

void append_word(std::string& list, std::string_view word, std::size_t limit) {
    if (!is_list_word(word)) return;
    if (list.size() + 1 + word.size() > limit) return;
    if (!list.empty()) list.push_back(' ');
    list.append(word);
}

bool is_claim_name(std::string_view name) noexcept {
    if (name.empty() || name.size() > 255) return false;
    for (unsigned char c : name) {
        const bool ok =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
        if (!ok) return false;
    }
    return true;
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

// Every member name of `obj` differs from the others. JSON.parse keeps the
// last duplicate, simdjson finds the first: refusing them (RFC 7515 5.2
// allows it) means no claim can mean two things.
bool has_unique_names(object obj) noexcept {
    std::string_view seen[64];
    std::size_t count = 0;
    for (auto field : obj) {
        if (count == 64) {
            // Rare (tokens carry a dozen claims): compare with every other.
            std::size_t occurrences = 0;
            for (auto other : obj) occurrences += other.key == field.key;
            if (occurrences > 1) return false;
            continue;
        }
        for (std::size_t i = 0; i < count; ++i) {
            if (seen[i] == field.key) return false;
        }
        seen[count++] = field.key;
    }
    return true;
}

enum class Member { absent, found, duplicate };

Member find_member(object obj, std::string_view name, element& out) noexcept {
    Member result = Member::absent;
    for (auto field : obj) {
        if (field.key != name) continue;
        if (result == Member::found) return Member::duplicate;
        out = field.value;
        result = Member::found;
    }
    return result;
}

bool get_string(const std::optional<element>& value, std::string_view& out) noexcept {
    return value && value->get(out) == simdjson::SUCCESS;
}

// A string claim that may reach a header: empty unless a string free of
// control characters.
std::string_view header_safe_string(const std::optional<element>& value) noexcept {
    std::string_view text;
    if (!get_string(value, text) || has_control_character(text)) return {};
    return text;
}

// exp / nbf / iat: a number of seconds; a fraction is dropped (floor).
bool read_time(element value, std::int64_t& out) noexcept {
    switch (value.type()) {
        case element_type::INT64: {
            std::int64_t seconds = 0;
            if (value.get(seconds) != simdjson::SUCCESS) return false;
            out = seconds;
            break;
        }
        case element_type::DOUBLE: {
            double seconds = 0;
            if (value.get(seconds) != simdjson::SUCCESS || !std::isfinite(seconds)) return false;
            seconds = std::floor(seconds);
            if (seconds < 0 || seconds > static_cast<double>(kMaxTimestamp)) return false;
            out = static_cast<std::int64_t>(seconds);
            break;
        }
        default:  // UINT64 is above INT64_MAX: absurd as well
            return false;
    }
    return out >= 0 && out <= kMaxTimestamp;
}

// A JSON number as text: integers in decimal, other numbers in the
// shortest form that reads back as the same double (1.5, 1e+21).
std::string_view format_number(element value, char (&buffer)[32]) noexcept {
    std::to_chars_result result{buffer, std::errc()};
    switch (value.type()) {
        case element_type::INT64: {
            std::int64_t number = 0;
            if (value.get(number) != simdjson::SUCCESS) return {};
            result = std::to_chars(buffer, buffer + sizeof(buffer), number);
            break;
        }
        case element_type::UINT64: {
            std::uint64_t number = 0;
            if (value.get(number) != simdjson::SUCCESS) return {};
            result = std::to_chars(buffer, buffer + sizeof(buffer), number);
            break;
        }
        default: {
            double number = 0;
            if (value.get(number) != simdjson::SUCCESS) return {};
            result = std::to_chars(buffer, buffer + sizeof(buffer), number);
            break;
        }
    }
    if (result.ec != std::errc()) return {};
    return std::string_view(buffer, static_cast<std::size_t>(result.ptr - buffer));
}

void put_u32(std::string& out, std::uint32_t value) {
    const char bytes[4] = {static_cast<char>(value), static_cast<char>(value >> 8),
                           static_cast<char>(value >> 16), static_cast<char>(value >> 24)};
    out.append(bytes, 4);
}

void put_i64(std::string& out, std::int64_t signed_value) {
    const auto value = static_cast<std::uint64_t>(signed_value);
    char bytes[8];
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(value >> (8 * i));
    out.append(bytes, 8);
}

std::uint32_t get_u32(const unsigned char* in) noexcept {
    return static_cast<std::uint32_t>(in[0]) | (static_cast<std::uint32_t>(in[1]) << 8) |
           (static_cast<std::uint32_t>(in[2]) << 16) | (static_cast<std::uint32_t>(in[3]) << 24);
}

std::int64_t get_i64(const unsigned char* in) noexcept {
    std::uint64_t value = 0;
    for (int i = 7; i >= 0; --i) value = (value << 8) | in[i];
    return static_cast<std::int64_t>(value);
}

void put_string(std::string& out, std::string_view text) {
    put_u32(out, static_cast<std::uint32_t>(text.size()));
    out.append(text);
}

// Scalars blob entry: 1-byte name length, name, 4-byte value length, value.
void put_scalar(std::string& out, std::string_view name, std::string_view value) {
    out.push_back(static_cast<char>(name.size()));
    out.append(name);
    put_string(out, value);
}

void collect_scalar(std::string& out, std::string_view name, element value) {
    if (!is_claim_name(name)) return;
    switch (value.type()) {
        case element_type::STRING: {
            std::string_view text;
            if (value.get(text) == simdjson::SUCCESS && !has_control_character(text)) {
                put_scalar(out, name, text);
            }
            break;
        }
        case element_type::INT64:
        case element_type::UINT64:
        case element_type::DOUBLE: {
            char buffer[32];
            const std::string_view text = format_number(value, buffer);
            if (!text.empty()) put_scalar(out, name, text);
            break;
        }
        case element_type::BOOL: {
            bool flag = false;
            if (value.get(flag) != simdjson::SUCCESS) break;
            put_scalar(out, name, flag ? "true" : "false");
            break;
        }
        default:
            break;  // objects, arrays, null
    }
}

// ---- Clerk's organization claims (packages/shared/src/jwtPayloadParser.ts
// and splitByScope in authorization.ts), reproduced with their JavaScript
// semantics: String.prototype.trim, Number.parseInt, Number#toString(2),
// padStart, and `${undefined}` for a missing piece.

// The bytes of the UTF-8 whitespace JavaScript's trim() removes.
std::size_t js_space_prefix(std::string_view text) noexcept {
    if (text.empty()) return 0;
    const auto c = static_cast<unsigned char>(text[0]);
    if (c == ' ' || (c >= '\t' && c <= '\r')) return 1;
    const auto starts = [&](std::string_view sequence) {
        return text.substr(0, sequence.size()) == sequence;
    };
    if (starts("\xC2\xA0")) return 2;                                // U+00A0
    if (starts("\xEF\xBB\xBF") || starts("\xE1\x9A\x80")) return 3;  // U+FEFF, U+1680
    if (starts("\xE2\x80\xA8") || starts("\xE2\x80\xA9")) return 3;  // U+2028/9
    if (starts("\xE2\x80\xAF") || starts("\xE2\x81\x9F")) return 3;  // U+202F, U+205F
    if (starts("\xE3\x80\x80")) return 3;                            // U+3000
    if (text.size() >= 3 && c == 0xE2 && static_cast<unsigned char>(text[1]) == 0x80 &&
        static_cast<unsigned char>(text[2]) >= 0x80 &&
        static_cast<unsigned char>(text[2]) <= 0x8A) {
        return 3;  // U+2000..U+200A
    }
    return 0;
}

std::size_t js_space_suffix(std::string_view text) noexcept {
    for (std::size_t length = 1; length <= 3 && length <= text.size(); ++length) {
        const std::string_view tail = text.substr(text.size() - length);
        if (js_space_prefix(tail) == length) return length;
    }
    return 0;
}

std::string_view js_trim(std::string_view text) noexcept {
    while (const std::size_t n = js_space_prefix(text)) text.remove_prefix(n);
    while (const std::size_t n = js_space_suffix(text)) text.remove_suffix(n);
    return text;
}

// JavaScript's split(separator)[index], or nullopt for undefined.
std::optional<std::string_view> js_split_at(std::string_view text, char separator,
                                            std::size_t index) noexcept {
    for (std::size_t i = 0; i < index; ++i) {
        const std::size_t at = text.find(separator);
        if (at == std::string_view::npos) return std::nullopt;
        text.remove_prefix(at + 1);
    }
    return text.substr(0, text.find(separator));
}

// Number.parseInt(text, 10): NaN when no digit follows the optional sign.
double js_parse_int(std::string_view text) {
    text = js_trim(text);
    bool negative = false;
    if (!text.empty() && (text[0] == '+' || text[0] == '-')) {
        negative = text[0] == '-';
        text.remove_prefix(1);
    }
    std::size_t digits = 0;
    while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
    if (digits == 0) return std::nan("");
    // from_chars rounds correctly, as V8 does for radix 10; out of range is
    // Infinity, as in JavaScript.
    double magnitude = 0;
    const auto result = std::from_chars(text.data(), text.data() + digits, magnitude);
    if (result.ec == std::errc::result_out_of_range) {
        magnitude = HUGE_VAL;
    }
    return negative ? -magnitude : magnitude;
}

// Number#toString(2) of an integral double (or NaN, +-Infinity).
void js_to_binary(double value, std::string& out) {
    out.clear();
    if (std::isnan(value)) {
        out = "NaN";
        return;
    }
    if (value < 0) {
        out.push_back('-');
        value = -value;
    }
    if (std::isinf(value)) {
        out += "Infinity";
        return;
    }
    if (value == 0) {
        out = "0";  // -0 too
        return;
    }
    int exponent = 0;
    const double fraction = std::frexp(value, &exponent);  // value = fraction * 2^exponent
    std::uint64_t mantissa = 0;
    int zeros = 0;
    if (exponent <= 64) {
        mantissa = static_cast<std::uint64_t>(value);
    } else {
        mantissa = static_cast<std::uint64_t>(std::ldexp(fraction, 53));
        zeros = exponent - 53;
    }
    char bits[64];
    int count = 0;
    for (; mantissa != 0; mantissa >>= 1) bits[count++] = static_cast<char>('0' + (mantissa & 1));
    while (count > 0) out.push_back(bits[--count]);
    out.append(static_cast<std::size_t>(zeros), '0');
}

// The v2 `o` claim's permissions: per feature of `fea` whose scope (before
// the first ':') has an 'o', the name after it; per such feature the fpm
// number at the same index, as bits padded to the count of `per` and read
// from the least significant; each 1 bit grants org:<feature>:<per entry>.
void build_v2_permissions(std::string_view fea, std::string_view per, std::string_view fpm,
                          Workspace& work) {
    std::string& out = work.org_permissions;
    if (fea.empty() || per.empty() || fpm.empty()) return;
    // The per entries, trimmed.
    std::vector<std::string_view>& permissions = work.permission_names;
    permissions.clear();
    for (std::string_view rest = per;;) {
        const std::size_t comma = rest.find(',');
        permissions.push_back(js_trim(rest.substr(0, comma)));
        if (comma == std::string_view::npos) break;
        rest.remove_prefix(comma + 1);
    }
    std::string& word = work.permission;
    std::string_view features = fea;
    std::string_view masks = fpm;
    bool features_left = true;
    bool masks_left = true;
    while (features_left && masks_left) {
        const std::size_t feature_comma = features.find(',');
        const std::string_view feature_entry = js_trim(features.substr(0, feature_comma));
        features_left = feature_comma != std::string_view::npos;
        if (features_left) features.remove_prefix(feature_comma + 1);

        const std::optional<std::string_view> scope = js_split_at(feature_entry, ':', 0);
        if (scope->find('o') == std::string_view::npos) continue;  // a user-scoped feature
        const std::optional<std::string_view> feature = js_split_at(feature_entry, ':', 1);

        // The org features and the fpm numbers pair up by index.
        const std::size_t mask_comma = masks.find(',');
        const std::string_view mask_entry = masks.substr(0, mask_comma);
        masks_left = mask_comma != std::string_view::npos;
        if (masks_left) masks.remove_prefix(mask_comma + 1);

        js_to_binary(js_parse_int(mask_entry), work.binary);
        const std::string& bits = work.binary;
        const std::size_t width = std::max(bits.size(), permissions.size());
        const std::size_t pad = width - bits.size();
        for (std::size_t index = 0; index < width; ++index) {
            // Reversed: index 0 is the last character of the padded string.
            const std::size_t position = width - 1 - index;
            if (position < pad || bits[position - pad] != '1') continue;
            word.assign("org:");
            word.append(feature ? *feature : std::string_view("undefined"));
            word.push_back(':');
            word.append(index < permissions.size() ? permissions[index]
                                                   : std::string_view("undefined"));
            append_word(out, word, kMaxPermissionsLength);
        }
    }
}

// The active organization, v2 (`o`, `fea`) or v1 (org_* claims).
struct OrgClaims {
    std::string_view id;
    std::string_view slug;
    std::string_view role;
    std::string_view permissions;
};

bool is_version_2(const std::optional<element>& v) noexcept {
    if (!v) return false;
    switch (v->type()) {
        case element_type::INT64: {
            std::int64_t n = 0;
            return v->get(n) == simdjson::SUCCESS && n == 2;
        }
        case element_type::UINT64:
            return false;
        case element_type::DOUBLE: {
            double d = 0;
            return v->get(d) == simdjson::SUCCESS && d == 2.0;
        }
        default:
            return false;
    }
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
    std::optional<element> v, o, fea, org_id, org_role, org_slug, org_permissions;
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
                if (name == "v") payload.v = field.value;
                break;
            case 'o':
                if (name == "o")
                    payload.o = field.value;
                else if (name == "org_id")
                    payload.org_id = field.value;
                else if (name == "org_role")
                    payload.org_role = field.value;
                else if (name == "org_slug")
                    payload.org_slug = field.value;
                else if (name == "org_permissions")
                    payload.org_permissions = field.value;
                break;
            case 'f':
                if (name == "fea") payload.fea = field.value;
                break;
            case 'h':
                if (name == "handshake") payload.handshake = field.value;
                break;
            default:
                break;
        }
    }
}

// The value at a dotted path (metadata.role); false when a step is missing,
// duplicated or not an object.
bool find_path(object root, std::string_view path, element& out) noexcept {
    if (path.empty()) return false;
    object current = root;
    for (;;) {
        const std::size_t dot = path.find('.');
        const std::string_view step = path.substr(0, dot);
        if (step.empty() || find_member(current, step, out) != Member::found) return false;
        if (dot == std::string_view::npos) return true;
        path.remove_prefix(dot + 1);
        if (out.get(current) != simdjson::SUCCESS) return false;
    }
}

void read_role(object root, std::string_view role_claim, Workspace& work, std::string_view& role,
               std::string_view& roles) {
    element value;
    if (!find_path(root, role_claim, value)) return;
    std::string_view text;
    if (value.get(text) == simdjson::SUCCESS) {
        if (has_control_character(text)) return;
        role = text;
        if (is_list_word(text)) roles = text;
        return;
    }
    array list;
    if (value.get(list) != simdjson::SUCCESS) return;
    bool first = true;
    for (element item : list) {
        if (item.get(text) == simdjson::SUCCESS) {
            if (first && !has_control_character(text)) role = text;
            append_word(work.roles, text, SIZE_MAX);
        }
        first = false;
    }
    roles = work.roles;
}

OrgClaims read_org(const Payload& payload, Workspace& work) {
    OrgClaims org;
    if (!is_version_2(payload.v)) {
        org.id = header_safe_string(payload.org_id);
        org.slug = header_safe_string(payload.org_slug);
        org.role = header_safe_string(payload.org_role);
        array list;
        if (payload.org_permissions && payload.org_permissions->get(list) == simdjson::SUCCESS) {
            std::string_view text;
            for (element item : list) {
                if (item.get(text) == simdjson::SUCCESS) {
                    append_word(work.org_permissions, text, kMaxPermissionsLength);
                }
            }
        }
        org.permissions = work.org_permissions;
        return org;
    }
    object o;
    if (!payload.o || payload.o->get(o) != simdjson::SUCCESS) return org;
    std::optional<element> id, slg, rol, per, fpm;
    element member;
    if (find_member(o, "id", member) == Member::found) id = member;
    if (find_member(o, "slg", member) == Member::found) slg = member;
    if (find_member(o, "rol", member) == Member::found) rol = member;
    if (find_member(o, "per", member) == Member::found) per = member;
    if (find_member(o, "fpm", member) == Member::found) fpm = member;
    org.id = header_safe_string(id);
    org.slug = header_safe_string(slg);
    // The SDK writes `org:${rol}`; a rol that already has the prefix keeps one.
    const std::string_view rol_text = header_safe_string(rol);
    if (!rol_text.empty()) {
        if (rol_text.substr(0, 4) != "org:") work.org_role.assign("org:");
        work.org_role.append(rol_text);
        org.role = work.org_role;
    }
    // Non-string fea / per / fpm make the SDK throw; here they grant nothing.
    std::string_view fea, per_text, fpm_text;
    (void)get_string(payload.fea, fea);
    (void)get_string(per, per_text);
    (void)get_string(fpm, fpm_text);
    build_v2_permissions(fea, per_text, fpm_text, work);
    org.permissions = work.org_permissions;
    return org;
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

    std::string_view sub, sid;
    if (!get_string(payload.sub, sub) || sub.empty() || has_control_character(sub) ||
        !get_string(payload.sid, sid) || sid.empty() || has_control_character(sid)) {
        return JwtError::subject;
    }
    std::int64_t exp = 0, nbf = 0, iat = 0;
    if (!payload.exp || !read_time(*payload.exp, exp)) return JwtError::malformed;
    if (payload.nbf && !read_time(*payload.nbf, nbf)) return JwtError::malformed;
    if (payload.iat && !read_time(*payload.iat, iat)) return JwtError::malformed;

    work.roles.clear();
    work.org_role.clear();
    work.org_permissions.clear();
    work.scalars.clear();
    std::string_view role, roles;
    read_role(payload.root, role_claim, work, role, roles);
    const OrgClaims org = read_org(payload, work);
    for (auto field : payload.root) collect_scalar(work.scalars, field.key, field.value);

    const std::string_view strings[kFlatStringCount] = {
        sub,
        sid,
        header_safe_string(payload.iss),
        header_safe_string(payload.azp),
        header_safe_string(payload.sts),
        role,
        roles,
        org.id,
        org.slug,
        org.role,
        org.permissions,
        work.scalars,
    };
    std::size_t size = kFlatFixedLength;
    for (const auto& text : strings) size += 4 + text.size();
    flat.clear();
    flat.reserve(size);
    flat.append(kFlatMagic, sizeof(kFlatMagic));
    flat.push_back(
        static_cast<char>((payload.nbf ? kFlagHasNbf : 0) | (payload.iat ? kFlagHasIat : 0)));
    put_i64(flat, exp);
    put_i64(flat, nbf);
    put_i64(flat, iat);
    for (const auto& text : strings) put_string(flat, text);
    return JwtError::none;
}

bool decode_claims(const unsigned char* flat, std::size_t len, SessionClaims& out) noexcept {
    if (flat == nullptr || len < kFlatFixedLength ||
        std::memcmp(flat, kFlatMagic, sizeof(kFlatMagic)) != 0) {
        return false;
    }
    std::size_t pos = sizeof(kFlatMagic);
    const unsigned char flags = flat[pos++];
    if ((flags & ~(kFlagHasNbf | kFlagHasIat)) != 0) return false;
    SessionClaims claims;
    claims.exp = get_i64(flat + pos);
    claims.nbf = get_i64(flat + pos + 8);
    claims.iat = get_i64(flat + pos + 16);
    pos += 24;
    claims.has_nbf = (flags & kFlagHasNbf) != 0;
    claims.has_iat = (flags & kFlagHasIat) != 0;
    const auto valid_time = [](std::int64_t t) { return t >= 0 && t <= kMaxTimestamp; };
    if (!valid_time(claims.exp) || !valid_time(claims.nbf) || !valid_time(claims.iat) ||
        (!claims.has_nbf && claims.nbf != 0) || (!claims.has_iat && claims.iat != 0)) {
        return false;
    }
    std::string_view* const fields[kFlatStringCount] = {
        &claims.sub,
        &claims.sid,
        &claims.iss,
        &claims.azp,
        &claims.sts,
        &claims.role,
        &claims.roles,
        &claims.org_id,
        &claims.org_slug,
        &claims.org_role,
        &claims.org_permissions,
        &claims.scalars,
    };
    for (std::string_view* field : fields) {
        if (len - pos < 4) return false;
        const std::uint32_t length = get_u32(flat + pos);
        pos += 4;
        if (len - pos < length) return false;
        *field = std::string_view(reinterpret_cast<const char*>(flat) + pos, length);
        pos += length;
        // Everything but the scalars blob is text for headers.
        if (field != &claims.scalars && has_control_character(*field)) return false;
    }
    if (pos != len || claims.sub.empty() || claims.sid.empty()) return false;
    // The scalars blob: entries that exactly fill it.
    std::string_view blob = claims.scalars;
    while (!blob.empty()) {
        const std::size_t name_length = static_cast<unsigned char>(blob[0]);
        if (blob.size() < 1 + name_length + 4) return false;
        if (!is_claim_name(blob.substr(1, name_length))) return false;
        const std::uint32_t value_length =
            get_u32(reinterpret_cast<const unsigned char*>(blob.data()) + 1 + name_length);
        blob.remove_prefix(1 + name_length + 4);
        if (blob.size() < value_length || has_control_character(blob.substr(0, value_length))) {
            return false;
        }
        blob.remove_prefix(value_length);
    }
    out = claims;
    return true;
}

bool SessionClaims::find_scalar(std::string_view name, std::string_view& value) const noexcept {
    std::string_view blob = scalars;
    while (blob.size() >= 5) {
        const std::size_t name_length = static_cast<unsigned char>(blob[0]);
        if (blob.size() < 1 + name_length + 4) return false;
        const std::string_view entry_name = blob.substr(1, name_length);
        const std::uint32_t value_length =
            get_u32(reinterpret_cast<const unsigned char*>(blob.data()) + 1 + name_length);
        blob.remove_prefix(1 + name_length + 4);
        if (blob.size() < value_length) return false;
        if (entry_name == name) {
            value = blob.substr(0, value_length);
            return true;
        }
        blob.remove_prefix(value_length);
    }
    return false;
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
