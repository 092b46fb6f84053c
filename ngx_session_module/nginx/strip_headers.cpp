#include "nginx/strip_headers.hpp"

#include <string_view>

namespace session::ngx {
namespace {

char* const kConfError = static_cast<char*>(NGX_CONF_ERROR);

// FastCGI, uwsgi, SCGI and $http_* all turn '-' into '_': X_User_Id (with
// underscores_in_headers on) reaches them as HTTP_X_USER_ID, so it must be
// stripped along with X-User-Id.
u_char fold(u_char c) noexcept {
    c = ngx_tolower(c);
    return c == '_' ? '-' : c;
}

bool matches(const StripName& strip, const ngx_str_t& key) noexcept {
    if (strip.prefix ? key.len < strip.name.len : key.len != strip.name.len) {
        return false;
    }
    for (std::size_t i = 0; i < strip.name.len; ++i) {
        if (fold(key.data[i]) != strip.name.data[i]) {
            return false;
        }
    }
    return true;
}

bool is_stripped(const ngx_array_t* strip_headers, const ngx_str_t& key) noexcept {
    auto* names = static_cast<const StripName*>(strip_headers->elts);
    for (ngx_uint_t i = 0; i < strip_headers->nelts; ++i) {
        if (matches(names[i], key)) {
            return true;
        }
    }
    return false;
}

// What nginx's own parser accepts in a header name.
bool is_header_name(std::string_view name) noexcept {
    for (char c : name) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        if (!ok) {
            return false;
        }
    }
    return !name.empty();
}

char* invalid_name(ngx_conf_t* cf, ngx_command_t* cmd, const ngx_str_t& value,
                   const char* why) noexcept {
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid header name \"%V\" in \"%V\" directive%s",
                       &value, &cmd->name, why);
    return kConfError;
}

}  // namespace

// session_strip_headers NAME ...
char* strip_headers_directive(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) noexcept {
    auto* lcf = static_cast<LocConf*>(conf);
    if (lcf->strip_headers != nullptr) {
        return const_cast<char*>("is duplicate");
    }
    lcf->strip_headers = ngx_array_create(cf->pool, cf->args->nelts - 1, sizeof(StripName));
    if (lcf->strip_headers == nullptr) {
        return kConfError;
    }
    auto* value = static_cast<ngx_str_t*>(cf->args->elts);
    for (ngx_uint_t i = 1; i < cf->args->nelts; ++i) {
        std::string_view text = to_view(value[i]);
        bool prefix = !text.empty() && text.back() == '*';
        std::string_view name = prefix ? text.substr(0, text.size() - 1) : text;
        if (name.find('*') != std::string_view::npos) {
            return invalid_name(cf, cmd, value[i], ", \"*\" is only allowed at the end");
        }
        if (!is_header_name(name)) {
            return invalid_name(cf, cmd, value[i], "");
        }
        auto* strip = static_cast<StripName*>(ngx_array_push(lcf->strip_headers));
        if (strip == nullptr) {
            return kConfError;
        }
        strip->prefix = prefix;
        strip->name.len = name.size();
        strip->name.data = static_cast<u_char*>(ngx_pnalloc(cf->pool, name.size()));
        if (strip->name.data == nullptr) {
            return kConfError;
        }
        for (std::size_t j = 0; j < name.size(); ++j) {
            strip->name.data[j] = fold(static_cast<u_char>(name[j]));
        }
        // Headers nginx parses into r->headers_in fields (Host, Cookie,
        // Authorization, Content-Length, X-Forwarded-For...) have already
        // shaped the request, and the session check reads two of them:
        // removing them from the list alone would leave nginx inconsistent.
        for (ngx_http_header_t* known = ngx_http_headers_in; known->name.len != 0; ++known) {
            if (matches(*strip, known->name)) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"%V\" in \"%V\" directive would strip \"%V\", which nginx "
                                   "itself reads",
                                   &value[i], &cmd->name, &known->name);
                return kConfError;
            }
        }
    }
    return NGX_CONF_OK;
}

char* merge_strip_headers(ngx_conf_t* cf, const LocConf* prev, LocConf* conf) noexcept {
    if (conf->strip_headers == nullptr) {
        conf->strip_headers = prev->strip_headers;
    }
    if (conf->strip_headers == nullptr || conf->check != 1 || conf->token_sources == nullptr) {
        return NGX_CONF_OK;
    }
    // Stripping runs before the check: a token header it removes would make
    // every request anonymous.
    auto* sources = static_cast<const TokenSource*>(conf->token_sources->elts);
    for (ngx_uint_t i = 0; i < conf->token_sources->nelts; ++i) {
        if (sources[i].kind == TokenSourceKind::header &&
            is_stripped(conf->strip_headers, sources[i].name)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"session_strip_headers\" strips \"%V\", which \"session_token\" "
                               "reads the token from",
                               &sources[i].name);
            return kConfError;
        }
    }
    return NGX_CONF_OK;
}

// The preaccess phase rather than access: it runs for subrequests too (an
// auth_request or SSI subrequest to a proxying location), and no access
// handler answering NGX_OK under `satisfy any` can skip it. Either way it is
// before any content handler, so before any upstream module builds its
// request.
ngx_int_t strip_headers_handler(ngx_http_request_t* r) noexcept {
    const LocConf* lcf = loc_conf(r);
    if (lcf->strip_headers == nullptr) {
        return NGX_DECLINED;
    }
    ngx_uint_t total = 0;
    ngx_uint_t stripped = 0;
    for (ngx_list_part_t* part = &r->headers_in.headers.part; part != nullptr; part = part->next) {
        auto* h = static_cast<ngx_table_elt_t*>(part->elts);
        for (ngx_uint_t i = 0; i < part->nelts; ++i, ++total) {
            if (is_stripped(lcf->strip_headers, h[i].key)) ++stripped;
        }
    }
    if (stripped == 0) {
        return NGX_DECLINED;
    }
    // A new list, not hash = 0 in place: proxy, fastcgi, uwsgi, scgi and
    // grpc copy every element of headers_in.headers whatever its hash. A
    // subrequest has its own copy of headers_in, so this never touches the
    // parent's list. Pointers into the old elements (r->headers_in.user_agent
    // ...) stay valid: the old list lives in the same pool.
    ngx_list_t old = r->headers_in.headers;  // only its parts are read
    if (ngx_list_init(&r->headers_in.headers, r->pool, total, sizeof(ngx_table_elt_t)) != NGX_OK) {
        r->headers_in.headers = old;
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    for (ngx_list_part_t* part = &old.part; part != nullptr; part = part->next) {
        auto* h = static_cast<ngx_table_elt_t*>(part->elts);
        for (ngx_uint_t i = 0; i < part->nelts; ++i) {
            if (is_stripped(lcf->strip_headers, h[i].key)) {
                ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                               "session strip header: \"%V\"", &h[i].key);
                continue;
            }
            auto* kept = static_cast<ngx_table_elt_t*>(ngx_list_push(&r->headers_in.headers));
            if (kept == nullptr) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
            *kept = h[i];
        }
    }
    return NGX_DECLINED;
}

}  // namespace session::ngx
