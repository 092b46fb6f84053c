// better-auth mode (session_better_auth): the directive, and the check of a
// better-auth session cookie against its Redis secondaryStorage, fed into
// the opaque check's verdict, cache and variables (access.cpp).
#pragma once

#include "nginx/ngx.hpp"

#include <string_view>

#include "nginx/access.hpp"
#include "nginx/conf.hpp"

namespace session::ngx {

// session_better_auth secret_file=FILE [cookie=NAME] [key_prefix=STRING]
char* better_auth_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept;

// merge_loc_conf's part: the whole setting is inherited when the location
// has none of its own.
void merge_better_auth_conf(BetterAuthConf* prev, BetterAuthConf* conf) noexcept;

// Without session_token, a location in better-auth mode reads better-auth's
// cookie (the __Secure- name first) rather than Clerk's and Bearer.
ngx_array_t* better_auth_token_sources(ngx_conf_t* cf, const BetterAuthConf& conf) noexcept;

// True when `source` is the location's better-auth cookie (its name, with or
// without the "__Secure-" prefix better-auth adds on HTTPS).
bool is_better_auth_source(const LocConf* lcf, const TokenSource& source) noexcept;

// Checks a better-auth cookie value as the browser sent it (percent-encoded):
// the signature first (no Redis for a bad one), then the cache, then
// GET <key_prefix><token>. Concludes, or returns NGX_AGAIN with a lookup in
// flight.
ngx_int_t better_auth_check(ngx_http_request_t* r, RequestCtx* ctx, const LocConf* lcf,
                            std::string_view cookie_value) noexcept;

// Judges a better-auth entry (core::overlay_flat_* of the session id and
// the record) held in the request pool: from Redis, the cache, or a stale
// entry.
ngx_int_t better_auth_judge(ngx_http_request_t* r, RequestCtx* ctx, const unsigned char* flat,
                            std::size_t flat_len, bool from_stale, bool fields_checked) noexcept;

// The revocation subscriber heard Redis delete or expire `key` (keyspace
// notifications): drops the better-auth entry cached under it, if any.
void better_auth_key_deleted(ngx_shm_zone_t* zone, std::string_view key) noexcept;

}  // namespace session::ngx
