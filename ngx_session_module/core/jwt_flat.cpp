// The flat claims (jwt_flat.hpp): written by verify_session_token, read by
// decode_claims on every use of a verdict, cached or not, so the reader
// trusts nothing: every length is checked, and every field must still be
// text that may reach a header.
#include "core/jwt_flat.hpp"

#include <array>
#include <cstdint>
#include <cstring>

#include "core/jwt_text.hpp"

namespace session::core {
namespace {

using jwt_detail::has_control_character;
using jwt_detail::is_claim_name;
using jwt_detail::kMaxTimestamp;

// "JWC1", a flags byte, exp, nbf, iat (8 bytes each, little-endian two's
// complement), then kFlatStringCount strings as a 4-byte little-endian
// length and the bytes. Nothing may follow.
constexpr char kFlatMagic[4] = {'J', 'W', 'C', '1'};
constexpr unsigned char kFlagHasNbf = 1;
constexpr unsigned char kFlagHasIat = 2;
constexpr std::size_t kFlatFixedLength = sizeof(kFlatMagic) + 1 + 3 * 8;
constexpr std::size_t kFlatStringCount = 12;

// The strings of `claims` in their order in the buffer; `Claims` is
// SessionClaims, const (to write) or not (to read).
template <typename Claims>
auto flat_strings(Claims& claims) {
    return std::array<decltype(&claims.sub), kFlatStringCount>{
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

}  // namespace

namespace jwt_detail {

void encode_claims(const SessionClaims& claims, std::string& flat) {
    const auto strings = flat_strings(claims);
    std::size_t size = kFlatFixedLength;
    for (const std::string_view* text : strings) size += 4 + text->size();
    flat.clear();
    flat.reserve(size);
    flat.append(kFlatMagic, sizeof(kFlatMagic));
    flat.push_back(
        static_cast<char>((claims.has_nbf ? kFlagHasNbf : 0) | (claims.has_iat ? kFlagHasIat : 0)));
    put_i64(flat, claims.exp);
    put_i64(flat, claims.nbf);
    put_i64(flat, claims.iat);
    for (const std::string_view* text : strings) put_string(flat, *text);
}

// Scalars blob entry: 1-byte name length, name, 4-byte value length, value.
void put_scalar(std::string& blob, std::string_view name, std::string_view value) {
    blob.push_back(static_cast<char>(name.size()));
    blob.append(name);
    put_string(blob, value);
}

}  // namespace jwt_detail

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
    for (std::string_view* field : flat_strings(claims)) {
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

}  // namespace session::core
