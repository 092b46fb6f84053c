// The session_jwt_* directives and the organization gates: parsing, and the
// merge of JwtConf down the configuration levels.
#pragma once

#include "nginx/ngx.hpp"

#include "nginx/conf.hpp"

namespace session::ngx {

char* jwt_keys_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept;
char* jwt_issuer_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept;
char* jwt_authorized_parties_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept;
char* jwt_leeway_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept;
char* jwt_session_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept;
char* jwt_role_claim_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept;
char* jwt_handshake_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept;
// session_require_org_role / session_require_permission: `cmd->offset` is
// the LocConf member (an ngx_array_t* of std::string_view).
char* word_list_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept;

// create_loc_conf's part: every JWT setting unset.
void init_jwt_conf(JwtConf* jwt) noexcept;

// merge_loc_conf's part: inherits, applies defaults, checks that keys come
// with an issuer, and computes the verifier fingerprint.
char* merge_jwt_conf(ngx_conf_t* cf, JwtConf* prev, JwtConf* conf) noexcept;

}  // namespace session::ngx
