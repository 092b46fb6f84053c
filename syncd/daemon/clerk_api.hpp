// Clerk's Backend API, as syncd uses it: libcurl with timeouts and TLS
// verification on, the secret key as a Bearer token (never logged), and the
// API's rate limits honoured (429 with Retry-After; exponential backoff with
// jitter for transient failures). Used by `syncd backfill` (the list
// endpoints), the write-back queue (PATCH of a user's metadata) and the key
// distribution (GET /v1/jwks). One BackendApi per thread: it owns one curl
// easy handle, which keeps its connection alive between requests.
#pragma once

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>

#include "core/config.hpp"

namespace syncd::clerk {

// What every request needs; built from Config (SYNCD_CLERK_*).
struct ApiSettings {
    std::string base_url = "https://api.clerk.com";  // no trailing slash; "/v1/..." is appended
    std::string secret_key;                          // sk_live_... / sk_test_...; never logged
    std::chrono::milliseconds connect_timeout{5000};
    std::chrono::milliseconds request_timeout{30000};  // the whole transfer
    // Attempts for one call, the first included; 429 and transient failures
    // (transport errors, 5xx) are retried until then.
    int max_attempts = 8;
    std::chrono::milliseconds backoff_base{500};  // doubled per attempt, with jitter
    std::chrono::milliseconds backoff_cap{30000};
};

struct Response {
    long status = 0;   // HTTP status of the last attempt
    std::string body;  // its body (JSON as Clerk sends it)
};

// A call that did not succeed. `status` is 0 for a transport failure (the
// message names curl's error, never the key), else the HTTP status; a 4xx
// other than 429 is not retried (it would fail the same way again).
class ApiError : public std::runtime_error {
  public:
    ApiError(const std::string& what, long status, bool retryable)
        : std::runtime_error(what), status_(status), retryable_(retryable) {}
    long status() const { return status_; }
    // True when a later attempt may succeed (429, 5xx, transport).
    bool retryable() const { return retryable_; }

  private:
    long status_;
    bool retryable_;
};

class BackendApi {
  public:
    explicit BackendApi(ApiSettings settings);
    ~BackendApi();
    BackendApi(const BackendApi&) = delete;
    BackendApi& operator=(const BackendApi&) = delete;

    // GET base_url + path_and_query ("/v1/users?limit=500&offset=0"),
    // retried as above; returns a 2xx response or throws ApiError.
    Response get(const std::string& path_and_query);

    // PATCH with a JSON body (Content-Type: application/json), retried as
    // above; returns a 2xx response or throws ApiError.
    Response patch_json(const std::string& path, const std::string& json_body);

    // One attempt only, no retry: for a caller that keeps its own durable
    // retry schedule (the write-back queue). Throws ApiError on failure;
    // for a 429, *retry_after (when given) is set to the server's
    // Retry-After, else to zero.
    Response patch_json_once(const std::string& path, const std::string& json_body,
                             std::chrono::milliseconds* retry_after = nullptr);

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// ApiSettings from the configuration (SYNCD_CLERK_API_URL and
// SYNCD_CLERK_SECRET_KEY), the timeouts and retry schedule at their defaults.
ApiSettings settings_from(const ClerkApi& cfg);

}  // namespace syncd::clerk
