#include "daemon/clerk_api.hpp"

#include <curl/curl.h>

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>

#include "core/retry_policy.hpp"
#include "daemon/log.hpp"

#ifndef SYNCD_VERSION
#define SYNCD_VERSION "0"
#endif

namespace syncd::clerk {
namespace {

// A page of 500 users is a few hundred kilobytes; far more than this is not
// an answer syncd can use, and must not exhaust memory.
constexpr std::size_t kMaxBody = 64 * 1024 * 1024;

struct EasyDeleter {
    void operator()(CURL* c) const noexcept { curl_easy_cleanup(c); }
};
struct SlistDeleter {
    void operator()(curl_slist* l) const noexcept { curl_slist_free_all(l); }
};
using Easy = std::unique_ptr<CURL, EasyDeleter>;
using Slist = std::unique_ptr<curl_slist, SlistDeleter>;

// curl_global_init is process-wide and, in older libcurl, not thread-safe:
// once, before the first handle. Never cleaned up: other threads may still
// hold handles at exit.
void global_init() {
    static std::once_flag once;
    std::call_once(once, [] {
        CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
        if (rc != CURLE_OK) {
            throw ApiError(std::string("libcurl initialisation failed: ") + curl_easy_strerror(rc),
                           0, false);
        }
    });
}

Slist append(Slist list, const std::string& line) {
    curl_slist* grown = curl_slist_append(list.get(), line.c_str());
    if (!grown) throw std::bad_alloc();
    list.release();  // now owned by `grown`
    return Slist(grown);
}

// libcurl calls this from its C frames: no exception may escape. Returning
// less than offered makes curl abort the transfer (CURLE_WRITE_ERROR).
extern "C" size_t write_body(char* data, size_t size, size_t count, void* user) noexcept {
    auto* body = static_cast<std::string*>(user);
    const size_t n = size * count;
    if (body->size() + n > kMaxBody) return 0;
    try {
        body->append(data, n);
    } catch (...) {
        return 0;
    }
    return n;
}

// The error Clerk explains in its body ({"errors":[{"code","message"}]}),
// shortened; never the request's headers.
std::string clerk_reason(const std::string& body) {
    auto doc = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (!doc.is_object()) return "";
    auto errors = doc.find("errors");
    if (errors == doc.end() || !errors->is_array() || errors->empty()) return "";
    const auto& first = (*errors)[0];
    if (!first.is_object()) return "";
    std::string out;
    auto code = first.find("code");
    if (code != first.end() && code->is_string()) out = code->get<std::string>();
    auto message = first.find("message");
    if (message != first.end() && message->is_string()) {
        out += (out.empty() ? "" : ": ") + message->get<std::string>();
    }
    if (out.size() > 200) out = out.substr(0, 200) + "...";
    for (char& c : out) {
        if (static_cast<unsigned char>(c) < 0x20) c = ' ';
    }
    return out;
}

// The path without its query string: ids in a query are not secrets, but
// the path is what a reader needs.
std::string for_log(const std::string& method, const std::string& path_and_query) {
    return method + " " + path_and_query.substr(0, path_and_query.find('?'));
}

}  // namespace

struct BackendApi::Impl {
    ApiSettings settings;
    RetryPolicy policy;
    Easy easy;
    Slist get_headers;
    Slist json_headers;
    std::mt19937_64 rng{std::random_device{}()};
    char error[CURL_ERROR_SIZE] = {0};

    struct Attempt {
        long status = 0;  // 0: transport failure
        std::string body;
        std::optional<std::chrono::milliseconds> retry_after;
        std::string transport_error;
    };

    Attempt perform(const char* method, const std::string& path, const std::string* json_body) {
        Attempt a;
        CURL* c = easy.get();
        // Keeps the connection (and TLS session) alive; clears every option.
        curl_easy_reset(c);
        error[0] = '\0';
        const std::string url = settings.base_url + path;
        curl_easy_setopt(c, CURLOPT_URL, url.c_str());
        // Only HTTP(S), no redirects: the Authorization header must not be
        // sent anywhere but the configured API.
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                         static_cast<long>(settings.connect_timeout.count()));
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS,
                         static_cast<long>(settings.request_timeout.count()));
        // Threads and signals: no SIGALRM-based name resolution timeouts.
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");  // whatever curl can decode
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &a.body);
        if (json_body) {
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
            curl_easy_setopt(c, CURLOPT_HTTPHEADER, json_headers.get());
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, json_body->data());
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
                             static_cast<curl_off_t>(json_body->size()));
        } else {
            curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
            curl_easy_setopt(c, CURLOPT_HTTPHEADER, get_headers.get());
        }
        CURLcode rc = curl_easy_perform(c);
        if (rc != CURLE_OK) {
            // curl's own words: they name the host, never a header.
            a.transport_error = error[0] ? std::string(error) : curl_easy_strerror(rc);
            a.body.clear();
            return a;
        }
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a.status);
        struct curl_header* h = nullptr;
        if (curl_easy_header(c, "Retry-After", 0, CURLH_HEADER, -1, &h) == CURLHE_OK && h) {
            a.retry_after = parse_retry_after(h->value, std::chrono::system_clock::now());
        }
        return a;
    }

    ApiError failure(const std::string& what, const Attempt& a, int attempts) const {
        std::string msg = "Clerk Backend API " + what + ": ";
        if (a.status == 0) {
            msg += a.transport_error;
        } else {
            msg += "HTTP " + std::to_string(a.status);
            std::string reason = clerk_reason(a.body);
            if (!reason.empty()) msg += " (" + reason + ")";
        }
        if (a.status == 401 || a.status == 403) {
            msg += "; check SYNCD_CLERK_SECRET_KEY (the instance's secret key)";
        } else if (attempts > 1) {
            msg += " after " + std::to_string(attempts) + " attempts";
        }
        bool retryable = a.status == 0 || is_retryable_status(a.status);
        return ApiError(msg, a.status, retryable);
    }

    Response call(const char* method, const std::string& path, const std::string* json_body) {
        const std::string what = for_log(method, path);
        std::uniform_real_distribution<double> jitter(0.0, 1.0);
        for (int attempt = 1;; ++attempt) {
            Attempt a = perform(method, path, json_body);
            if (a.status >= 200 && a.status < 300) return Response{a.status, std::move(a.body)};
            auto delay = retry_delay(policy, attempt, a.status, a.retry_after, jitter(rng));
            if (!delay) throw failure(what, a, attempt);
            log::warn("Clerk Backend API " + what + ": " +
                      (a.status ? "HTTP " + std::to_string(a.status) : a.transport_error) +
                      (a.retry_after ? " (Retry-After honoured)" : "") + "; attempt " +
                      std::to_string(attempt + 1) + " of " + std::to_string(policy.max_attempts) +
                      " in " + std::to_string(delay->count()) + " ms");
            std::this_thread::sleep_for(*delay);
        }
    }
};

BackendApi::BackendApi(ApiSettings settings) : impl_(std::make_unique<Impl>()) {
    global_init();
    if (settings.secret_key.empty()) {
        throw ApiError("SYNCD_CLERK_SECRET_KEY: is not set", 0, false);
    }
    while (!settings.base_url.empty() && settings.base_url.back() == '/') {
        settings.base_url.pop_back();
    }
    impl_->policy.max_attempts = std::max(1, settings.max_attempts);
    impl_->policy.base = settings.backoff_base;
    impl_->policy.cap = settings.backoff_cap;
    impl_->easy.reset(curl_easy_init());
    if (!impl_->easy) throw ApiError("libcurl: cannot create a handle", 0, false);
    Slist common;
    common = append(std::move(common), "Authorization: Bearer " + settings.secret_key);
    common = append(std::move(common), "Accept: application/json");
    common = append(std::move(common), std::string("User-Agent: syncd/") + SYNCD_VERSION);
    // Two lists with the same lines: curl keeps a pointer to the one set.
    Slist json;
    for (curl_slist* l = common.get(); l; l = l->next) json = append(std::move(json), l->data);
    json = append(std::move(json), "Content-Type: application/json");
    // An empty Expect: no 100-continue round trip for small bodies.
    json = append(std::move(json), "Expect:");
    impl_->get_headers = std::move(common);
    impl_->json_headers = std::move(json);
    impl_->settings = std::move(settings);
}

BackendApi::~BackendApi() = default;

Response BackendApi::get(const std::string& path_and_query) {
    return impl_->call("GET", path_and_query, nullptr);
}

Response BackendApi::patch_json(const std::string& path, const std::string& json_body) {
    return impl_->call("PATCH", path, &json_body);
}

Response BackendApi::patch_json_once(const std::string& path, const std::string& json_body,
                                     std::chrono::milliseconds* retry_after) {
    if (retry_after) *retry_after = std::chrono::milliseconds(0);
    auto a = impl_->perform("PATCH", path, &json_body);
    if (a.status >= 200 && a.status < 300) return Response{a.status, std::move(a.body)};
    if (retry_after && a.status == 429 && a.retry_after) *retry_after = *a.retry_after;
    throw impl_->failure(for_log("PATCH", path), a, 1);
}

ApiSettings settings_from(const ClerkApi& cfg) {
    ApiSettings s;
    s.base_url = cfg.api_url;
    s.secret_key = cfg.secret_key;
    return s;
}

}  // namespace syncd::clerk
