#include "nginx/cache_zone.hpp"

#include <array>
#include <cstddef>
#include <cstring>
#include <new>

#include <openssl/rand.h>

#include "core/flat_record.hpp"
#include "core/overlay.hpp"
#include "core/token.hpp"

#include "nginx/conf.hpp"

namespace session::ngx {
namespace {

using Digest = std::array<unsigned char, 32>;

constexpr ngx_msec_t kLruMoveInterval = 1000;  // see copy_out()

// What an entry's digest is a digest of: keeps the namespaces apart even if
// two digests computed differently were ever equal.
enum KeyKind : u_char { kOpaqueKey = 0, kOverlayKey = 1, kClaimsKey = 2, kBetterAuthKey = 3 };

// Everything below lives in shared memory: plain data, and pointers only
// into this zone, which is mapped at the same address in every worker
// (before fork()).

// The entries of one user (JWT overlay entries by `sub`, opaque sessions by
// their `user_id`), so that a user revocation visits only those. A node
// lives exactly as long as it has entries: the zone's own LRU bounds them.
struct UserNode {
    ngx_rbtree_node_t node;  // key: the digest's first bytes
    ngx_queue_t entries;     // Entry::by_user
    u_char digest[32];       // keyed digest of the user id
};

// What a hit reads comes first (the tree key, kind and digest in the first
// two cache lines, then the times and the record); the lists after.
struct Entry {
    ngx_rbtree_node_t node;  // key: the digest's first bytes
    u_char kind;             // KeyKind
    u_char negative;
    std::uint32_t flat_len;
    // A keyed digest of the key, never the key itself: a token costs the
    // same whatever its length, and the zone holds no credential.
    u_char digest[32];
    ngx_msec_t fresh_until;  // ngx_current_msec (monotonic, shared by workers)
    ngx_msec_t stale_until;
    ngx_msec_t used_at;   // last moved to the head of its LRU queue
    ngx_queue_t lru;      // in CacheShared::lru or ::negative_lru
    ngx_queue_t by_user;  // in user->entries when user != nullptr
    UserNode* user;
    std::uint32_t charge;  // bytes counted in negative_bytes; 0 if positive
    u_char flat[1];
};

struct CacheShared {
    ngx_rbtree_t rbtree;  // of Entry
    ngx_rbtree_node_t sentinel;
    ngx_rbtree_t users;  // of UserNode
    ngx_rbtree_node_t users_sentinel;
    ngx_queue_t lru;           // positive entries, most recently used first
    ngx_queue_t negative_lru;  // entries for sessions that do not exist
    // Negative entries cost what anyone can make them cost (any random
    // token): they get a bounded share of the zone and evict each other,
    // never a positive entry.
    std::size_t negative_bytes;
    std::size_t negative_budget;
    ngx_atomic_t generation;  // revocations applied; see cache_generation()
    // Drawn when the zone is created, kept across reloads: every worker of
    // every cycle computes the same digests, and nobody outside can aim
    // keys at one tree node.
    u_char secret[32];
    // Of the Redis the entries were read from (address, db, prefix): a
    // reload that points elsewhere must not serve them.
    u_char redis_fingerprint[32];
    // A direct-mapped index in front of the tree, by the tree key: a hit
    // touches one slot and the entry instead of a node per tree level (each
    // a cache and TLB miss in a large zone). A slot may be empty or hold
    // another entry: the tree remains the truth, and delete_locked() clears
    // the slot of an entry it frees.
    Entry** hint;
    ngx_rbtree_key_t hint_mask;
};

// Per cycle, in the configuration pool; zone->data points here.
struct CacheZone {
    CacheShared* sh;
    ngx_slab_pool_t* shpool;
    ngx_str_t name;
    ngx_msec_t ttl;
    ngx_msec_t negative_ttl;
    ngx_msec_t stale;
    const MainConf* main;      // this cycle's, read once its configuration is complete
    Digest secret;             // copies of the shared secret, read without the lock
    Digest user_secret;        // derived from it, for user ids
    Digest redis_fingerprint;  // this cycle's session_redis
};

struct EntryKey {
    Digest digest;
    u_char kind = kOpaqueKey;
    bool usable = false;  // false: OpenSSL failed, the key cannot be looked up
};

EntryKey key_of(const CacheZone* z, std::string_view key) noexcept {
    EntryKey k;
    if (key.size() == 1 + k.digest.size() && key.front() == kClaimsKeyTag) {
        // Already a SHA-256 digest of the token's signature (jwt_access.cpp).
        k.kind = kClaimsKey;
        ngx_memcpy(k.digest.data(), key.data() + 1, k.digest.size());
        k.usable = true;
        return k;
    }
    k.kind = key.empty()                        ? kOpaqueKey
             : key.front() == kOverlayKeyTag    ? kOverlayKey
             : key.front() == kBetterAuthKeyTag ? kBetterAuthKey
                                                : kOpaqueKey;
    // SHA-256 over the zone's secret then the key: a keyed digest (no
    // length extension matters, digests never leave the zone).
    k.usable = core::token_digest(z->secret, key, k.digest);
    return k;
}

bool user_digest(const CacheZone* z, std::string_view user_id, Digest& out) noexcept {
    return core::token_digest(z->user_secret, user_id, out);
}

ngx_rbtree_key_t tree_key(const u_char* digest) noexcept {
    ngx_rbtree_key_t key;
    ngx_memcpy(&key, digest, sizeof(key));
    return key;
}

int compare(u_char kind, const u_char* digest, const Entry* e) noexcept {
    if (kind != e->kind) {
        return kind < e->kind ? -1 : 1;
    }
    return ngx_memcmp(digest, e->digest, sizeof(e->digest));
}

bool msec_reached(ngx_msec_t now, ngx_msec_t deadline) noexcept {
    return static_cast<ngx_msec_int_t>(now - deadline) >= 0;
}

// The insert of both trees: ties on the tree key are broken by the whole
// digest (and the kind, for entries).
template <typename Node, int (*Less)(const Node*, const Node*)>
void insert_by_digest(ngx_rbtree_node_t* temp, ngx_rbtree_node_t* node,
                      ngx_rbtree_node_t* sentinel) noexcept {
    for (;;) {
        ngx_rbtree_node_t** p;
        if (node->key != temp->key) {
            p = (node->key < temp->key) ? &temp->left : &temp->right;
        } else {
            p = Less(reinterpret_cast<Node*>(node), reinterpret_cast<Node*>(temp)) ? &temp->left
                                                                                   : &temp->right;
        }
        if (*p == sentinel) {
            *p = node;
            break;
        }
        temp = *p;
    }
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}

int entry_less(const Entry* a, const Entry* b) noexcept {
    return compare(a->kind, a->digest, b) < 0;
}

int user_less(const UserNode* a, const UserNode* b) noexcept {
    return ngx_memcmp(a->digest, b->digest, sizeof(a->digest)) < 0;
}

Entry** hint_slot(CacheZone* z, ngx_rbtree_key_t hash) noexcept {
    return &z->sh->hint[hash & z->sh->hint_mask];
}

Entry* find_locked(CacheZone* z, const EntryKey& key) noexcept {
    ngx_rbtree_key_t hash = tree_key(key.digest.data());
    Entry** slot = hint_slot(z, hash);
    if (Entry* e = *slot;
        e != nullptr && e->node.key == hash && compare(key.kind, key.digest.data(), e) == 0) {
        return e;
    }
    ngx_rbtree_node_t* node = z->sh->rbtree.root;
    ngx_rbtree_node_t* sentinel = z->sh->rbtree.sentinel;
    while (node != sentinel) {
        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }
        auto* e = reinterpret_cast<Entry*>(node);
        int cmp = compare(key.kind, key.digest.data(), e);
        if (cmp == 0) {
            *slot = e;
            return e;
        }
        node = (cmp < 0) ? node->left : node->right;
    }
    return nullptr;
}

UserNode* find_user_locked(CacheZone* z, const Digest& digest) noexcept {
    ngx_rbtree_key_t hash = tree_key(digest.data());
    ngx_rbtree_node_t* node = z->sh->users.root;
    ngx_rbtree_node_t* sentinel = z->sh->users.sentinel;
    while (node != sentinel) {
        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }
        auto* u = reinterpret_cast<UserNode*>(node);
        int cmp = ngx_memcmp(digest.data(), u->digest, digest.size());
        if (cmp == 0) {
            return u;
        }
        node = (cmp < 0) ? node->left : node->right;
    }
    return nullptr;
}

void delete_locked(CacheZone* z, Entry* e) noexcept {
    if (Entry** slot = hint_slot(z, e->node.key); *slot == e) {
        *slot = nullptr;
    }
    ngx_queue_remove(&e->lru);
    ngx_rbtree_delete(&z->sh->rbtree, &e->node);
    z->sh->negative_bytes -= e->charge;
    if (UserNode* u = e->user; u != nullptr) {
        ngx_queue_remove(&e->by_user);
        if (ngx_queue_empty(&u->entries)) {
            ngx_rbtree_delete(&z->sh->users, &u->node);
            ngx_slab_free_locked(z->shpool, u);
        }
    }
    ngx_slab_free_locked(z->shpool, e);
}

void delete_all_locked(CacheZone* z) noexcept {
    for (ngx_queue_t* queue : {&z->sh->lru, &z->sh->negative_lru}) {
        while (!ngx_queue_empty(queue)) {
            delete_locked(z, ngx_queue_data(ngx_queue_last(queue), Entry, lru));
        }
    }
}

// Frees entries past their stale window from the tail of `queue`.
void expire_locked(CacheZone* z, ngx_queue_t* queue, ngx_uint_t max) noexcept {
    ngx_msec_t now = ngx_current_msec;
    for (ngx_uint_t n = 0; n < max && !ngx_queue_empty(queue); ++n) {
        Entry* e = ngx_queue_data(ngx_queue_last(queue), Entry, lru);
        if (!msec_reached(now, e->stale_until)) {
            return;
        }
        delete_locked(z, e);
    }
}

void expire_some_locked(CacheZone* z) noexcept {
    expire_locked(z, &z->sh->lru, 2);
    expire_locked(z, &z->sh->negative_lru, 2);
}

// Frees the least recently used entry of `queue` whatever its age.
bool evict_locked(CacheZone* z, ngx_queue_t* queue) noexcept {
    if (ngx_queue_empty(queue)) {
        return false;
    }
    delete_locked(z, ngx_queue_data(ngx_queue_last(queue), Entry, lru));
    return true;
}

// What the slab allocator takes for `size` bytes (powers of two up to half
// a page, whole pages above), so that the negative share is counted in
// what it really costs.
std::size_t slab_charge(std::size_t size) noexcept {
    if (size > ngx_pagesize / 2) {
        return (size + ngx_pagesize - 1) / ngx_pagesize * ngx_pagesize;
    }
    std::size_t charge = 8;
    while (charge < size) {
        charge <<= 1;
    }
    return charge;
}

// A positive entry evicts positive entries (then negative ones when there
// is no positive entry left); a negative entry only negative ones, first
// to stay within its share.
void* alloc_locked(CacheZone* z, std::size_t size, bool negative) noexcept {
    CacheShared* sh = z->sh;
    if (negative) {
        std::size_t charge = slab_charge(size);
        if (charge > sh->negative_budget) {
            return nullptr;
        }
        while (sh->negative_bytes + charge > sh->negative_budget &&
               evict_locked(z, &sh->negative_lru)) {
        }
    }
    void* mem = ngx_slab_alloc_locked(z->shpool, size);
    for (int attempt = 0; mem == nullptr && attempt < 8; ++attempt) {
        bool evicted = negative ? evict_locked(z, &sh->negative_lru)
                                : evict_locked(z, &sh->lru) || evict_locked(z, &sh->negative_lru);
        if (!evicted) {
            break;
        }
        mem = ngx_slab_alloc_locked(z->shpool, size);
    }
    return mem;
}

UserNode* user_node_locked(CacheZone* z, const Digest& digest) noexcept {
    if (UserNode* u = find_user_locked(z, digest); u != nullptr) {
        return u;
    }
    auto* u = static_cast<UserNode*>(alloc_locked(z, sizeof(UserNode), false));
    if (u == nullptr) {
        return nullptr;
    }
    ngx_memcpy(u->digest, digest.data(), digest.size());
    ngx_queue_init(&u->entries);
    u->node.key = tree_key(u->digest);
    ngx_rbtree_insert(&z->sh->users, &u->node);
    return u;
}

// `user`: the digest of the entry's user id, or nullptr when it has none.
void store_locked(CacheZone* z, const EntryKey& key, const Digest* user, const unsigned char* flat,
                  std::size_t flat_len, bool negative, ngx_msec_t fresh_until,
                  ngx_msec_t stale_until) noexcept {
    std::size_t size = offsetof(Entry, flat) + flat_len;
    auto* e = static_cast<Entry*>(alloc_locked(z, size, negative));
    if (e == nullptr) {
        return;
    }
    // After the entry's allocation, whose evictions may free user nodes.
    // An entry whose user cannot be indexed is not stored: a revocation of
    // that user would not find it.
    e->user = nullptr;
    if (user != nullptr) {
        e->user = user_node_locked(z, *user);
        if (e->user == nullptr) {
            ngx_slab_free_locked(z->shpool, e);
            return;
        }
        ngx_queue_insert_tail(&e->user->entries, &e->by_user);
    }
    e->fresh_until = fresh_until;
    e->stale_until = stale_until;
    e->used_at = ngx_current_msec;
    e->flat_len = static_cast<std::uint32_t>(flat_len);
    e->charge = negative ? static_cast<std::uint32_t>(slab_charge(size)) : 0;
    e->kind = key.kind;
    e->negative = negative;
    ngx_memcpy(e->digest, key.digest.data(), key.digest.size());
    ngx_memcpy(e->flat, flat, flat_len);
    e->node.key = tree_key(e->digest);
    ngx_rbtree_insert(&z->sh->rbtree, &e->node);
    *hint_slot(z, e->node.key) = e;
    ngx_queue_insert_head(negative ? &z->sh->negative_lru : &z->sh->lru, &e->lru);
    z->sh->negative_bytes += e->charge;
}

// The user an entry belongs to, decoded before the lock is taken: the
// subject of a JWT overlay entry, the user_id of an opaque session.
// Negative and claims entries have none (nothing to revoke by user).
bool user_of(const CacheZone* z, const EntryKey& key, const unsigned char* flat,
             std::size_t flat_len, bool negative, Digest& out) noexcept {
    std::string_view user_id;
    if (negative || key.kind == kClaimsKey) {
        return false;
    }
    if (key.kind == kOverlayKey) {
        if (!core::overlay_flat_subject(flat, flat_len, user_id)) return false;
    } else if (key.kind == kBetterAuthKey) {
        // The subject is the session id; the user is the record's.
        std::string_view session_id;
        core::LookupRecord record;
        if (!core::overlay_flat_decode(flat, flat_len, session_id, record)) return false;
        auto id = record.get(core::SessionField::user_id);
        if (!id) return false;
        user_id = *id;
    } else {
        core::LookupRecord record;
        if (!core::flat_decode(flat, flat_len, record)) return false;
        auto id = record.get(core::SessionField::user_id);
        if (!id) return false;
        user_id = *id;
    }
    return !user_id.empty() && user_digest(z, user_id, out);
}

Digest redis_fingerprint(const RedisConf& redis) noexcept {
    // Chained rather than concatenated: each piece is hashed on its own
    // after the previous digest, so no two configurations run together.
    Digest fp{};
    u_char number[2 * NGX_INT_T_LEN + 2];
    u_char* end = ngx_sprintf(number, "%i %i", redis.port, redis.db);
    std::string_view pieces[] = {
        to_view(redis.host),
        to_view(redis.unix_path),
        to_view(redis.prefix),
        {reinterpret_cast<char*>(number), static_cast<std::size_t>(end - number)}};
    for (std::string_view piece : pieces) {
        Digest next;
        if (!core::token_digest(fp, piece, next)) {
            return Digest{};
        }
        fp = next;
    }
    return fp;
}

// Whether this cycle's session_redis is the one the entries came from.
bool same_redis_locked(const CacheZone* z) noexcept {
    return ngx_memcmp(z->sh->redis_fingerprint, z->redis_fingerprint.data(),
                      z->redis_fingerprint.size()) == 0;
}

ngx_int_t init_shared(ngx_shm_zone_t* shm_zone, CacheZone* z) noexcept {
    z->sh = static_cast<CacheShared*>(ngx_slab_calloc(z->shpool, sizeof(CacheShared)));
    if (z->sh == nullptr) {
        return NGX_ERROR;
    }
    z->shpool->data = z->sh;
    ngx_rbtree_init(&z->sh->rbtree, &z->sh->sentinel, (insert_by_digest<Entry, entry_less>));
    ngx_rbtree_init(&z->sh->users, &z->sh->users_sentinel, (insert_by_digest<UserNode, user_less>));
    ngx_queue_init(&z->sh->lru);
    ngx_queue_init(&z->sh->negative_lru);
    z->sh->negative_budget = shm_zone->shm.size / 8;
    // A slot per 256 bytes of zone (about an entry's size, so that most
    // entries have a slot of their own), a power of two: 1/32 of the zone.
    std::size_t slots = 1;
    while (slots * 2 <= shm_zone->shm.size / 256) {
        slots *= 2;
    }
    z->sh->hint = static_cast<Entry**>(ngx_slab_calloc(z->shpool, slots * sizeof(Entry*)));
    if (z->sh->hint == nullptr) {
        return NGX_ERROR;
    }
    z->sh->hint_mask = slots - 1;
    if (RAND_bytes(z->sh->secret, sizeof(z->sh->secret)) != 1) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "session_cache_zone \"%V\": RAND_bytes() failed", &z->name);
        return NGX_ERROR;
    }
    ngx_memcpy(z->sh->redis_fingerprint, z->redis_fingerprint.data(), z->redis_fingerprint.size());

    static const char kLogCtx[] = " in session_cache_zone \"";
    std::size_t len = sizeof(kLogCtx) - 1 + z->name.len + 2;
    z->shpool->log_ctx = static_cast<u_char*>(ngx_slab_alloc(z->shpool, len));
    if (z->shpool->log_ctx == nullptr) {
        return NGX_ERROR;
    }
    ngx_sprintf(z->shpool->log_ctx, " in session_cache_zone \"%V\"%Z", &z->name);
    z->shpool->log_nomem = 0;  // a full cache evicts; not worth a log line
    return NGX_OK;
}

ngx_int_t init_zone(ngx_shm_zone_t* shm_zone, void* old_data) noexcept {
    auto* z = static_cast<CacheZone*>(shm_zone->data);
    // The whole configuration is parsed by now, wherever session_redis
    // stood relative to this zone's directive.
    z->redis_fingerprint = redis_fingerprint(z->main->redis);
    if (old_data != nullptr) {
        auto* old = static_cast<CacheZone*>(old_data);
        z->sh = old->sh;  // reload: keep the entries
        z->shpool = old->shpool;
    } else {
        z->shpool = reinterpret_cast<ngx_slab_pool_t*>(shm_zone->shm.addr);
        if (!shm_zone->shm.exists) {
            if (init_shared(shm_zone, z) != NGX_OK) {
                return NGX_ERROR;
            }
        }
        z->sh = static_cast<CacheShared*>(z->shpool->data);
    }
    ngx_memcpy(z->secret.data(), z->sh->secret, z->secret.size());
    static constexpr std::string_view kUserKeys = "user ids";
    if (!core::token_digest(z->secret, kUserKeys, z->user_secret)) {
        return NGX_ERROR;
    }

    ngx_shmtx_lock(&z->shpool->mutex);
    if (!same_redis_locked(z)) {
        // Another Redis (address, db or prefix): what the old one said
        // about a token is no answer here, not even a stale one. Old
        // workers still finishing requests store nothing more (cache_put
        // compares the fingerprint), and their lookups in flight were
        // noted before this generation.
        ++z->sh->generation;
        delete_all_locked(z);
        ngx_memcpy(z->sh->redis_fingerprint, z->redis_fingerprint.data(),
                   z->redis_fingerprint.size());
        ngx_log_error(NGX_LOG_NOTICE, shm_zone->shm.log, 0,
                      "session_cache_zone \"%V\" emptied: session_redis changed", &z->name);
    }
    ngx_shmtx_unlock(&z->shpool->mutex);
    return NGX_OK;
}

bool parse_msec_param(ngx_str_t* value, std::size_t prefix_len, ngx_msec_t* out) noexcept {
    ngx_str_t s{value->len - prefix_len, value->data + prefix_len};
    ngx_int_t ms = ngx_parse_time(&s, 0);
    if (ms == NGX_ERROR) {
        return false;
    }
    *out = static_cast<ngx_msec_t>(ms);
    return true;
}

// Whether a session_cache_zone of this name was declared before (asked
// before ngx_shared_memory_add, whose own complaint about a second size
// would not name the directive).
bool zone_declared(ngx_conf_t* cf, const ngx_str_t& name) noexcept {
    for (ngx_list_part_t* part = &cf->cycle->shared_memory.part; part != nullptr;
         part = part->next) {
        auto* zones = static_cast<ngx_shm_zone_t*>(part->elts);
        for (ngx_uint_t i = 0; i < part->nelts; ++i) {
            if (zones[i].tag == &ngx_session_module && zones[i].data != nullptr &&
                to_view(zones[i].shm.name) == to_view(name) && zones[i].init == init_zone) {
                return true;
            }
        }
    }
    return false;
}

// Copies the entry of `key` into `buffer` (of *room bytes). When it does
// not fit, returns a miss with *room set to the size needed; *room is 0 for
// a real miss.
CacheRead copy_out(CacheZone* z, const EntryKey& key, unsigned char* buffer,
                   std::size_t* room) noexcept {
    CacheRead out;
    ngx_msec_t now = ngx_current_msec;
    std::size_t needed = 0;

    ngx_shmtx_lock(&z->shpool->mutex);
    Entry* e = find_locked(z, key);
    if (e != nullptr && msec_reached(now, e->stale_until)) {
        delete_locked(z, e);
        e = nullptr;
    }
    if (e != nullptr && e->flat_len > *room) {
        needed = e->flat_len;
    } else if (e != nullptr) {
        ngx_memcpy(buffer, e->flat, e->flat_len);
        out.flat = buffer;
        out.flat_len = e->flat_len;
        out.state = msec_reached(now, e->fresh_until) ? CacheState::stale : CacheState::fresh;
        // Moving an entry writes to both its neighbours in the queue (two
        // more cache lines anywhere in the zone, which other workers then
        // lose): an entry in use moves at most once a second, so the queue
        // orders entries by their use to within a second.
        if (msec_reached(now, e->used_at + kLruMoveInterval)) {
            e->used_at = now;
            ngx_queue_remove(&e->lru);
            ngx_queue_insert_head(e->negative ? &z->sh->negative_lru : &z->sh->lru, &e->lru);
        }
    }
    ngx_shmtx_unlock(&z->shpool->mutex);
    *room = needed;
    return out;
}

// Stores `key`'s record; the caller holds the lock and has checked the
// generation.
void put_locked(CacheZone* z, const EntryKey& key, const Digest* user, const unsigned char* flat,
                std::size_t flat_len, bool negative, ngx_msec_t fresh_until,
                ngx_msec_t stale_until) noexcept {
    expire_some_locked(z);
    if (Entry* old = find_locked(z, key); old != nullptr) {
        delete_locked(z, old);
    }
    store_locked(z, key, user, flat, flat_len, negative, fresh_until, stale_until);
}

}  // namespace

char* cache_zone_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept {
    auto* value = static_cast<ngx_str_t*>(cf->args->elts);

    u_char* colon =
        static_cast<u_char*>(ngx_strlchr(value[1].data, value[1].data + value[1].len, ':'));
    if (colon == nullptr || colon == value[1].data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone \"%V\" in \"%V\" directive, it must be NAME:SIZE",
                           &value[1], &cmd->name);
        return static_cast<char*>(NGX_CONF_ERROR);
    }
    ngx_str_t name{static_cast<size_t>(colon - value[1].data), value[1].data};
    ngx_str_t size_text{value[1].len - name.len - 1, colon + 1};
    ssize_t size = ngx_parse_size(&size_text);
    if (size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid zone size \"%V\" in \"%V\" directive",
                           &value[1], &cmd->name);
        return static_cast<char*>(NGX_CONF_ERROR);
    }
    if (size < static_cast<ssize_t>(8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "session_cache_zone \"%V\" is too small, it must be at least %uz",
                           &value[1], static_cast<size_t>(8 * ngx_pagesize));
        return static_cast<char*>(NGX_CONF_ERROR);
    }

    auto* z = static_cast<CacheZone*>(ngx_pcalloc(cf->pool, sizeof(CacheZone)));
    if (z == nullptr) {
        return static_cast<char*>(NGX_CONF_ERROR);
    }
    z->name = name;
    z->ttl = 5000;
    z->negative_ttl = 1000;
    z->stale = 0;

    for (ngx_uint_t i = 2; i < cf->args->nelts; ++i) {
        std::string_view arg = to_view(value[i]);
        bool ok;
        if (arg.rfind("ttl=", 0) == 0) {
            ok = parse_msec_param(&value[i], 4, &z->ttl) && z->ttl > 0;
        } else if (arg.rfind("negative_ttl=", 0) == 0) {
            ok = parse_msec_param(&value[i], 13, &z->negative_ttl);
        } else if (arg.rfind("stale=", 0) == 0) {
            ok = parse_msec_param(&value[i], 6, &z->stale);
        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\" in \"%V\" directive",
                               &value[i], &cmd->name);
            return static_cast<char*>(NGX_CONF_ERROR);
        }
        if (!ok) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid value \"%V\" in \"%V\" directive",
                               &value[i], &cmd->name);
            return static_cast<char*>(NGX_CONF_ERROR);
        }
    }

    if (zone_declared(cf, name)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "duplicate zone \"%V\" in \"%V\" directive", &name,
                           &cmd->name);
        return static_cast<char*>(NGX_CONF_ERROR);
    }
    ngx_shm_zone_t* shm_zone = ngx_shared_memory_add(cf, &name, size, &ngx_session_module);
    if (shm_zone == nullptr) {
        return static_cast<char*>(NGX_CONF_ERROR);
    }
    if (shm_zone->data != nullptr) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "duplicate zone \"%V\" in \"%V\" directive", &name,
                           &cmd->name);
        return static_cast<char*>(NGX_CONF_ERROR);
    }
    auto* mcf = static_cast<MainConf*>(conf);
    z->main = mcf;
    shm_zone->init = init_zone;
    shm_zone->data = z;

    if (mcf->cache_zones == nullptr) {
        mcf->cache_zones = ngx_array_create(cf->pool, 2, sizeof(ngx_shm_zone_t*));
        if (mcf->cache_zones == nullptr) {
            return static_cast<char*>(NGX_CONF_ERROR);
        }
    }
    auto** slot = static_cast<ngx_shm_zone_t**>(ngx_array_push(mcf->cache_zones));
    if (slot == nullptr) {
        return static_cast<char*>(NGX_CONF_ERROR);
    }
    *slot = shm_zone;
    return NGX_CONF_OK;
}

CacheRead cache_get(ngx_shm_zone_t* zone, std::string_view token, ngx_pool_t* pool) noexcept {
    auto* z = static_cast<CacheZone*>(zone->data);
    EntryKey key = key_of(z, token);
    if (!key.usable) {
        return {};
    }
    // The lock is shared by all workers: never held across an allocation.
    // A typical entry is copied to the stack under the lock, then to the
    // pool; a larger one costs a second, sized attempt.
    unsigned char stack[1024];
    std::size_t room = sizeof(stack);
    CacheRead out = copy_out(z, key, stack, &room);
    if (out.state != CacheState::miss) {
        auto* copy = static_cast<unsigned char*>(ngx_pnalloc(pool, out.flat_len + 1));
        if (copy == nullptr) {
            return {};
        }
        ngx_memcpy(copy, stack, out.flat_len);
        out.flat = copy;
        return out;
    }
    if (room == 0) {
        return out;  // a real miss
    }
    auto* copy = static_cast<unsigned char*>(ngx_pnalloc(pool, room));
    if (copy == nullptr) {
        return {};
    }
    out = copy_out(z, key, copy, &room);
    return out.state != CacheState::miss ? out : CacheRead{};
}

ngx_atomic_uint_t cache_generation(ngx_shm_zone_t* zone) noexcept {
    return static_cast<CacheZone*>(zone->data)->sh->generation;
}

void cache_put(ngx_shm_zone_t* zone, std::string_view token, const unsigned char* flat,
               std::size_t flat_len, bool negative, ngx_atomic_uint_t generation) noexcept {
    auto* z = static_cast<CacheZone*>(zone->data);
    ngx_msec_t ttl = negative ? z->negative_ttl : z->ttl;
    if (ttl == 0) {
        return;
    }
    EntryKey key = key_of(z, token);
    Digest user;
    bool has_user = user_of(z, key, flat, flat_len, negative, user);
    if (!key.usable) {
        return;
    }
    ngx_msec_t now = ngx_current_msec;

    ngx_shmtx_lock(&z->shpool->mutex);
    if (z->sh->generation == generation && same_redis_locked(z)) {
        put_locked(z, key, has_user ? &user : nullptr, flat, flat_len, negative, now + ttl,
                   now + ttl + z->stale);
    }
    ngx_shmtx_unlock(&z->shpool->mutex);
}

void cache_replace_keep_expiry(ngx_shm_zone_t* zone, std::string_view token,
                               const unsigned char* flat, std::size_t flat_len,
                               ngx_atomic_uint_t generation) noexcept {
    auto* z = static_cast<CacheZone*>(zone->data);
    EntryKey key = key_of(z, token);
    Digest user;
    bool has_user = user_of(z, key, flat, flat_len, false, user);
    if (!key.usable) {
        return;
    }

    ngx_shmtx_lock(&z->shpool->mutex);
    Entry* old =
        z->sh->generation == generation && same_redis_locked(z) ? find_locked(z, key) : nullptr;
    if (old != nullptr) {
        ngx_msec_t fresh_until = old->fresh_until;
        ngx_msec_t stale_until = old->stale_until;
        bool negative = old->negative;
        delete_locked(z, old);
        store_locked(z, key, has_user && !negative ? &user : nullptr, flat, flat_len, negative,
                     fresh_until, stale_until);
    }
    ngx_shmtx_unlock(&z->shpool->mutex);
}

void cache_put_for(ngx_shm_zone_t* zone, std::string_view key, const unsigned char* flat,
                   std::size_t flat_len, ngx_msec_t ttl_ms) noexcept {
    auto* z = static_cast<CacheZone*>(zone->data);
    if (ttl_ms == 0) {
        return;
    }
    EntryKey k = key_of(z, key);
    if (!k.usable) {
        return;
    }
    ngx_msec_t now = ngx_current_msec;

    ngx_shmtx_lock(&z->shpool->mutex);
    put_locked(z, k, nullptr, flat, flat_len, false, now + ttl_ms, now + ttl_ms);
    ngx_shmtx_unlock(&z->shpool->mutex);
}

void cache_remove(ngx_shm_zone_t* zone, std::string_view token) noexcept {
    auto* z = static_cast<CacheZone*>(zone->data);
    // Revocation ids are valid tokens (core::parse_revocation): bounded.
    u_char overlay_key[1 + core::kMaxTokenLength];
    std::size_t overlay_len = 0;
    if (token.size() <= core::kMaxTokenLength) {
        overlay_key[0] = kOverlayKeyTag;
        ngx_memcpy(overlay_key + 1, token.data(), token.size());
        overlay_len = 1 + token.size();
    }
    EntryKey opaque = key_of(z, token);
    EntryKey overlay = key_of(z, {reinterpret_cast<char*>(overlay_key), overlay_len});
    if (!opaque.usable || !overlay.usable || overlay_len == 0) {
        cache_expire_all(zone);  // cannot find the entry: trust none
        return;
    }

    ngx_shmtx_lock(&z->shpool->mutex);
    ++z->sh->generation;
    for (const EntryKey* key : {&opaque, &overlay}) {
        if (Entry* e = find_locked(z, *key); e != nullptr) {
            delete_locked(z, e);
        }
    }
    ngx_shmtx_unlock(&z->shpool->mutex);
}

void cache_expire_all(ngx_shm_zone_t* zone) noexcept {
    auto* z = static_cast<CacheZone*>(zone->data);
    ngx_msec_t now = ngx_current_msec;
    ngx_shmtx_lock(&z->shpool->mutex);
    // A lookup in flight may hold an answer older than what was missed.
    ++z->sh->generation;
    for (ngx_queue_t* queue : {&z->sh->lru, &z->sh->negative_lru}) {
        for (ngx_queue_t* q = ngx_queue_head(queue); q != ngx_queue_sentinel(queue);
             q = ngx_queue_next(q)) {
            Entry* e = ngx_queue_data(q, Entry, lru);
            if (!msec_reached(now, e->fresh_until)) e->fresh_until = now;
        }
    }
    ngx_shmtx_unlock(&z->shpool->mutex);
}

void cache_remove_user(ngx_shm_zone_t* zone, std::string_view user_id) noexcept {
    auto* z = static_cast<CacheZone*>(zone->data);
    Digest digest;
    if (!user_digest(z, user_id, digest)) {
        cache_expire_all(zone);  // cannot find the user's entries: trust none
        return;
    }
    ngx_shmtx_lock(&z->shpool->mutex);
    ++z->sh->generation;
    if (UserNode* u = find_user_locked(z, digest); u != nullptr) {
        // The node is freed with its last entry.
        for (bool last = false; !last;) {
            ngx_queue_t* q = ngx_queue_head(&u->entries);
            last = ngx_queue_next(q) == ngx_queue_sentinel(&u->entries);
            delete_locked(z, ngx_queue_data(q, Entry, by_user));
        }
    }
    ngx_shmtx_unlock(&z->shpool->mutex);
}

}  // namespace session::ngx
