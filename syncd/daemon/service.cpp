#include "daemon/service.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <mutex>
#include <thread>

#include "core/event.hpp"
#include "daemon/log.hpp"
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

std::int64_t epoch_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

Response unavailable() {
    Response r = error_response(503, "database unavailable");
    r.retry_after = "5";
    return r;
}

struct PgCancelDeleter {
    void operator()(PGcancel* c) const noexcept { PQfreeCancel(c); }
};

// Cancels whatever statement runs on `conn` once `deadline` passes: the
// bound on a delivery's statements whatever their number. Destroyed before
// the connection goes back to the pool; no cancel is sent after that.
class CancelAt {
  public:
    CancelAt(PGconn* conn, std::chrono::steady_clock::time_point deadline)
        : cancel_(PQgetCancel(conn)) {
        if (!cancel_) throw PgError("PostgreSQL: cannot prepare a cancel request", true);
        thread_ = std::thread([this, deadline] {
            std::unique_lock<std::mutex> lock(mu_);
            if (!cv_.wait_until(lock, deadline, [this] { return done_; })) {
                char err[256];
                PQcancel(cancel_.get(), err, sizeof err);  // best effort
            }
        });
    }
    ~CancelAt() {
        {
            std::lock_guard<std::mutex> lock(mu_);
            done_ = true;
        }
        cv_.notify_one();
        thread_.join();
    }
    CancelAt(const CancelAt&) = delete;
    CancelAt& operator=(const CancelAt&) = delete;

  private:
    std::unique_ptr<PGcancel, PgCancelDeleter> cancel_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool done_ = false;
    std::thread thread_;
};

// The session's timeouts for what is left of the budget: the lock wait a
// little shorter, so that a lock held elsewhere is reported as such. They
// stay on the pooled connection for its next user, hence the floor of 1 s
// (CancelAt bounds this delivery anyway).
void limit_statements(PGconn* conn, std::chrono::milliseconds left) {
    const auto floor = std::chrono::milliseconds(1000);
    auto statement = std::max(left, floor);
    auto lock_wait = std::max(left - std::chrono::milliseconds(500), floor);
    pg_exec(conn,
            "SELECT set_config('statement_timeout', $1, false), "
            "set_config('lock_timeout', $2, false)",
            {std::to_string(statement.count()), std::to_string(lock_wait.count())});
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
        // Signed, so it came from the sender: kept rather than lost once
        // the sender gives up (the 400 still tells it something is wrong).
        keep_dead_letter(pool_, id, body, e.what());
        return error_response(400, e.what());
    }

    // One retry on a fresh connection: a pooled connection may have been
    // cut by a server restart since it was last used. If the first attempt
    // did commit, the retry finds the delivery id and answers duplicate.
    const auto deadline = std::chrono::steady_clock::now() + kDeliveryBudget;
    for (int attempt = 0;; ++attempt) {
        try {
            auto conn = pool_.acquire();
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            if (left < std::chrono::milliseconds(100)) {
                metrics_.count_event(event.type, "failed");
                log::warn("delivery " + id + " not stored: no time left in its budget");
                return unavailable();
            }
            CancelAt cancel(conn.get(), deadline);  // destroyed before the lease
            limit_statements(conn.get(), left);
            StoreOptions options;
            options.writeback = cfg_.clerk_api.enabled() && cfg_.clerk_api.writeback;
            StoreResult result = store_event(conn.get(), id, event, options);
            pg_lost_ms_.store(0);
            metrics_.count_event(event.type, outcome_name(result.outcome));
            if (result.outbox_entries > 0) projector_.wake();
            log::debug("delivery " + id + " (" + event.type + "): " + outcome_name(result.outcome));
            return json_response(200, {{"outcome", outcome_name(result.outcome)}});
        } catch (const PgError& e) {
            if (e.connection_lost && attempt == 0) continue;
            if (e.connection_lost) pg_lost_ms_.store(epoch_ms());
            metrics_.count_event(event.type, "failed");
            log::warn("delivery " + id + " not stored: " + e.what());
            return unavailable();
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
    // Nothing here may wait on a store: a probe must not take the pool slot
    // a delivery needs, nor open a Redis connection per request.
    nlohmann::json body;
    std::int64_t last = metrics_.projector_last_success_ms();
    if (last > 0) {
        body["projector_last_success_ms"] = last;
        body["projector_last_success_age_s"] =
            std::max<std::int64_t>(0, (epoch_ms() - last) / 1000);
    } else {
        body["projector_last_success_ms"] = nullptr;
    }
    std::int64_t lost = pg_lost_ms_.load();
    if (lost != 0 && last <= lost) {
        // Deliveries get 503: nothing is being accepted.
        body["status"] = "unavailable";
        body["reason"] = "postgresql: unreachable";
        return json_response(503, body);
    }
    if (metrics_.redis_down()) {
        // Deliveries are still committed; the outbox waits for Redis.
        body["status"] = "degraded";
        body["reason"] = "redis: unreachable; changes wait in the outbox";
        return json_response(200, body);
    }
    body["status"] = "ok";
    return json_response(200, body);
}

Response Service::metrics() {
    Response r;
    r.body = metrics_.render();
    r.content_type = "text/plain; version=0.0.4";
    return r;
}

}  // namespace syncd
