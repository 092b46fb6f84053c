#include "daemon/pg.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

namespace syncd {
namespace {

// Defaults a conninfo may override. The socket settings bound how long a
// half-open network can keep a call blocked; the statement timeout is set
// through `options`, merged with the user's (see pg_connect_params).
constexpr std::pair<const char*, const char*> kDefaults[] = {
    {"connect_timeout", "5"}, {"application_name", "syncd"}, {"tcp_user_timeout", "10000"},
    {"keepalives", "1"},      {"keepalives_idle", "10"},
};
constexpr const char* kStatementTimeout = "-c statement_timeout=10s";
constexpr auto kAcquireTimeout = std::chrono::seconds(5);

// A fixed phrase for a failed connection. libpq's message quotes parts of
// the conninfo (user, options, a badly encoded password), so it is only
// matched against, never shown.
std::string connect_reason(PGconn* conn) {
    if (PQconnectionNeedsPassword(conn)) return "the server asks for a password";
    static const std::pair<const char*, const char*> known[] = {
        {"Connection refused", "connection refused"},
        {"timeout expired", "timed out"},
        {"Connection timed out", "timed out"},
        {"could not translate host name", "host name not resolved"},
        {"password authentication failed", "password authentication failed"},
        {"no pg_hba.conf entry", "rejected by pg_hba.conf"},
        {"does not exist", "role or database does not exist"},
        {"starting up", "the server is starting up"},
        {"shutting down", "the server is shutting down"},
        {"too many clients", "too many connections"},
        {"No such file or directory", "no server socket at that path"},
    };
    const char* msg = PQerrorMessage(conn);
    for (const auto& [needle, reason] : known) {
        if (msg && std::strstr(msg, needle)) return reason;
    }
    return "connection failed";
}

// host:port/dbname of the last attempt, as libpq resolved them.
std::string connect_target(PGconn* conn) {
    auto text = [](const char* s) { return std::string(s ? s : ""); };
    std::string host = text(PQhost(conn)), port = text(PQport(conn)), db = text(PQdb(conn));
    if (host.empty() && port.empty() && db.empty()) return "";
    return " at " + host + (port.empty() ? "" : ":" + port) + (db.empty() ? "" : "/" + db);
}

}  // namespace

std::vector<std::pair<std::string, std::string>> pg_connect_params(const std::string& conninfo) {
    char* err = nullptr;
    PQconninfoOption* parsed = PQconninfoParse(conninfo.c_str(), &err);
    PQfreemem(err);  // it may quote the conninfo, password included
    if (!parsed)
        throw PgError("SYNCD_DATABASE_URL: not a valid libpq connection string or URL", false);
    std::unique_ptr<PQconninfoOption, void (*)(PQconninfoOption*)> guard(parsed, &PQconninfoFree);
    std::vector<std::pair<std::string, std::string>> params;
    for (const PQconninfoOption* o = parsed; o->keyword; ++o) {
        if (o->val) params.emplace_back(o->keyword, o->val);
    }
    auto find = [&](const char* key) {
        return std::find_if(params.begin(), params.end(),
                            [&](const auto& p) { return p.first == key; });
    };
    for (const auto& [key, value] : kDefaults) {
        if (find(key) == params.end()) params.emplace_back(key, value);
    }
    // Ours first: a statement_timeout among the user's options comes later
    // and wins. Passing `options` replaces PGOPTIONS, so that is merged too.
    auto options = find("options");
    if (options != params.end()) {
        options->second = std::string(kStatementTimeout) + " " + options->second;
    } else {
        const char* env = std::getenv("PGOPTIONS");
        params.emplace_back("options", std::string(kStatementTimeout) +
                                           (env && *env ? std::string(" ") + env : ""));
    }
    return params;
}

PgConn pg_connect(const std::string& conninfo) {
    auto params = pg_connect_params(conninfo);
    std::vector<const char*> keys, values;
    for (const auto& [key, value] : params) {
        keys.push_back(key.c_str());
        values.push_back(value.c_str());
    }
    keys.push_back(nullptr);
    values.push_back(nullptr);
    PgConn conn(PQconnectdbParams(keys.data(), values.data(), /*expand_dbname=*/0));
    if (!conn) throw PgError("out of memory connecting to PostgreSQL", true);
    if (PQstatus(conn.get()) != CONNECTION_OK) {
        throw PgError("cannot connect to PostgreSQL" + connect_target(conn.get()) + ": " +
                          connect_reason(conn.get()),
                      true);
    }
    return conn;
}

std::string pg_result_error(const PGresult* res, bool lost) {
    const char* primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
    const char* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
    std::string msg = primary && *primary ? primary
                      : lost              ? "connection to the server lost"
                                          : "statement failed";
    if (state && *state) msg += std::string(" (SQLSTATE ") + state + ")";
    return msg;
}

PgResult pg_exec(PGconn* conn, const char* sql, const std::vector<PgParam>& params) {
    std::vector<const char*> values;
    values.reserve(params.size());
    for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
    PgResult res(PQexecParams(conn, sql, static_cast<int>(values.size()), nullptr, values.data(),
                              nullptr, nullptr, 0));
    ExecStatusType st = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return res;
    bool lost = PQstatus(conn) != CONNECTION_OK;
    const char* state = res ? PQresultErrorField(res.get(), PG_DIAG_SQLSTATE) : nullptr;
    // Class 08 (connection exception) and 57P (operator intervention, e.g.
    // the server shutting down) mean: try again on another connection.
    std::string sqlstate = state ? state : "";
    if (sqlstate.rfind("08", 0) == 0 || sqlstate.rfind("57P", 0) == 0) lost = true;
    // Only the primary message: DETAIL and the full text may quote row data.
    throw PgError("PostgreSQL: " + pg_result_error(res.get(), lost), lost, sqlstate);
}

std::string pg_text(const PGresult* r, int row, int col) {
    return PQgetisnull(r, row, col) ? std::string() : std::string(PQgetvalue(r, row, col));
}

std::optional<std::string> pg_opt_text(const PGresult* r, int row, int col) {
    if (PQgetisnull(r, row, col)) return std::nullopt;
    return std::string(PQgetvalue(r, row, col));
}

std::int64_t pg_int(const PGresult* r, int row, int col) {
    return PQgetisnull(r, row, col) ? 0 : std::strtoll(PQgetvalue(r, row, col), nullptr, 10);
}

std::optional<std::int64_t> pg_opt_int(const PGresult* r, int row, int col) {
    if (PQgetisnull(r, row, col)) return std::nullopt;
    return std::strtoll(PQgetvalue(r, row, col), nullptr, 10);
}

bool pg_bool(const PGresult* r, int row, int col) {
    return !PQgetisnull(r, row, col) && PQgetvalue(r, row, col)[0] == 't';
}

std::string pg_text_array(const std::vector<std::string>& items) {
    std::string out = "{";
    for (std::size_t i = 0; i < items.size(); ++i) {
        if (i) out += ',';
        out += '"';
        for (char ch : items[i]) {
            if (ch == '"' || ch == '\\') out += '\\';
            out += ch;
        }
        out += '"';
    }
    return out + "}";
}

PgTransaction::PgTransaction(PGconn* conn) : conn_(conn) {
    pg_exec(conn_, "BEGIN");
}

PgTransaction::~PgTransaction() {
    if (!open_) return;
    // Best effort: on a broken connection the server rolls back by itself.
    PgResult res(PQexec(conn_, "ROLLBACK"));
}

void PgTransaction::commit() {
    open_ = false;
    pg_exec(conn_, "COMMIT");
}

PgPool::Lease::~Lease() {
    if (pool_) pool_->release(std::move(conn_), epoch_);
}

PgPool::Lease PgPool::acquire() {
    PgConn conn;
    std::uint64_t epoch = 0;
    {
        std::unique_lock<std::mutex> lock(mu_);
        // Bounded: with every connection stuck, answer 503 rather than queue.
        if (!cv_.wait_for(lock, kAcquireTimeout, [&] { return in_use_ < size_; })) {
            throw PgError("PostgreSQL unavailable: no free pooled connection within 5 s", false);
        }
        ++in_use_;
        epoch = epoch_;
        if (!idle_.empty()) {
            conn = std::move(idle_.back().conn);
            epoch = idle_.back().epoch;
            idle_.pop_back();
        }
    }
    if (!conn) {
        try {
            conn = pg_connect(conninfo_);
        } catch (...) {
            release(nullptr, epoch);
            throw;
        }
    }
    return Lease(this, std::move(conn), epoch);
}

void PgPool::release(PgConn conn, std::uint64_t epoch) {
    std::vector<Idle> stale;  // closed outside the lock
    {
        std::lock_guard<std::mutex> lock(mu_);
        --in_use_;
        bool broken = conn && (PQstatus(conn.get()) != CONNECTION_OK ||
                               PQtransactionStatus(conn.get()) == PQTRANS_UNKNOWN);
        if (broken && epoch == epoch_) {
            // The first broken connection of its epoch: the others opened
            // before it most likely went with the same server restart.
            ++epoch_;
            stale.swap(idle_);
        }
        // A connection left inside a transaction, broken, or older than the
        // last broken one is not reused.
        if (conn && !broken && epoch == epoch_ && PQtransactionStatus(conn.get()) == PQTRANS_IDLE) {
            idle_.push_back({std::move(conn), epoch});
        }
    }
    cv_.notify_one();
}

}  // namespace syncd
