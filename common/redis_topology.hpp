// What Sentinel and Cluster topologies need beyond the address grammar
// (redis_address.hpp): the slot of a key, the slot map, redirections, the
// replies a sentinel and ROLE give, the sentinel to ask next, and which
// error replies mean "a failover is happening". Pure logic shared by the
// module and syncd: no I/O, no nginx, no Redis command is sent here.
//
// Replies come in as the hiredis `redisReply` trees that both I/O layers
// already decode with a `redisReader` (RESP2: the caller does not send
// HELLO 3). Error texts are a `redisReply`'s `str`/`len` of type
// REDIS_REPLY_ERROR, without the leading '-'.
//
// Every function is noexcept: an allocation failure while parsing is
// reported like a malformed reply, with `error` set to "out of memory", so
// that the callers (nginx's and hiredis's C frames) never see an exception.
#pragma once

#include "common/redis_address.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// hiredis's reply type (hiredis.h); declared here so that this header does
// not pull hiredis into every file that includes it.
struct redisReply;

namespace session::common {

// ---- Redis Cluster ---------------------------------------------------------

inline constexpr std::size_t kClusterSlots = 16384;

// The hash slot of `key`: CRC16 (XMODEM) mod 16384 of the key, or of its
// hash tag: the bytes between the first '{' and the first '}' after it,
// when there is at least one (Redis Cluster specification, "Hash tags").
std::uint16_t key_slot(std::string_view key) noexcept;

// Which primary serves which slot, from the reply of CLUSTER SLOTS.
class SlotMap {
  public:
    // `fallback_host` is the host the reply came from: a node that does
    // not know its own IP (it never met another node) answers "", and
    // cluster-preferred-endpoint-type unknown-endpoint answers nil: both mean
    // "the host you sent this command to, with this port". A node whose
    // address is unknown ("?": a preferred hostname that is not set, or
    // port 0) leaves its slots without a primary. Replicas are ignored
    // (nothing reads from them), and so are the node id and Redis 7's
    // metadata (hostname, ip). nullopt with `error` naming what was wrong
    // when the reply is not a CLUSTER SLOTS reply.
    static std::optional<SlotMap> from_cluster_slots(const redisReply& reply,
                                                     std::string_view fallback_host,
                                                     std::string& error) noexcept;

    // The primary that serves `slot`, or nullptr when the map has none for
    // it (not assigned, unknown address, or slot >= kClusterSlots).
    const RedisEndpoint* primary_for(std::uint16_t slot) const noexcept;
    // Its index in primaries(), or -1: lets a caller keep one connection
    // per primary in a vector that parallels primaries().
    int primary_index(std::uint16_t slot) const noexcept;

    // The distinct primaries, each once, in their order in the reply.
    const std::vector<RedisEndpoint>& primaries() const noexcept { return primaries_; }
    // How many slots have a primary: kClusterSlots when the cluster is
    // fully covered (a cluster being created or resharded may not be).
    std::size_t covered_slots() const noexcept { return covered_; }

  private:
    std::vector<RedisEndpoint> primaries_;
    // kClusterSlots entries once built: an index in primaries_ (at most
    // 16384 primaries), or negative: none.
    std::vector<std::int16_t> owner_;
    std::size_t covered_ = 0;
};

enum class RedirectKind {
    moved,  // the slot now lives there: refresh the map, then retry there
    ask,    // the slot is migrating: send ASKING then the command there, once
};

struct Redirect {
    RedirectKind kind = RedirectKind::moved;
    std::uint16_t slot = 0;
    // Empty host or port 0: the node's address is unknown ("?"), so only
    // a map refresh can tell where the slot went.
    RedisEndpoint endpoint;

    bool has_endpoint() const noexcept { return !endpoint.host.empty() && endpoint.port != 0; }
};

// "MOVED 3999 127.0.0.1:6381" or "ASK 3999 127.0.0.1:6381". The host is an
// IPv4 address, a hostname or an IPv6 address (Redis writes "::1:6381", so
// the port follows the last colon; "[::1]:6381" is accepted too). An empty
// host (":6381", cluster-preferred-endpoint-type unknown-endpoint) means
// the host the error came from: `fallback_host`. nullopt when the text is
// not a redirection.
std::optional<Redirect> parse_redirect(std::string_view error_text,
                                       std::string_view fallback_host = {}) noexcept;

// ---- Redis Sentinel --------------------------------------------------------

// The reply of SENTINEL GET-MASTER-ADDR-BY-NAME <master_name>: the primary's
// address, or nullopt with `error` set: the sentinel does not monitor that
// name (a nil reply), answered an error, or the reply is malformed. Ask the
// next sentinel in each case.
std::optional<RedisEndpoint> parse_master_addr(const redisReply& reply,
                                               std::string_view master_name,
                                               std::string& error) noexcept;

enum class RedisRole { master, replica, sentinel };

struct RoleInfo {
    RedisRole role = RedisRole::master;
    // For a replica only: its primary, and the state of its link to it
    // ("connect", "connecting", "sync", "connected", "handshake").
    RedisEndpoint primary;
    std::string link_state;
};

// The reply of ROLE: a sentinel hands out an address, and only ROLE on the
// node itself proves that it is (still) the primary: anything but master
// means "ask the sentinels again" (sentinel client guidelines, step 3).
std::optional<RoleInfo> parse_role(const redisReply& reply, std::string& error) noexcept;

struct SwitchMaster {
    std::string master_name;
    RedisEndpoint old_primary;
    RedisEndpoint new_primary;
};

// The payload of a message on a sentinel's "+switch-master" channel:
// "<master name> <old ip> <old port> <new ip> <new port>".
std::optional<SwitchMaster> parse_switch_master(std::string_view payload,
                                                std::string& error) noexcept;

// Which sentinel to ask next, in the order the sentinel client guidelines
// give: try them in turn; the first that answers goes to the front of the
// list, so that the next discovery starts with the one that worked last.
class SentinelRotation {
  public:
    SentinelRotation() = default;
    explicit SentinelRotation(std::vector<RedisEndpoint> sentinels) noexcept
        : order_(std::move(sentinels)) {}

    // The sentinel to ask now. Only valid when size() > 0.
    const RedisEndpoint& current() const noexcept { return order_[next_]; }
    // It failed (no connection, timeout, error, nil, or an address that
    // ROLE disproved): move to the next one, wrapping around.
    void failed() noexcept;
    // It answered with the primary: it goes to the front, and the next
    // round starts there.
    void succeeded() noexcept;
    // Every sentinel has failed since the last success or the last
    // new_round(): report the error and back off before new_round().
    bool exhausted() const noexcept { return order_.empty() || failures_ >= order_.size(); }
    // Start over from the front (after a back-off, or on a new discovery).
    void new_round() noexcept;

    std::size_t size() const noexcept { return order_.size(); }
    const std::vector<RedisEndpoint>& order() const noexcept { return order_; }

  private:
    std::vector<RedisEndpoint> order_;
    std::size_t next_ = 0;
    std::size_t failures_ = 0;
};

// ---- Error replies ---------------------------------------------------------

// The first word of an error text: "READONLY", "MOVED", "ERR", ...
std::string_view error_code(std::string_view error_text) noexcept;

// READONLY: a write reached a replica, so the node we hold as the primary
// was demoted: a failover is in progress or over. Ask the sentinels again.
bool is_readonly_error(std::string_view error_text) noexcept;

// The node cannot answer now but will soon: LOADING (loading its dataset
// after a restart), MASTERDOWN (a replica that lost its primary and does
// not serve stale data), TRYAGAIN (a multi-key command during a slot
// migration) and CLUSTERDOWN (the cluster lost a slot's primary or has not
// agreed yet). Retry after a short delay rather than count it an answer.
bool is_retry_later_error(std::string_view error_text) noexcept;

}  // namespace session::common
