#include "daemon/service.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <ctime>

#include "core/event.hpp"
#include "daemon/log.hpp"
#include "daemon/redis.hpp"
#include "daemon/store.hpp"

namespace syncd {
namespace {

constexpr std::size_t kMaxDeliveryIdLength = 255;

Response json_response(int status, const nlohmann::json& body) {
    Response r;
    r.status = status;
    r.body = body.dump() + "\n";
    return r;
}

Response error_response(int status, const std::string& message) {
    return json_response(status, {{"error", message}});
}

}  // namespace

WebhookHeaders select_headers(const HeaderLookup& lookup) {
    auto pick = [&](const char* svix, const char* standard) {
        auto v = lookup(svix);
        return v ? v : lookup(standard);
    };
    WebhookHeaders h;
    h.id = pick("svix-id", "webhook-id");
    h.timestamp = pick("svix-timestamp", "webhook-timestamp");
    h.signature = pick("svix-signature", "webhook-signature");
    return h;
}

std::shared_ptr<const SecretKeys> Service::secrets() const {
    std::lock_guard<std::mutex> lock(keys_mu_);
    return keys_;
}

void Service::replace_secrets(SecretKeys keys) {
    auto fresh = std::make_shared<const SecretKeys>(std::move(keys));
    std::lock_guard<std::mutex> lock(keys_mu_);
    keys_ = std::move(fresh);
}

Response Service::webhook(const HeaderLookup& lookup, std::string_view body) {
    WebhookHeaders headers = select_headers(lookup);
    Verdict verdict = verify_signature(*secrets(), headers, body, std::time(nullptr));
    if (verdict != Verdict::ok) {
        metrics_.count_signature_failure(verdict_name(verdict));
        log::info(std::string("rejected a delivery: ") + verdict_name(verdict));
        return error_response(401, "invalid signature");
    }
    const std::string id(*headers.id);
    if (id.size() > kMaxDeliveryIdLength) return error_response(400, "delivery id too long");

    Event event;
    try {
        event = decode_event(body);
    } catch (const DecodeError& e) {
        log::info("rejected delivery " + id + ": " + e.what());
        return error_response(400, e.what());
    }

    // One retry on a fresh connection: a pooled connection may have been
    // cut by a server restart since it was last used. If the first attempt
    // did commit, the retry finds the delivery id and answers duplicate.
    for (int attempt = 0;; ++attempt) {
        try {
            auto conn = pool_.acquire();
            StoreResult result = store_event(conn.get(), id, event);
            metrics_.count_event(event.type, outcome_name(result.outcome));
            if (result.outbox_entries > 0) projector_.wake();
            log::debug("delivery " + id + " (" + event.type + "): " + outcome_name(result.outcome));
            return json_response(200, {{"outcome", outcome_name(result.outcome)}});
        } catch (const PgError& e) {
            if (e.connection_lost && attempt == 0) continue;
            metrics_.count_event(event.type, "failed");
            log::warn("delivery " + id + " not stored: " + e.what());
            Response r = error_response(503, "database unavailable");
            r.retry_after = "5";
            return r;
        } catch (const std::exception& e) {
            metrics_.count_event(event.type, "failed");
            log::error("delivery " + id + " not stored: " + e.what());
            return error_response(500, "internal error");
        }
    }
}

Response Service::too_large() {
    return error_response(413, "body larger than " + std::to_string(cfg_.max_body) + " bytes");
}

Response Service::healthz() {
    std::string reason;
    try {
        auto conn = pool_.acquire();
        pg_exec(conn.get(), "SELECT 1");
    } catch (const std::exception& e) {
        reason = "postgresql: unreachable";
        log::debug(std::string("healthz: ") + e.what());
    }
    try {
        Redis redis(cfg_.redis, std::chrono::milliseconds(1000));
        redis.command({"PING"});
    } catch (const std::exception& e) {
        reason += std::string(reason.empty() ? "" : "; ") + "redis: unreachable";
        log::debug(std::string("healthz: ") + e.what());
    }
    if (!reason.empty()) return json_response(503, {{"status", "unavailable"}, {"reason", reason}});
    return json_response(200, {{"status", "ok"}});
}

Response Service::metrics() {
    Response r;
    r.body = metrics_.render();
    r.content_type = "text/plain; version=0.0.4";
    return r;
}

}  // namespace syncd
