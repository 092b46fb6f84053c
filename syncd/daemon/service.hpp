// What syncd answers, independent of the HTTP library: the webhook (verify,
// decode, commit, wake the projector), /healthz and /metrics.
#pragma once

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

    Response webhook(const HeaderLookup& headers, std::string_view body);
    Response too_large();
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
    Projector& projector_;
    Metrics& metrics_;
};

}  // namespace syncd
