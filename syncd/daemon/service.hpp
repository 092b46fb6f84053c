// What syncd answers, independent of the HTTP library: the webhook (verify,
// decode, commit, wake the projector), /healthz and /metrics.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "core/config.hpp"
#include "core/metrics.hpp"
#include "core/signature.hpp"
#include "daemon/pg.hpp"
#include "daemon/projector.hpp"

namespace syncd {

struct Response {
    int status = 200;
    std::string body;
    std::string content_type = "application/json";
    std::optional<std::string> retry_after;
};

// Case-insensitive header look-up supplied by the HTTP layer.
using HeaderLookup = std::function<std::optional<std::string_view>(const char* name)>;

// Picks svix-* headers, else the unbranded webhook-* ones, header by header.
WebhookHeaders select_headers(const HeaderLookup& lookup);

class Service {
  public:
    Service(const Config& cfg, SecretKeys keys, PgPool& pool, Projector& projector,
            Metrics& metrics)
        : cfg_(cfg),
          keys_(std::make_shared<const SecretKeys>(std::move(keys))),
          pool_(pool),
          projector_(projector),
          metrics_(metrics) {}

    // Bounded by kDeliveryBudget from the call: the pool wait, then every
    // statement (statement_timeout, lock_timeout, and a cancel at the end
    // of the budget, whatever the number of statements); past it, 503.
    Response webhook(const HeaderLookup& headers, std::string_view body);
    static constexpr std::chrono::milliseconds kDeliveryBudget{8000};
    Response too_large();
    // Takes no pooled connection and opens no Redis connection: PostgreSQL
    // as the last delivery found it, Redis as the projector last found it.
    Response healthz();
    Response metrics();

    // SIGHUP: swap the secrets; requests in flight keep the old set.
    void replace_secrets(SecretKeys keys);

    const Config& config() const { return cfg_; }

  private:
    std::shared_ptr<const SecretKeys> secrets() const;

    Config cfg_;
    mutable std::mutex keys_mu_;
    std::shared_ptr<const SecretKeys> keys_;
    PgPool& pool_;
    // When the last delivery lost PostgreSQL (epoch ms; 0: it reached it).
    // A projector cycle completed later shows PostgreSQL back.
    std::atomic<std::int64_t> pg_lost_ms_{0};
    Projector& projector_;
    Metrics& metrics_;
};

}  // namespace syncd
