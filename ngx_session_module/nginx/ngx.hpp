// nginx's C headers for C++, and the few adapters that keep casts in one
// place. Included first by every file of the glue.
#pragma once

extern "C" {
#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_http.h>
}

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace session::ngx {

inline std::string_view to_view(const ngx_str_t& s) noexcept {
    return {reinterpret_cast<const char*>(s.data), s.len};
}

inline ngx_str_t to_ngx_str(std::string_view v) noexcept {
    return {v.size(), reinterpret_cast<u_char*>(const_cast<char*>(v.data()))};
}

template <std::size_t N>
inline ngx_str_t literal(const char (&text)[N]) noexcept {
    return {N - 1, reinterpret_cast<u_char*>(const_cast<char*>(text))};
}

// Copies `v` into `pool`; {0, nullptr} when allocation fails.
inline ngx_str_t copy_to_pool(ngx_pool_t* pool, std::string_view v) noexcept {
    ngx_str_t out{0, nullptr};
    if (v.empty()) {
        out.data = reinterpret_cast<u_char*>(const_cast<char*>(""));
        return out;
    }
    out.data = static_cast<u_char*>(ngx_pnalloc(pool, v.size()));
    if (out.data != nullptr) {
        ngx_memcpy(out.data, v.data(), v.size());
        out.len = v.size();
    }
    return out;
}

// Unix time in milliseconds from nginx's cached clock (updated once per event
// loop iteration: cheap, and precise enough for expiry checks).
inline std::int64_t now_ms() noexcept {
    ngx_time_t* tp = ngx_timeofday();
    return static_cast<std::int64_t>(tp->sec) * 1000 + tp->msec;
}

}  // namespace session::ngx
