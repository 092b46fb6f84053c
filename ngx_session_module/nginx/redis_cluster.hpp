// cluster://: the per-worker Redis link for Redis Cluster. The slot map
// comes from CLUSTER SLOTS asked of a seed node (the next seed, then any
// known primary, when one fails); each primary gets a connection of its own
// (a redis_link_impl.hpp Link with the usual handshake, opened on first
// use); every read goes to the primary of its key's slot. MOVED: counted,
// the map refreshed (one refresh at a time), the command sent once more to
// the node named. ASK: counted, ASKING then the command on the node named,
// once. A redirection never reaches the access handler as an answer: a
// second one, or one that cannot be followed, is a connection failure.
// The JWT overlay's two HMGETs go to their two shards at once. The
// revocation channel is one Link SUBSCRIBEd on one node (PUBLISH in a
// cluster reaches every node's subscribers), moving to the next node
// whenever it reconnects.
//
// Used by redis_link.cpp and redis_lookups.cpp only; the slot logic is
// common/redis_topology.hpp's.
#pragma once

#include "nginx/redis_link.hpp"

#include <cstdint>
#include <string_view>

namespace session::ngx {

struct SentinelPrimary;

namespace link_detail {

class Cluster;
class Link;
inline Cluster* g_cluster = nullptr;  // set between cluster_start and cluster_stop

// Which fields an HMGET of a cluster lookup reads.
enum class FieldSet : std::uint8_t {
    session_read,  // core::kSessionReadFieldNames (the opaque check)
    user,          // core::kUserFieldNames
    session,       // core::kSessionFieldNames (the overlay's session half)
    string,        // not an HMGET: GET of a STRING (session_jwt_keys redis)
};

// From Link: a node's lookup connection was lost or could not be opened:
// refresh the map while the map still names it as a primary.
void cluster_node_lost(const SentinelPrimary& node) noexcept;
// From Link: where the revocation channel goes next. false: stay.
bool cluster_next_channel_node(SentinelPrimary* next) noexcept;
// From Link: an error reply that is not sent again (a touch): a MOVED or
// ASK is still counted, and a MOVED refreshes the map. `node_host`: the
// node that answered (NUL-terminated), for a redirection without a host.
void cluster_note_redirect(const char* node_host, const redisReply* reply) noexcept;

}  // namespace link_detail

// redis_start / redis_stop for cluster://.
void cluster_start(ngx_cycle_t* cycle, const MainConf* conf, RevocationHandler on_revocation,
                   ResubscribeHandler on_resubscribe) noexcept;
void cluster_stop() noexcept;

// redis_lookup / redis_lookup_user (`first` set) / redis_overlay /
// redis_touch, routed by slot; same contracts as in redis_link.hpp.
Lookup* cluster_lookup(std::string_view key, link_detail::FieldSet fields, Lookup* first,
                       void* owner, LookupDone done) noexcept;
Lookup* cluster_overlay(std::string_view session_key, std::string_view user_key, void* owner,
                        OverlayDone done) noexcept;
void cluster_touch(std::string_view session_key, std::int64_t now_ms,
                   std::int64_t interval_ms) noexcept;

}  // namespace session::ngx
