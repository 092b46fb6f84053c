// A LookupRecord as one flat byte string: how the shared-memory cache and the
// request pool hold it (plain bytes, no pointers, valid in every process).
#pragma once

#include <cstddef>
#include <string_view>

#include "core/record.hpp"

namespace session::core {

// Layout: for each session field, then each user field, a 4-byte
// little-endian length (0xFFFFFFFF for nil) followed by that many bytes.
inline constexpr std::size_t kFlatFieldCount = kSessionFieldCount + kUserFieldCount;

std::size_t flat_size(const LookupRecord& record) noexcept;

// Writes exactly flat_size(record) bytes to `out`.
void flat_encode(const LookupRecord& record, unsigned char* out) noexcept;

// Reads a buffer written by flat_encode; the record's views point into
// `in`. False (and `out` unspecified) when the buffer is truncated or has
// bytes left over.
bool flat_decode(const unsigned char* in, std::size_t len, LookupRecord& out) noexcept;

// A JWT overlay entry: the verified token's subject (4-byte little-endian
// length, then the bytes), then the flat record of sess:<sid> and
// user:<sub>. The subject lets a `user <id>` revocation find the entry even
// when the session hash was absent.
std::size_t overlay_flat_size(std::string_view sub, const LookupRecord& record) noexcept;
void overlay_flat_encode(std::string_view sub, const LookupRecord& record,
                         unsigned char* out) noexcept;
// The subject alone (the record is not decoded); false when truncated.
bool overlay_flat_subject(const unsigned char* in, std::size_t len, std::string_view& sub) noexcept;
bool overlay_flat_decode(const unsigned char* in, std::size_t len, std::string_view& sub,
                         LookupRecord& out) noexcept;

}  // namespace session::core
