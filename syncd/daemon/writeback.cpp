#include "daemon/writeback.hpp"

#include <algorithm>
#include <string>
#include <vector>

#include "core/projection.hpp"
#include "core/writeback.hpp"
#include "daemon/log.hpp"

namespace syncd {
namespace {

std::string millis(std::chrono::milliseconds d) {
    return std::to_string(d.count());
}

// What last_error keeps: the class of the failure, never a body (which
// could quote the user) or a header (the key).
std::string error_class(long status, const std::string& transport) {
    if (status != 0) return "HTTP " + std::to_string(status);
    return "transport: " + transport.substr(0, 200);
}

}  // namespace

clerk::ApiSettings serve_api_settings(const Config& cfg) {
    clerk::ApiSettings s;
    s.base_url = cfg.clerk_api.api_url;
    s.secret_key = cfg.clerk_api.secret_key;
    s.connect_timeout = std::chrono::seconds(5);
    // The threads join on SIGTERM: a request in flight bounds the stop.
    s.request_timeout = std::chrono::seconds(10);
    // get() (the key set) retries a few times in place; the write-back
    // sends single attempts and keeps its own schedule in PostgreSQL.
    s.max_attempts = 3;
    s.backoff_base = std::chrono::milliseconds(500);
    s.backoff_cap = std::chrono::seconds(5);
    return s;
}

Worker::~Worker() {
    stop();
}

void Worker::start() {
    thread_ = std::thread([this] {
        while (!stopping()) {
            if (!sleep_for(step())) return;
        }
    });
}

void Worker::stop() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
}

bool Worker::sleep_for(std::chrono::milliseconds d) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, d, [this] { return stopping_; });
    return !stopping_;
}

bool Worker::stopping() {
    std::lock_guard<std::mutex> lock(mu_);
    return stopping_;
}

// ---- the write-back -------------------------------------------------------

WriteBack::WriteBack(const Config& cfg, Metrics& metrics) : cfg_(cfg), metrics_(metrics) {
    // A row is retried until it succeeds: 1 s doubling to 10 min, with
    // jitter; a Retry-After is honoured up to an hour.
    policy_.base = std::chrono::seconds(1);
    policy_.cap = std::chrono::minutes(10);
    policy_.retry_after_cap = std::chrono::hours(1);
}

double WriteBack::jitter() {
    return std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
}

std::chrono::milliseconds WriteBack::step() noexcept {
    try {
        if (!api_) api_ = std::make_unique<clerk::BackendApi>(serve_api_settings(cfg_));
        if (!pg_ || PQstatus(pg_.get()) != CONNECTION_OK) pg_ = pg_connect(cfg_.database_url);
        auto pause = drain();
        report_depth();
        if (pg_failing_) log::info("write-back: PostgreSQL reachable again");
        pg_failing_ = false;
        return pause;
    } catch (const std::exception& e) {
        if (pg_ && PQstatus(pg_.get()) != CONNECTION_OK) pg_.reset();
        if (!pg_failing_) log::warn("write-back: " + std::string(e.what()) + "; will retry");
        pg_failing_ = true;
        return std::chrono::seconds(5);
    } catch (...) {
        return std::chrono::seconds(5);
    }
}

std::chrono::milliseconds WriteBack::drain() {
    PGconn* pg = pg_.get();
    std::vector<Row> rows;
    {
        // Claimed under a lease, then released: no row lock is held while
        // Clerk is called, so a webhook that queues the same user never
        // waits for it (it bumps the generation instead). SKIP LOCKED lets
        // several syncd processes share the queue.
        PgTransaction tx(pg);
        auto due = pg_exec(pg,
                           "SELECT w.clerk_user_id, w.generation, w.attempts, u.id::text, u.role "
                           "FROM writeback w LEFT JOIN users u "
                           "ON u.clerk_id = w.clerk_user_id AND u.deleted_at IS NULL "
                           "WHERE w.next_attempt_at <= now() ORDER BY w.next_attempt_at "
                           "LIMIT $1 FOR UPDATE OF w SKIP LOCKED",
                           {std::to_string(kBatch)});
        std::vector<std::string> ids;
        for (int i = 0; i < PQntuples(due.get()); ++i) {
            Row row{pg_text(due.get(), i, 0), pg_text(due.get(), i, 1),
                    static_cast<int>(pg_int(due.get(), i, 2)), pg_opt_text(due.get(), i, 3),
                    pg_opt_text(due.get(), i, 4).value_or("")};
            ids.push_back(row.clerk_user_id);
            rows.push_back(std::move(row));
        }
        if (rows.empty()) return kPoll;
        pg_exec(pg,
                "UPDATE writeback SET next_attempt_at = now() + $2::bigint * interval '1 ms' "
                "WHERE clerk_user_id = ANY($1::text[])",
                {pg_text_array(ids), millis(kLease)});
        tx.commit();
    }
    std::size_t done = 0;
    std::chrono::milliseconds wait{0};
    for (; done < rows.size() && !stopping(); ++done) {
        wait = send(rows[done]);
        if (wait.count() > 0) {
            ++done;
            break;
        }
    }
    if (done < rows.size()) {
        // Not attempted (a 429 for the whole queue, or stopping): due again
        // when Clerk allows, no attempt counted.
        std::vector<std::string> rest;
        for (std::size_t i = done; i < rows.size(); ++i) rest.push_back(rows[i].clerk_user_id);
        pg_exec(pg,
                "UPDATE writeback SET next_attempt_at = now() + $2::bigint * interval '1 ms' "
                "WHERE clerk_user_id = ANY($1::text[])",
                {pg_text_array(rest), millis(wait)});
    }
    if (wait.count() > 0) return wait;
    return rows.size() == static_cast<std::size_t>(kBatch) ? std::chrono::milliseconds(0) : kPoll;
}

void WriteBack::settle(const Row& row) {
    PGconn* pg = pg_.get();
    auto deleted = pg_exec(pg, "DELETE FROM writeback WHERE clerk_user_id = $1 AND generation = $2",
                           {row.clerk_user_id, row.generation});
    if (std::string(PQcmdTuples(deleted.get())) == "0") {
        // Changed while it was being handled: what went out may be older
        // than the row now; again, from now (not after the lease).
        pg_exec(pg,
                "UPDATE writeback SET attempts = 0, last_error = NULL, "
                "next_attempt_at = now(), enqueued_at = now() WHERE clerk_user_id = $1",
                {row.clerk_user_id});
    }
}

std::chrono::milliseconds WriteBack::send(const Row& row) {
    PGconn* pg = pg_.get();
    if (!row.db_id) {
        // Deleted here, or not created yet (a membership that arrived
        // first): nothing to write; user.created queues it again.
        settle(row);
        metrics_.count_writeback_dropped();
        return std::chrono::milliseconds(0);
    }
    long status = 0;
    std::string transport;
    std::chrono::milliseconds retry_after{0};
    try {
        auto r = api_->patch_json_once(writeback_path(row.clerk_user_id),
                                       writeback_body(*row.db_id, row.role), &retry_after);
        status = r.status;
    } catch (const clerk::ApiError& e) {
        status = e.status();
        transport = e.what();
    } catch (const std::exception& e) {
        status = 0;
        transport = e.what();
    }
    switch (writeback_step(status)) {
        case WritebackStep::done: {
            settle(row);
            metrics_.count_writeback_sent();
            if (clerk_failing_) log::info("write-back: Clerk accepts write-backs again");
            clerk_failing_ = false;
            log::debug("write-back: sent for " + row.clerk_user_id);
            return std::chrono::milliseconds(0);
        }
        case WritebackStep::drop:
            pg_exec(pg, "DELETE FROM writeback WHERE clerk_user_id = $1", {row.clerk_user_id});
            metrics_.count_writeback_dropped();
            log::info("write-back: user " + row.clerk_user_id +
                      " not found in Clerk (404); dropped");
            return std::chrono::milliseconds(0);
        case WritebackStep::retry:
            break;
    }
    const int attempts = row.attempts + 1;
    const auto delay = writeback_delay(policy_, attempts, retry_after, jitter());
    const std::string error = error_class(status, transport);
    pg_exec(pg,
            "UPDATE writeback SET attempts = $2, last_error = $3, "
            "next_attempt_at = now() + $4::bigint * interval '1 ms' WHERE clerk_user_id = $1",
            {row.clerk_user_id, std::to_string(attempts), error, millis(delay)});
    metrics_.count_writeback_failure();
    if (!clerk_failing_) {
        log::warn("write-back: " + error + "; kept in the queue and retried with backoff");
    }
    clerk_failing_ = true;
    log::debug("write-back: " + error + " for " + row.clerk_user_id + ", attempt " +
               std::to_string(attempts) + ", next in " + millis(delay) + " ms");
    // Rate-limited: Clerk counts per instance, so the whole queue waits.
    return status == 429 ? std::max(delay, std::chrono::milliseconds(1))
                         : std::chrono::milliseconds(0);
}

void WriteBack::report_depth() {
    auto r = pg_exec(pg_.get(),
                     "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(enqueued_at)), 0)"
                     "::float8 FROM writeback");
    metrics_.set_writeback_queue(pg_int(r.get(), 0, 0), std::stod(pg_text(r.get(), 0, 1)));
}

// ---- the instance's keys ----------------------------------------------------

std::string jwks_key(const std::string& prefix) {
    return prefix + "jwks";
}

bool store_jwks(Redis& redis, const std::string& prefix, const std::string& body) {
    const std::string key = jwks_key(prefix);
    auto stored = redis.command({"GET", key});
    if (stored->type == REDIS_REPLY_STRING && std::string(stored->str, stored->len) == body) {
        return false;  // the same bytes: no write, no message
    }
    redis.command({"SET", key, body});
    redis.publish(revocation_channel(prefix), "keys");
    return true;
}

KeyFetcher::KeyFetcher(const Config& cfg, Metrics& metrics) : cfg_(cfg), metrics_(metrics) {}

void KeyFetcher::refresh() {
    if (!api_) api_ = std::make_unique<clerk::BackendApi>(serve_api_settings(cfg_));
    auto response = api_->get("/v1/jwks");
    if (!is_usable_jwks(response.body)) {
        throw std::runtime_error("GET /v1/jwks answered something other than a non-empty key set");
    }
    metrics_.set_jwks_fetched_now();
    if (!redis_ || redis_->broken()) {
        redis_.reset();
        redis_ = std::make_unique<Redis>(cfg_.redis, std::chrono::milliseconds(2000), &metrics_);
    }
    if (store_jwks(*redis_, cfg_.redis_prefix, response.body)) {
        metrics_.count_jwks_stored();
        log::info("instance keys: a new set stored in Redis and `keys` published");
    }
}

std::chrono::milliseconds KeyFetcher::step() noexcept {
    const std::chrono::milliseconds interval =
        std::chrono::seconds(std::max<std::int64_t>(cfg_.clerk_api.jwks_interval, 1));
    try {
        refresh();
        if (failing_) log::info("instance keys: fetched and stored again");
        failing_ = false;
        failures_ = 0;
        return interval;
    } catch (const std::exception& e) {
        if (dynamic_cast<const RedisError*>(&e)) redis_.reset();
        metrics_.count_jwks_failure();
        if (!failing_) {
            log::warn(std::string("instance keys: ") + e.what() +
                      "; the set in Redis is kept, retrying");
        }
        failing_ = true;
    } catch (...) {
        metrics_.count_jwks_failure();
    }
    // Sooner than the interval after a failure, with backoff, never later.
    RetryPolicy policy;
    policy.base = kRetryFirst;
    policy.cap = std::max(interval, kRetryFirst);
    double jitter = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
    return std::min(interval, backoff_delay(policy, ++failures_, jitter));
}

}  // namespace syncd
