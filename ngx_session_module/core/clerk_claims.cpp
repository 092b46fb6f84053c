// The role, organization and scalar claims (clerk_claims.hpp). The
// organization follows Clerk's SDK to the letter, JavaScript quirks included,
// so that a header says what the application's own SDK would say.
#include "core/clerk_claims.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>

#include "core/jwt_flat.hpp"

namespace session::core::jwt_detail {
namespace {

// org_permissions can expand (a few bytes of `fpm` name many permissions):
// words past this many bytes are left out (fewer permissions, never more).
constexpr std::size_t kMaxPermissionsLength = 4 * kMaxJwtPartLength;

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
                          ClaimsScratch& scratch) {
    std::string& out = scratch.org_permissions;
    if (fea.empty() || per.empty() || fpm.empty()) return;
    // The per entries, trimmed.
    std::vector<std::string_view>& permissions = scratch.permission_names;
    permissions.clear();
    for (std::string_view rest = per;;) {
        const std::size_t comma = rest.find(',');
        permissions.push_back(js_trim(rest.substr(0, comma)));
        if (comma == std::string_view::npos) break;
        rest.remove_prefix(comma + 1);
    }
    std::string& word = scratch.permission;
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

        js_to_binary(js_parse_int(mask_entry), scratch.binary);
        const std::string& bits = scratch.binary;
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

}  // namespace

void read_role(object root, std::string_view role_claim, ClaimsScratch& scratch,
               std::string_view& role, std::string_view& roles) {
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
            append_word(scratch.roles, text, SIZE_MAX);
        }
        first = false;
    }
    roles = scratch.roles;
}

OrgClaims read_org(const OrgMembers& members, ClaimsScratch& scratch) {
    OrgClaims org;
    if (!is_version_2(members.v)) {
        org.id = header_safe_string(members.org_id);
        org.slug = header_safe_string(members.org_slug);
        org.role = header_safe_string(members.org_role);
        array list;
        if (members.org_permissions && members.org_permissions->get(list) == simdjson::SUCCESS) {
            std::string_view text;
            for (element item : list) {
                if (item.get(text) == simdjson::SUCCESS) {
                    append_word(scratch.org_permissions, text, kMaxPermissionsLength);
                }
            }
        }
        org.permissions = scratch.org_permissions;
        return org;
    }
    object o;
    if (!members.o || members.o->get(o) != simdjson::SUCCESS) return org;
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
        if (rol_text.substr(0, 4) != "org:") scratch.org_role.assign("org:");
        scratch.org_role.append(rol_text);
        org.role = scratch.org_role;
    }
    // Non-string fea / per / fpm make the SDK throw; here they grant nothing.
    std::string_view fea, per_text, fpm_text;
    (void)get_string(members.fea, fea);
    (void)get_string(per, per_text);
    (void)get_string(fpm, fpm_text);
    build_v2_permissions(fea, per_text, fpm_text, scratch);
    org.permissions = scratch.org_permissions;
    return org;
}

void collect_scalars(object root, std::string& blob) {
    for (auto field : root) collect_scalar(blob, field.key, field.value);
}

}  // namespace session::core::jwt_detail
