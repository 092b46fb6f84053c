#include "common/redis_topology.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <array>
#include <cctype>

namespace session::common {
namespace {

// CRC16-CCITT as XMODEM computes it (polynomial 0x1021, initial value 0,
// no reflection, no final xor): Redis Cluster specification, Appendix A.
// The table is computed by the compiler rather than copied in by hand.
constexpr std::array<std::uint16_t, 256> make_crc16_table() {
    std::array<std::uint16_t, 256> table{};
    for (unsigned i = 0; i < 256; ++i) {
        unsigned crc = i << 8;
        for (int bit = 0; bit < 8; ++bit) {
            crc = (crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1;
        }
        table[i] = static_cast<std::uint16_t>(crc);
    }
    return table;
}

constexpr std::array<std::uint16_t, 256> kCrc16Table = make_crc16_table();

std::uint16_t crc16(std::string_view data) noexcept {
    unsigned crc = 0;
    for (char c : data) {
        crc = ((crc << 8) ^ kCrc16Table[((crc >> 8) ^ static_cast<unsigned char>(c)) & 0xff]) &
              0xffff;
    }
    return static_cast<std::uint16_t>(crc);
}

// The caller's catch turns any exception into this: the only one that
// can happen here is std::bad_alloc. Assigning a string this short never
// allocates (it fits the small-string buffer), so it cannot throw again.
void set_out_of_memory(std::string& error) noexcept {
    try {
        error = "out of memory";
    } catch (...) {
    }
}

bool is_string(const redisReply* r) noexcept {
    return r != nullptr && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

std::string_view text_of(const redisReply* r) noexcept {
    return r->str == nullptr ? std::string_view() : std::string_view(r->str, r->len);
}

// An error reply's text for our own error message: a server's words are
// no secret, but keep them to one short line.
std::string excerpt(const redisReply& r) {
    std::string out(text_of(&r).substr(0, 120));
    for (char& c : out) {
        unsigned char u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f) c = '?';
    }
    return out;
}

// Decimal digits only, at most `max`: no sign, no spaces, no "0x".
bool parse_decimal(std::string_view s, long long max, long long& out) noexcept {
    if (s.empty() || s.size() > 10) return false;
    long long n = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return false;
        n = n * 10 + (c - '0');
    }
    if (n > max) return false;
    out = n;
    return true;
}

// A port as Redis writes it: an integer reply (CLUSTER SLOTS, a replica's
// ROLE) or a bulk string (SENTINEL GET-MASTER-ADDR-BY-NAME, a primary's ROLE).
bool reply_port(const redisReply* r, long long& port) noexcept {
    if (r == nullptr) return false;
    if (r->type == REDIS_REPLY_INTEGER) {
        if (r->integer < 0 || r->integer > 65535) return false;
        port = r->integer;
        return true;
    }
    return is_string(r) && parse_decimal(text_of(r), 65535, port);
}

// The hosts a server announces go to the caller's resolver or connect:
// accept what redis_address.cpp accepts for a configured host.
bool valid_host(std::string_view host) noexcept {
    if (host.empty() || host.size() > 253) return false;
    for (char c : host) {
        unsigned char u = static_cast<unsigned char>(c);
        if (!(std::isalnum(u) || c == '-' || c == '.' || c == '_' || c == ':')) return false;
    }
    return true;
}

bool equal_endpoint(const RedisEndpoint& a, const RedisEndpoint& b) noexcept {
    return a.port == b.port && a.host == b.host;
}

// A CLUSTER SLOTS node: [endpoint, port, id, metadata]. Sets `known` to
// false for a node that cannot be reached ("?", port 0, or no host to
// fall back on); returns false when the entry is malformed.
bool cluster_node(const redisReply* node, std::string_view fallback_host, RedisEndpoint& out,
                  bool& known, std::string& why) {
    if (node == nullptr || node->type != REDIS_REPLY_ARRAY || node->elements < 2) {
        why = "the primary is not an array [host, port, ...]";
        return false;
    }
    const redisReply* host = node->element[0];
    long long port = 0;
    if (!reply_port(node->element[1], port)) {
        why = "the primary's port is not an integer in 0-65535";
        return false;
    }
    std::string_view h;
    if (host != nullptr && host->type == REDIS_REPLY_NIL) {
        h = fallback_host;  // unknown-endpoint: the host we asked
    } else if (is_string(host)) {
        h = text_of(host);
        if (h.empty()) h = fallback_host;  // the node does not know its own IP
    } else {
        why = "the primary's host is neither a string nor nil";
        return false;
    }
    if (h == "?" || h.empty() || port == 0) {
        known = false;
        return true;
    }
    if (!valid_host(h)) {
        // Not echoed: it may hold bytes that do not belong in a log line.
        why = "the primary's host is not a valid host name or address";
        return false;
    }
    out.host.assign(h);
    out.port = static_cast<std::uint16_t>(port);
    known = true;
    return true;
}

bool slot_number(const redisReply* r, long long& slot) noexcept {
    if (r == nullptr || r->type != REDIS_REPLY_INTEGER) return false;
    if (r->integer < 0 || r->integer >= static_cast<long long>(kClusterSlots)) return false;
    slot = r->integer;
    return true;
}

// Slots listed with an unknown primary: none, but listed (see the
// overlap check).
constexpr std::int16_t kUnknownOwner = -2;

// Splits "a b c" at single spaces into exactly `n` fields.
template <std::size_t N>
bool split_fields(std::string_view text, std::array<std::string_view, N>& fields) noexcept {
    std::size_t pos = 0;
    for (std::size_t i = 0; i < N; ++i) {
        auto space = text.find(' ', pos);
        bool last = i + 1 == N;
        if (last != (space == std::string_view::npos)) return false;
        fields[i] = text.substr(pos, last ? std::string_view::npos : space - pos);
        if (fields[i].empty()) return false;
        pos = space + 1;
    }
    return true;
}

bool parse_host_port(std::string_view host, std::string_view port, RedisEndpoint& out) {
    long long n = 0;
    if (!valid_host(host) || !parse_decimal(port, 65535, n) || n == 0) return false;
    out.host.assign(host);
    out.port = static_cast<std::uint16_t>(n);
    return true;
}

}  // namespace

// ---- Redis Cluster ---------------------------------------------------------

std::uint16_t key_slot(std::string_view key) noexcept {
    auto open = key.find('{');
    if (open != std::string_view::npos) {
        auto close = key.find('}', open + 1);
        if (close != std::string_view::npos && close > open + 1) {
            key = key.substr(open + 1, close - open - 1);
        }
    }
    return static_cast<std::uint16_t>(crc16(key) % kClusterSlots);
}

std::optional<SlotMap> SlotMap::from_cluster_slots(const redisReply& reply,
                                                   std::string_view fallback_host,
                                                   std::string& error) noexcept {
    try {
        error.clear();
        if (reply.type == REDIS_REPLY_ERROR) {
            error = "CLUSTER SLOTS answered an error: " + excerpt(reply);
            return std::nullopt;
        }
        if (reply.type != REDIS_REPLY_ARRAY) {
            error = "the CLUSTER SLOTS reply is not an array";
            return std::nullopt;
        }
        SlotMap map;
        map.owner_.assign(kClusterSlots, -1);
        for (std::size_t i = 0; i < reply.elements; ++i) {
            const redisReply* range = reply.element[i];
            std::string where = "CLUSTER SLOTS entry " + std::to_string(i + 1);
            if (range == nullptr || range->type != REDIS_REPLY_ARRAY || range->elements < 3) {
                error = where + " is not an array [start, end, primary, replicas...]";
                return std::nullopt;
            }
            long long start = 0, end = 0;
            if (!slot_number(range->element[0], start) || !slot_number(range->element[1], end) ||
                start > end) {
                error = where + " has no valid slot range (integers in 0-16383, start <= end)";
                return std::nullopt;
            }
            RedisEndpoint primary;
            bool known = false;
            std::string why;
            if (!cluster_node(range->element[2], fallback_host, primary, known, why)) {
                error = where + ": " + why;
                return std::nullopt;
            }
            std::int16_t owner = kUnknownOwner;
            if (known) {
                auto it = std::find_if(
                    map.primaries_.begin(), map.primaries_.end(),
                    [&](const RedisEndpoint& p) { return equal_endpoint(p, primary); });
                owner = static_cast<std::int16_t>(it - map.primaries_.begin());
                if (it == map.primaries_.end()) map.primaries_.push_back(std::move(primary));
            }
            for (long long slot = start; slot <= end; ++slot) {
                if (map.owner_[slot] != -1) {
                    error = where + ": slot " + std::to_string(slot) + " is listed twice";
                    return std::nullopt;
                }
                map.owner_[slot] = owner;
                if (known) ++map.covered_;
            }
        }
        return map;
    } catch (...) {
        set_out_of_memory(error);
        return std::nullopt;
    }
}

int SlotMap::primary_index(std::uint16_t slot) const noexcept {
    if (slot >= owner_.size() || owner_[slot] < 0) return -1;
    return owner_[slot];
}

const RedisEndpoint* SlotMap::primary_for(std::uint16_t slot) const noexcept {
    int index = primary_index(slot);
    return index < 0 ? nullptr : &primaries_[static_cast<std::size_t>(index)];
}

std::optional<Redirect> parse_redirect(std::string_view error_text,
                                       std::string_view fallback_host) noexcept {
    try {
        std::array<std::string_view, 3> f;
        if (!split_fields(error_text, f)) return std::nullopt;
        Redirect r;
        if (f[0] == "MOVED") {
            r.kind = RedirectKind::moved;
        } else if (f[0] == "ASK") {
            r.kind = RedirectKind::ask;
        } else {
            return std::nullopt;
        }
        long long slot = 0;
        if (!parse_decimal(f[1], kClusterSlots - 1, slot)) return std::nullopt;
        r.slot = static_cast<std::uint16_t>(slot);

        // Redis prints "host:port" with the host as is, an IPv6 one
        // included ("::1:6381"): the port is what follows the last colon.
        std::string_view address = f[2], host, port;
        if (!address.empty() && address[0] == '[') {
            auto close = address.find(']');
            if (close == std::string_view::npos || address.substr(close + 1, 1) != ":") {
                return std::nullopt;
            }
            host = address.substr(1, close - 1);
            port = address.substr(close + 2);
        } else {
            auto colon = address.rfind(':');
            if (colon == std::string_view::npos) return std::nullopt;
            host = address.substr(0, colon);
            port = address.substr(colon + 1);
        }
        long long n = 0;
        if (!parse_decimal(port, 65535, n)) return std::nullopt;
        if (host.empty()) host = fallback_host;
        // "?" (a preferred hostname that is not set) or a host we would not
        // connect to: still a redirection, to an unknown node.
        if (valid_host(host) && n != 0) {
            r.endpoint.host.assign(host);
            r.endpoint.port = static_cast<std::uint16_t>(n);
        }
        return r;
    } catch (...) {
        return std::nullopt;
    }
}

// ---- Redis Sentinel --------------------------------------------------------

std::optional<RedisEndpoint> parse_master_addr(const redisReply& reply,
                                               std::string_view master_name,
                                               std::string& error) noexcept {
    try {
        error.clear();
        if (reply.type == REDIS_REPLY_NIL) {
            error = "the sentinel does not monitor a primary named \"" +
                    std::string(master_name.substr(0, 64)) + "\"";
            return std::nullopt;
        }
        if (reply.type == REDIS_REPLY_ERROR) {
            error = "SENTINEL GET-MASTER-ADDR-BY-NAME answered an error: " + excerpt(reply);
            return std::nullopt;
        }
        RedisEndpoint ep;
        if (reply.type != REDIS_REPLY_ARRAY || reply.elements != 2 ||
            !is_string(reply.element[0]) || !is_string(reply.element[1])) {
            error = "the SENTINEL GET-MASTER-ADDR-BY-NAME reply is not [host, port]";
            return std::nullopt;
        }
        if (!parse_host_port(text_of(reply.element[0]), text_of(reply.element[1]), ep)) {
            error = "the sentinel gave an invalid host or port for the primary";
            return std::nullopt;
        }
        return ep;
    } catch (...) {
        set_out_of_memory(error);
        return std::nullopt;
    }
}

std::optional<RoleInfo> parse_role(const redisReply& reply, std::string& error) noexcept {
    try {
        error.clear();
        if (reply.type == REDIS_REPLY_ERROR) {
            error = "ROLE answered an error: " + excerpt(reply);
            return std::nullopt;
        }
        if (reply.type != REDIS_REPLY_ARRAY || reply.elements == 0 ||
            !is_string(reply.element[0])) {
            error = "the ROLE reply is not an array that starts with the role";
            return std::nullopt;
        }
        std::string_view role = text_of(reply.element[0]);
        RoleInfo info;
        if (role == "master") {
            info.role = RedisRole::master;
        } else if (role == "sentinel") {
            info.role = RedisRole::sentinel;
        } else if (role == "slave" || role == "replica") {
            // [role, primary host, primary port, link state, offset]
            info.role = RedisRole::replica;
            long long port = 0;
            if (reply.elements < 4 || !is_string(reply.element[1]) ||
                !reply_port(reply.element[2], port) || !is_string(reply.element[3])) {
                error = "the ROLE reply of a replica is not [role, host, port, state, offset]";
                return std::nullopt;
            }
            std::string_view host = text_of(reply.element[1]);
            if (!valid_host(host)) {
                error = "the ROLE reply of a replica names an invalid primary host";
                return std::nullopt;
            }
            info.primary.host.assign(host);
            info.primary.port = static_cast<std::uint16_t>(port);
            info.link_state.assign(text_of(reply.element[3]).substr(0, 32));
        } else {
            error = "ROLE answered an unknown role \"" + std::string(role.substr(0, 32)) + "\"";
            return std::nullopt;
        }
        return info;
    } catch (...) {
        set_out_of_memory(error);
        return std::nullopt;
    }
}

std::optional<SwitchMaster> parse_switch_master(std::string_view payload,
                                                std::string& error) noexcept {
    try {
        error.clear();
        std::array<std::string_view, 5> f;
        SwitchMaster out;
        if (!split_fields(payload, f)) {
            error =
                "a +switch-master message is not \"<name> <old ip> <old port> <new ip> "
                "<new port>\"";
            return std::nullopt;
        }
        if (!parse_host_port(f[1], f[2], out.old_primary) ||
            !parse_host_port(f[3], f[4], out.new_primary)) {
            error = "a +switch-master message holds an invalid host or port";
            return std::nullopt;
        }
        out.master_name.assign(f[0]);
        return out;
    } catch (...) {
        set_out_of_memory(error);
        return std::nullopt;
    }
}

void SentinelRotation::failed() noexcept {
    if (order_.empty()) return;
    ++failures_;
    next_ = (next_ + 1) % order_.size();
}

void SentinelRotation::succeeded() noexcept {
    if (order_.empty()) return;
    // The others keep their relative order behind it.
    std::rotate(order_.begin(), order_.begin() + static_cast<std::ptrdiff_t>(next_),
                order_.begin() + static_cast<std::ptrdiff_t>(next_) + 1);
    next_ = 0;
    failures_ = 0;
}

void SentinelRotation::new_round() noexcept {
    next_ = 0;
    failures_ = 0;
}

// ---- Error replies ---------------------------------------------------------

std::string_view error_code(std::string_view error_text) noexcept {
    return error_text.substr(0, error_text.find(' '));
}

bool is_readonly_error(std::string_view error_text) noexcept {
    if (error_code(error_text) == "READONLY") return true;
    // Before Redis 7 an error inside a script lost its code: "ERR Error
    // running script (call to f_...): @user_script:1: ... -READONLY You
    // can't write against a read only replica."
    return error_code(error_text) == "ERR" &&
           error_text.find(" -READONLY ") != std::string_view::npos;
}

bool is_retry_later_error(std::string_view error_text) noexcept {
    std::string_view code = error_code(error_text);
    return code == "LOADING" || code == "MASTERDOWN" || code == "TRYAGAIN" || code == "CLUSTERDOWN";
}

}  // namespace session::common
