#include "core/flat_record.hpp"

#include <cstdint>
#include <cstring>

namespace session::core {
namespace {

constexpr std::size_t kLengthBytes = 4;
constexpr std::uint32_t kNilLength = 0xFFFFFFFFu;

// Explicit little-endian bytes rather than a memcpy of a uint32: the cache
// layout must not depend on the host, and the buffer has no alignment.
void put_length(unsigned char* out, std::uint32_t length) noexcept {
    out[0] = static_cast<unsigned char>(length);
    out[1] = static_cast<unsigned char>(length >> 8);
    out[2] = static_cast<unsigned char>(length >> 16);
    out[3] = static_cast<unsigned char>(length >> 24);
}

std::uint32_t get_length(const unsigned char* in) noexcept {
    return static_cast<std::uint32_t>(in[0]) | (static_cast<std::uint32_t>(in[1]) << 8) |
           (static_cast<std::uint32_t>(in[2]) << 16) | (static_cast<std::uint32_t>(in[3]) << 24);
}

// Session fields, then user fields: the one order both directions share.
template <typename Visit>
void for_each_field(const LookupRecord& record, Visit&& visit) noexcept {
    for (const auto& field : record.session) visit(field);
    for (const auto& field : record.user) visit(field);
}

}  // namespace

// Precondition: every value is shorter than 0xFFFFFFFF bytes. Values come
// from Redis bulk strings (512 MB at most by default), so it always holds.
std::size_t flat_size(const LookupRecord& record) noexcept {
    std::size_t size = 0;
    for_each_field(record, [&size](const std::optional<std::string_view>& field) {
        size += kLengthBytes + (field ? field->size() : 0);
    });
    return size;
}

void flat_encode(const LookupRecord& record, unsigned char* out) noexcept {
    for_each_field(record, [&out](const std::optional<std::string_view>& field) {
        if (!field) {
            put_length(out, kNilLength);
            out += kLengthBytes;
            return;
        }
        put_length(out, static_cast<std::uint32_t>(field->size()));
        out += kLengthBytes;
        if (!field->empty()) std::memcpy(out, field->data(), field->size());
        out += field->size();
    });
}

bool flat_decode(const unsigned char* in, std::size_t len, LookupRecord& out) noexcept {
    std::size_t pos = 0;
    const auto read_field = [&](std::optional<std::string_view>& field) noexcept {
        if (len - pos < kLengthBytes) return false;
        const std::uint32_t length = get_length(in + pos);
        pos += kLengthBytes;
        if (length == kNilLength) {
            field = std::nullopt;
            return true;
        }
        if (len - pos < length) return false;
        field = std::string_view(reinterpret_cast<const char*>(in) + pos, length);
        pos += length;
        return true;
    };
    // An empty buffer has no fields: the null pointer is never dereferenced.
    if (in == nullptr && len != 0) return false;
    for (auto& field : out.session) {
        if (!read_field(field)) return false;
    }
    for (auto& field : out.user) {
        if (!read_field(field)) return false;
    }
    return pos == len;
}

std::size_t overlay_flat_size(std::string_view sub, const LookupRecord& record) noexcept {
    return kLengthBytes + sub.size() + flat_size(record);
}

void overlay_flat_encode(std::string_view sub, const LookupRecord& record,
                         unsigned char* out) noexcept {
    put_length(out, static_cast<std::uint32_t>(sub.size()));
    std::memcpy(out + kLengthBytes, sub.data(), sub.size());
    flat_encode(record, out + kLengthBytes + sub.size());
}

bool overlay_flat_subject(const unsigned char* in, std::size_t len,
                          std::string_view& sub) noexcept {
    if (len < kLengthBytes) return false;
    const std::uint32_t sub_len = get_length(in);
    if (sub_len > len - kLengthBytes) return false;
    sub = std::string_view(reinterpret_cast<const char*>(in + kLengthBytes), sub_len);
    return true;
}

bool overlay_flat_decode(const unsigned char* in, std::size_t len, std::string_view& sub,
                         LookupRecord& out) noexcept {
    if (!overlay_flat_subject(in, len, sub)) return false;
    const std::size_t offset = kLengthBytes + sub.size();
    return flat_decode(in + offset, len - offset, out);
}

}  // namespace session::core
