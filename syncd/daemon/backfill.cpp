#include "daemon/backfill.hpp"

#include <chrono>
#include <cstdio>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/backfill_page.hpp"
#include "daemon/clerk_api.hpp"
#include "daemon/log.hpp"
#include "daemon/pg.hpp"
#include "daemon/store.hpp"

namespace syncd {
namespace {

using namespace backfill;
using Clock = std::chrono::steady_clock;

// One backfill at a time: two would race each other's cursor rows.
constexpr const char* kRunLock = "SELECT pg_try_advisory_lock(1398361671, 0)";
// Users whose active sessions one transaction imports: one API call each.
constexpr int kSessionUsersPerBatch = 100;
// A page that meets a deadlock (a webhook for the same rows) is retried.
constexpr int kPageAttempts = 5;

struct Counters {
    long long created = 0, updated = 0, unchanged = 0, stale = 0, invalid = 0, before_since = 0;
    long long pages = 0;
    long long total() const {
        return created + updated + unchanged + stale + invalid + before_since;
    }
};

struct KindState {
    Kind kind;
    ListCursor cursor;  // sessions: cursor.last_id is the last user done
    Counters counts;
    bool done = false;
};

std::string final_statuses() {
    return "{ended,expired,removed,replaced,revoked,abandoned}";
}

// Query-string value: ids are [A-Za-z0-9_] in practice, but nothing
// listed is trusted to be.
std::string url_encode(const std::string& s) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += kHex[c >> 4];
            out += kHex[c & 15];
        }
    }
    return out;
}

const char* list_path(Kind kind) {
    switch (kind) {
        case Kind::users:
            return "/v1/users";
        case Kind::organizations:
            return "/v1/organizations";
        case Kind::memberships:
            return "/v1/organization_memberships";
        case Kind::sessions:
            return "/v1/sessions";
    }
    return "";
}

// The stored versions of the page's objects, read before applying them:
// what the summary compares with (created, updated, unchanged or stale).
std::map<std::string, StoredVersion> stored_versions(PGconn* c, Kind kind,
                                                     const std::vector<std::string>& ids) {
    const char* sql = nullptr;
    switch (kind) {
        case Kind::users:
            sql =
                "SELECT clerk_id, source_updated_at, deleted_at IS NOT NULL FROM users "
                "WHERE clerk_id = ANY($1::text[])";
            break;
        case Kind::organizations:
            sql =
                "SELECT id, source_updated_at, deleted_at IS NOT NULL FROM organizations "
                "WHERE id = ANY($1::text[])";
            break;
        case Kind::memberships:
            sql =
                "SELECT id, source_updated_at, deleted_at IS NOT NULL FROM memberships "
                "WHERE id = ANY($1::text[])";
            break;
        case Kind::sessions:
            sql =
                "SELECT id, source_updated_at, status = ANY($2::text[]) FROM sessions "
                "WHERE id = ANY($1::text[])";
            break;
    }
    std::vector<PgParam> params = {pg_text_array(ids)};
    if (kind == Kind::sessions) params.emplace_back(final_statuses());
    auto res = pg_exec(c, sql, params);
    std::map<std::string, StoredVersion> out;
    for (int i = 0; i < PQntuples(res.get()); ++i) {
        auto& v = out[pg_text(res.get(), i, 0)];
        // A user's tombstone and a live row cannot coexist; if they did, the
        // tombstone (final) is what the rules see.
        v.final = v.final || pg_bool(res.get(), i, 2);
        v.updated_at_ms = std::max(v.updated_at_ms, pg_int(res.get(), i, 1));
    }
    return out;
}

void save_cursor(PGconn* c, const KindState& st, const std::optional<std::int64_t>& since) {
    const auto& k = st.counts;
    pg_exec(
        c,
        "INSERT INTO backfill_cursor (kind, since_ms, next_offset, last_id, last_created_at, "
        "pages, created, updated, unchanged, stale, invalid, before_since, done) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
        "ON CONFLICT (kind) DO UPDATE SET since_ms = EXCLUDED.since_ms, "
        "next_offset = EXCLUDED.next_offset, last_id = EXCLUDED.last_id, "
        "last_created_at = EXCLUDED.last_created_at, pages = EXCLUDED.pages, "
        "created = EXCLUDED.created, updated = EXCLUDED.updated, "
        "unchanged = EXCLUDED.unchanged, stale = EXCLUDED.stale, "
        "invalid = EXCLUDED.invalid, before_since = EXCLUDED.before_since, "
        "done = EXCLUDED.done, updated_at = now()",
        {std::string(kind_name(st.kind)), since ? PgParam(std::to_string(*since)) : std::nullopt,
         std::to_string(st.cursor.offset), st.cursor.last_id,
         std::to_string(st.cursor.last_created_at), std::to_string(k.pages),
         std::to_string(k.created), std::to_string(k.updated), std::to_string(k.unchanged),
         std::to_string(k.stale), std::to_string(k.invalid), std::to_string(k.before_since),
         std::string(st.done ? "t" : "f")});
}

std::string summary_of(const std::vector<KindState>& kinds, bool since) {
    std::string out;
    for (const auto& st : kinds) {
        const auto& k = st.counts;
        if (!out.empty()) out += "; ";
        out += std::string(kind_name(st.kind)) + ": " + std::to_string(k.created) + " created, " +
               std::to_string(k.updated) + " updated, " + std::to_string(k.unchanged) +
               " unchanged, " + std::to_string(k.stale) + " skipped as stale";
        if (k.invalid) out += ", " + std::to_string(k.invalid) + " not decodable";
        if (since) out += ", " + std::to_string(k.before_since) + " older than --since";
    }
    return out;
}

class Run {
  public:
    Run(const Config& cfg, const BackfillOptions& options)
        : cfg_(cfg), options_(options), api_(clerk::settings_from(cfg.clerk_api)) {
        store_options_.writeback = cfg.clerk_api.writeback;
    }

    std::string go() {
        connect();
        load();
        const auto started = Clock::now();
        for (auto& st : kinds_) {
            if (st.done) continue;
            phase_start_ = Clock::now();
            phase_objects_ = 0;
            phase_units_ = 0;
            last_print_ = {};
            if (st.kind == Kind::sessions) {
                run_sessions(st);
            } else {
                run_list(st);
            }
        }
        const double secs = std::chrono::duration<double>(Clock::now() - started).count();
        std::string summary = summary_of(kinds_, options_.since_ms.has_value());
        std::fprintf(stderr, "backfill: %lld objects fetched in %.1f s (%.0f objects/s)\n",
                     fetched_, secs, secs > 0 ? static_cast<double>(fetched_) / secs : 0.0);
        return summary;
    }

  private:
    void connect() {
        pg_ = pg_connect(cfg_.database_url);
        auto locked = pg_exec(pg_.get(), kRunLock);
        if (!pg_bool(locked.get(), 0, 0)) {
            throw std::runtime_error("another syncd backfill is running against this database");
        }
    }

    void load() {
        for (Kind k : kKinds) kinds_.push_back(KindState{k, {}, {}, false});
        auto res = pg_exec(pg_.get(),
                           "SELECT kind, since_ms, next_offset, last_id, last_created_at, pages, "
                           "created, updated, unchanged, stale, invalid, before_since, done "
                           "FROM backfill_cursor");
        const int rows = PQntuples(res.get());
        if (rows == 0) return;
        bool same_since = true;
        for (int i = 0; i < rows; ++i) {
            if (pg_opt_int(res.get(), i, 1) != options_.since_ms) same_since = false;
        }
        if (!same_since) {
            log::warn(
                "backfill: an interrupted run with another --since is abandoned; starting over");
            pg_exec(pg_.get(), "DELETE FROM backfill_cursor");
            return;
        }
        for (int i = 0; i < rows; ++i) {
            for (auto& st : kinds_) {
                if (pg_text(res.get(), i, 0) != kind_name(st.kind)) continue;
                st.cursor.offset = pg_int(res.get(), i, 2);
                st.cursor.last_id = pg_text(res.get(), i, 3);
                st.cursor.last_created_at = pg_int(res.get(), i, 4);
                auto& k = st.counts;
                k.pages = pg_int(res.get(), i, 5);
                k.created = pg_int(res.get(), i, 6);
                k.updated = pg_int(res.get(), i, 7);
                k.unchanged = pg_int(res.get(), i, 8);
                k.stale = pg_int(res.get(), i, 9);
                k.invalid = pg_int(res.get(), i, 10);
                k.before_since = pg_int(res.get(), i, 11);
                st.done = pg_bool(res.get(), i, 12);
                log::info(std::string("backfill: resuming ") + kind_name(st.kind) +
                          (st.done ? " (done)"
                                   : " after " + std::to_string(k.pages) + " page(s), " +
                                         std::to_string(k.total()) + " object(s)"));
            }
        }
    }

    bool is_last_kind(const KindState& st) const { return &st == &kinds_.back(); }

    // Applies the objects and the new cursor in one transaction (retried on
    // a deadlock with a concurrent webhook); on success `st` becomes `next`.
    void commit_page(KindState& st, KindState next, const std::vector<const ListedObject*>& objs) {
        for (int attempt = 1;; ++attempt) {
            KindState trial = next;
            try {
                PgTransaction tx(pg_.get());
                std::vector<std::string> ids;
                for (const auto* o : objs) {
                    if (o->change) ids.push_back(o->id);
                }
                auto before = ids.empty() ? std::map<std::string, StoredVersion>{}
                                          : stored_versions(pg_.get(), st.kind, ids);
                for (const auto* o : objs) {
                    auto& k = trial.counts;
                    if (!o->change) {
                        ++k.invalid;
                        log::warn(std::string("backfill: ") + kind_name(st.kind) +
                                  ": an object was skipped: " + o->error);
                        continue;
                    }
                    if (options_.since_ms && o->updated_at_ms < *options_.since_ms) {
                        ++k.before_since;
                        continue;
                    }
                    StoreResult result;
                    bool applied = apply_change(pg_.get(), *o->change, store_options_, result);
                    auto it = before.find(o->id);
                    auto prior = it == before.end() ? std::nullopt
                                                    : std::optional<StoredVersion>(it->second);
                    switch (tally(prior, applied, o->updated_at_ms)) {
                        case Tally::created:
                            ++k.created;
                            break;
                        case Tally::updated:
                            ++k.updated;
                            break;
                        case Tally::unchanged:
                            ++k.unchanged;
                            break;
                        case Tally::stale:
                            ++k.stale;
                            break;
                    }
                }
                ++trial.counts.pages;
                save_cursor(pg_.get(), trial, options_.since_ms);
                if (trial.done && is_last_kind(st)) complete(trial);
                tx.commit();
                st = std::move(trial);
                return;
            } catch (const PgError& e) {
                bool retry = e.sqlstate == "40P01" || e.sqlstate == "40001" || e.connection_lost;
                if (!retry || attempt >= kPageAttempts) throw;
                log::warn(std::string("backfill: ") + kind_name(st.kind) +
                          ": page retried: " + e.what());
                if (e.connection_lost || PQstatus(pg_.get()) != CONNECTION_OK) {
                    std::this_thread::sleep_for(std::chrono::milliseconds(500 * attempt));
                    connect();
                }
            }
        }
    }

    // The run is complete: recorded, and the cursor removed so that the
    // next run starts over. Inside the last page's transaction.
    void complete(const KindState& last) {
        std::vector<KindState> all = kinds_;
        all.back() = last;
        pg_exec(pg_.get(),
                "INSERT INTO backfill_runs (since_ms, started_at, summary) "
                "SELECT $1, coalesce(min(started_at), now()), $2 FROM backfill_cursor",
                {options_.since_ms ? PgParam(std::to_string(*options_.since_ms)) : std::nullopt,
                 summary_of(all, options_.since_ms.has_value())});
        pg_exec(pg_.get(), "DELETE FROM backfill_cursor");
    }

    void progress(const KindState& st, std::optional<std::int64_t> total, const char* unit,
                  long long done_units, bool force) {
        auto now = Clock::now();
        if (!force && now - last_print_ < std::chrono::seconds(1)) return;
        last_print_ = now;
        const double secs = std::chrono::duration<double>(now - phase_start_).count();
        const double rate = secs > 0 ? static_cast<double>(phase_objects_) / secs : 0;
        std::string line = std::string("backfill: ") + kind_name(st.kind) + ": " +
                           std::to_string(done_units) + " " + unit;
        if (total) line += " of " + std::to_string(*total);
        line += ", " + std::to_string(st.counts.pages) + " pages";
        char buf[96];
        std::snprintf(buf, sizeof buf, ", %.0f objects/s", rate);
        line += buf;
        if (total && rate > 0 && *total > done_units && !st.done) {
            // Sessions: users left, at the users-per-second rate so far.
            const double per_unit = static_cast<double>(phase_units_) / secs;
            const double left =
                per_unit > 0 ? static_cast<double>(*total - done_units) / per_unit : 0;
            std::snprintf(buf, sizeof buf, ", about %.0f s left", left);
            line += buf;
        }
        if (st.done) line += ", done";
        std::fprintf(stderr, "%s\n", line.c_str());
    }

    void run_list(KindState& st) {
        std::optional<std::int64_t> total;
        if (st.kind == Kind::users) {
            // /v1/users answers a bare array; its count is a call of its own.
            total = decode_total_count(api_.get("/v1/users/count").body);
        }
        const int limit = options_.page_limit;
        std::int64_t requested = request_offset(st.cursor);
        while (!st.done) {
            const std::string path =
                std::string(list_path(st.kind)) + "?limit=" + std::to_string(limit) +
                "&offset=" + std::to_string(requested) + "&order_by=%2Bcreated_at";
            ListedPage page = decode_list_page(api_.get(path).body, st.kind);
            fetched_ += static_cast<long long>(page.objects.size());
            if (page.total_count) total = page.total_count;
            PageStep step = advance(st.cursor, requested, page.objects, limit);
            if (step.step_back_to) {
                log::info(std::string("backfill: ") + kind_name(st.kind) +
                          ": the listing moved under the cursor (objects deleted meanwhile); "
                          "stepping back to offset " +
                          std::to_string(*step.step_back_to));
                requested = *step.step_back_to;
                continue;
            }
            std::vector<const ListedObject*> objs;
            for (auto i : step.take) objs.push_back(&page.objects[i]);
            KindState next = st;
            next.cursor = step.next;
            next.done = step.last_page;
            commit_page(st, next, objs);
            phase_objects_ += static_cast<long long>(objs.size());
            phase_units_ += static_cast<long long>(objs.size());
            progress(st, total, "objects", st.cursor.offset, st.done);
            requested = request_offset(st.cursor);
        }
    }

    void run_sessions(KindState& st) {
        auto count = pg_exec(pg_.get(), "SELECT count(*) FROM users WHERE deleted_at IS NULL");
        const std::int64_t total = pg_int(count.get(), 0, 0);
        auto done_before = pg_exec(
            pg_.get(), "SELECT count(*) FROM users WHERE deleted_at IS NULL AND clerk_id <= $1",
            {st.cursor.last_id});
        long long users_done = pg_int(done_before.get(), 0, 0);
        const int limit = options_.page_limit;
        while (!st.done) {
            // Live users in clerk_id order, after the last batch committed:
            // a user created meanwhile has its sessions from webhooks.
            auto batch = pg_exec(pg_.get(),
                                 "SELECT clerk_id FROM users WHERE deleted_at IS NULL AND "
                                 "clerk_id > $1 ORDER BY clerk_id LIMIT $2",
                                 {st.cursor.last_id, std::to_string(kSessionUsersPerBatch)});
            const int n = PQntuples(batch.get());
            std::vector<ListedPage> pages;
            for (int i = 0; i < n; ++i) {
                const std::string user = pg_text(batch.get(), i, 0);
                // Clerk lists sessions only per user (or client): one call per
                // user, more only for a user with over `limit` active sessions.
                for (std::int64_t offset = 0;; offset += limit) {
                    const std::string path =
                        "/v1/sessions?user_id=" + url_encode(user) +
                        "&status=active&paginated=true&limit=" + std::to_string(limit) +
                        "&offset=" + std::to_string(offset);
                    pages.push_back(decode_list_page(api_.get(path).body, Kind::sessions));
                    const auto got = pages.back().objects.size();
                    fetched_ += static_cast<long long>(got);
                    if (got < static_cast<std::size_t>(limit)) break;
                }
            }
            std::vector<const ListedObject*> objs;
            for (const auto& p : pages) {
                for (const auto& o : p.objects) objs.push_back(&o);
            }
            KindState next = st;
            if (n > 0) next.cursor.last_id = pg_text(batch.get(), n - 1, 0);
            next.done = n < kSessionUsersPerBatch;
            commit_page(st, next, objs);
            users_done += n;
            phase_objects_ += static_cast<long long>(objs.size());
            phase_units_ += n;
            progress(st, total, "users", users_done, st.done);
        }
    }

    const Config& cfg_;
    BackfillOptions options_;
    clerk::BackendApi api_;
    StoreOptions store_options_;
    PgConn pg_;
    std::vector<KindState> kinds_;
    Clock::time_point phase_start_{};
    Clock::time_point last_print_{};
    long long phase_objects_ = 0;
    long long phase_units_ = 0;
    long long fetched_ = 0;
};

}  // namespace

std::string run_backfill(const Config& cfg, const BackfillOptions& options) {
    if (options.page_limit < 1 || options.page_limit > 500) {
        throw std::invalid_argument("page limit must be 1-500");
    }
    Run run(cfg, options);
    return run.go();
}

}  // namespace syncd
