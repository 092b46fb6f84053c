#include "nginx/cache_zone.hpp"

#include <cstddef>
#include <new>

#include "core/flat_record.hpp"
#include "core/token.hpp"

#include "nginx/conf.hpp"

namespace session::ngx {
namespace {

// Everything below lives in shared memory: plain data, offsets valid in
// every worker because the zone is mapped before fork().
struct Entry {
    ngx_queue_t lru;
    ngx_msec_t fresh_until;  // ngx_current_msec (monotonic, shared by workers)
    ngx_msec_t stale_until;
    std::uint32_t token_len;
    std::uint32_t flat_len;
    u_char data[1];  // token, then flat record
};

struct CacheShared {
    ngx_rbtree_t rbtree;
    ngx_rbtree_node_t sentinel;
    ngx_queue_t lru;          // most recently used first
    ngx_atomic_t generation;  // revocations applied; see cache_generation()
};

// Per cycle, in the configuration pool; zone->data points here.
struct CacheZone {
    CacheShared* sh;
    ngx_slab_pool_t* shpool;
    ngx_str_t name;
    ngx_msec_t ttl;
    ngx_msec_t negative_ttl;
    ngx_msec_t stale;
};

Entry* entry_of(ngx_rbtree_node_t* node) noexcept {
    return reinterpret_cast<Entry*>(node + 1);
}

ngx_rbtree_node_t* node_of(Entry* entry) noexcept {
    return reinterpret_cast<ngx_rbtree_node_t*>(entry) - 1;
}

std::string_view token_of(const Entry* e) noexcept {
    return {reinterpret_cast<const char*>(e->data), e->token_len};
}

bool msec_reached(ngx_msec_t now, ngx_msec_t deadline) noexcept {
    return static_cast<ngx_msec_int_t>(now - deadline) >= 0;
}

void insert_value(ngx_rbtree_node_t* temp, ngx_rbtree_node_t* node,
                  ngx_rbtree_node_t* sentinel) noexcept {
    for (;;) {
        ngx_rbtree_node_t** p;
        if (node->key != temp->key) {
            p = (node->key < temp->key) ? &temp->left : &temp->right;
        } else {
            p = (token_of(entry_of(node)) < token_of(entry_of(temp))) ? &temp->left : &temp->right;
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

Entry* find_locked(CacheZone* z, uint32_t hash, std::string_view token) noexcept {
    ngx_rbtree_node_t* node = z->sh->rbtree.root;
    ngx_rbtree_node_t* sentinel = z->sh->rbtree.sentinel;
    while (node != sentinel) {
        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }
        Entry* e = entry_of(node);
        int cmp = token.compare(token_of(e));
        if (cmp == 0) {
            return e;
        }
        node = (cmp < 0) ? node->left : node->right;
    }
    return nullptr;
}

void delete_locked(CacheZone* z, Entry* e) noexcept {
    ngx_queue_remove(&e->lru);
    ngx_rbtree_node_t* node = node_of(e);
    ngx_rbtree_delete(&z->sh->rbtree, node);
    ngx_slab_free_locked(z->shpool, node);
}

// Frees entries past their stale window from the LRU tail; with `force`,
// frees the least recently used entry whatever its age (out of memory).
void expire_locked(CacheZone* z, bool force, ngx_uint_t max) noexcept {
    ngx_msec_t now = ngx_current_msec;
    for (ngx_uint_t n = 0; n < max && !ngx_queue_empty(&z->sh->lru); ++n) {
        ngx_queue_t* q = ngx_queue_last(&z->sh->lru);
        Entry* e = ngx_queue_data(q, Entry, lru);
        if (!force && !msec_reached(now, e->stale_until)) {
            return;
        }
        force = false;
        delete_locked(z, e);
    }
}

Entry* alloc_locked(CacheZone* z, std::size_t token_len, std::size_t flat_len) noexcept {
    std::size_t size = sizeof(ngx_rbtree_node_t) + offsetof(Entry, data) + token_len + flat_len;
    void* mem = ngx_slab_alloc_locked(z->shpool, size);
    for (int attempt = 0; mem == nullptr && attempt < 8 && !ngx_queue_empty(&z->sh->lru);
         ++attempt) {
        expire_locked(z, true, 1);
        mem = ngx_slab_alloc_locked(z->shpool, size);
    }
    if (mem == nullptr) {
        return nullptr;
    }
    return entry_of(static_cast<ngx_rbtree_node_t*>(mem));
}

void store_locked(CacheZone* z, std::uint32_t hash, std::string_view token,
                  const unsigned char* flat, std::size_t flat_len, ngx_msec_t fresh_until,
                  ngx_msec_t stale_until) noexcept {
    Entry* e = alloc_locked(z, token.size(), flat_len);
    if (e == nullptr) {
        return;
    }
    e->fresh_until = fresh_until;
    e->stale_until = stale_until;
    e->token_len = static_cast<std::uint32_t>(token.size());
    e->flat_len = static_cast<std::uint32_t>(flat_len);
    ngx_memcpy(e->data, token.data(), token.size());
    ngx_memcpy(e->data + token.size(), flat, flat_len);
    ngx_rbtree_node_t* node = node_of(e);
    node->key = hash;
    ngx_rbtree_insert(&z->sh->rbtree, node);
    ngx_queue_insert_head(&z->sh->lru, &e->lru);
}

std::uint32_t hash_of(std::string_view token) noexcept {
    if (token.size() == 33 && token.front() == kClaimsKeyTag) {
        // Already a SHA-256 digest: its first bytes are as good a hash.
        std::uint32_t hash;
        ngx_memcpy(&hash, token.data() + 1, sizeof(hash));
        return hash;
    }
    return ngx_crc32_short(reinterpret_cast<u_char*>(const_cast<char*>(token.data())),
                           token.size());
}

ngx_int_t init_zone(ngx_shm_zone_t* shm_zone, void* old_data) noexcept {
    auto* z = static_cast<CacheZone*>(shm_zone->data);
    if (old_data != nullptr) {
        auto* old = static_cast<CacheZone*>(old_data);
        z->sh = old->sh;  // reload: keep the entries
        z->shpool = old->shpool;
        return NGX_OK;
    }
    z->shpool = reinterpret_cast<ngx_slab_pool_t*>(shm_zone->shm.addr);
    if (shm_zone->shm.exists) {
        z->sh = static_cast<CacheShared*>(z->shpool->data);
        return NGX_OK;
    }
    z->sh = static_cast<CacheShared*>(ngx_slab_alloc(z->shpool, sizeof(CacheShared)));
    if (z->sh == nullptr) {
        return NGX_ERROR;
    }
    z->shpool->data = z->sh;
    ngx_rbtree_init(&z->sh->rbtree, &z->sh->sentinel, insert_value);
    ngx_queue_init(&z->sh->lru);

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

// Copies the entry of `token` into `buffer` (of *room bytes). When it does
// not fit, returns a miss with *room set to the size needed; *room is 0 for
// a real miss.
CacheRead copy_out(ngx_shm_zone_t* zone, std::string_view token, unsigned char* buffer,
                   std::size_t* room) noexcept {
    CacheRead out;
    auto* z = static_cast<CacheZone*>(zone->data);
    std::uint32_t hash = hash_of(token);
    ngx_msec_t now = ngx_current_msec;
    std::size_t needed = 0;

    ngx_shmtx_lock(&z->shpool->mutex);
    Entry* e = find_locked(z, hash, token);
    if (e != nullptr && msec_reached(now, e->stale_until)) {
        delete_locked(z, e);
        e = nullptr;
    }
    if (e != nullptr && e->flat_len > *room) {
        needed = e->flat_len;
    } else if (e != nullptr) {
        ngx_memcpy(buffer, e->data + e->token_len, e->flat_len);
        out.flat = buffer;
        out.flat_len = e->flat_len;
        out.state = msec_reached(now, e->fresh_until) ? CacheState::stale : CacheState::fresh;
        ngx_queue_remove(&e->lru);
        ngx_queue_insert_head(&z->sh->lru, &e->lru);
    }
    ngx_shmtx_unlock(&z->shpool->mutex);
    *room = needed;
    return out;
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
    shm_zone->init = init_zone;
    shm_zone->data = z;

    auto* mcf = static_cast<MainConf*>(conf);
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
    // The lock is shared by all workers: never held across an allocation.
    // A typical entry is copied to the stack under the lock, then to the
    // pool; a larger one costs a second, sized attempt.
    unsigned char stack[1024];
    std::size_t room = sizeof(stack);
    CacheRead out = copy_out(zone, token, stack, &room);
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
    out = copy_out(zone, token, copy, &room);
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
    std::uint32_t hash = hash_of(token);
    ngx_msec_t now = ngx_current_msec;

    ngx_shmtx_lock(&z->shpool->mutex);
    if (z->sh->generation != generation) {
        ngx_shmtx_unlock(&z->shpool->mutex);
        return;
    }
    expire_locked(z, false, 2);
    if (Entry* old = find_locked(z, hash, token); old != nullptr) {
        delete_locked(z, old);
    }
    store_locked(z, hash, token, flat, flat_len, now + ttl, now + ttl + z->stale);
    ngx_shmtx_unlock(&z->shpool->mutex);
}

void cache_replace_keep_expiry(ngx_shm_zone_t* zone, std::string_view token,
                               const unsigned char* flat, std::size_t flat_len,
                               ngx_atomic_uint_t generation) noexcept {
    auto* z = static_cast<CacheZone*>(zone->data);
    std::uint32_t hash = hash_of(token);

    ngx_shmtx_lock(&z->shpool->mutex);
    Entry* old = z->sh->generation == generation ? find_locked(z, hash, token) : nullptr;
    if (old != nullptr) {
        ngx_msec_t fresh_until = old->fresh_until;
        ngx_msec_t stale_until = old->stale_until;
        delete_locked(z, old);
        store_locked(z, hash, token, flat, flat_len, fresh_until, stale_until);
    }
    ngx_shmtx_unlock(&z->shpool->mutex);
}

void cache_put_for(ngx_shm_zone_t* zone, std::string_view key, const unsigned char* flat,
                   std::size_t flat_len, ngx_msec_t ttl_ms) noexcept {
    auto* z = static_cast<CacheZone*>(zone->data);
    if (ttl_ms == 0) {
        return;
    }
    std::uint32_t hash = hash_of(key);
    ngx_msec_t now = ngx_current_msec;

    ngx_shmtx_lock(&z->shpool->mutex);
    expire_locked(z, false, 2);
    if (Entry* old = find_locked(z, hash, key); old != nullptr) {
        delete_locked(z, old);
    }
    store_locked(z, hash, key, flat, flat_len, now + ttl_ms, now + ttl_ms);
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
    std::string_view overlay(reinterpret_cast<char*>(overlay_key), overlay_len);

    ngx_shmtx_lock(&z->shpool->mutex);
    ++z->sh->generation;
    if (Entry* e = find_locked(z, hash_of(token), token); e != nullptr) {
        delete_locked(z, e);
    }
    if (overlay_len > 0) {
        if (Entry* e = find_locked(z, hash_of(overlay), overlay); e != nullptr) {
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
    for (ngx_queue_t* q = ngx_queue_head(&z->sh->lru); q != ngx_queue_sentinel(&z->sh->lru);
         q = ngx_queue_next(q)) {
        Entry* e = ngx_queue_data(q, Entry, lru);
        if (!msec_reached(now, e->fresh_until)) e->fresh_until = now;
    }
    ngx_shmtx_unlock(&z->shpool->mutex);
}

void cache_remove_user(ngx_shm_zone_t* zone, std::string_view user_id) noexcept {
    auto* z = static_cast<CacheZone*>(zone->data);
    ngx_shmtx_lock(&z->shpool->mutex);
    ++z->sh->generation;
    ngx_queue_t* q = ngx_queue_head(&z->sh->lru);
    while (q != ngx_queue_sentinel(&z->sh->lru)) {
        Entry* e = ngx_queue_data(q, Entry, lru);
        q = ngx_queue_next(q);
        const unsigned char* value = e->data + e->token_len;
        std::string_view key = token_of(e);
        if (!key.empty() && key.front() == kClaimsKeyTag) {
            continue;  // claims only: the overlay entry carries the user's state
        }
        if (!key.empty() && key.front() == kOverlayKeyTag) {
            std::string_view sub;
            if (core::overlay_flat_subject(value, e->flat_len, sub) && sub == user_id) {
                delete_locked(z, e);
            }
            continue;
        }
        core::LookupRecord record;
        if (core::flat_decode(value, e->flat_len, record) &&
            record.get(core::SessionField::user_id) == user_id) {
            delete_locked(z, e);
        }
    }
    ngx_shmtx_unlock(&z->shpool->mutex);
}

}  // namespace session::ngx
