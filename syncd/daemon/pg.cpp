#include "daemon/pg.hpp"

#include <cstdlib>

namespace syncd {
namespace {

std::string trimmed_error(const char* msg) {
    std::string s = msg ? msg : "";
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}

}  // namespace

PgConn pg_connect(const std::string& conninfo) {
    // Keywords are applied in order and the expanded dbname comes last, so
    // a connect_timeout written in the conninfo wins over this default.
    const char* keys[] = {"connect_timeout", "application_name", "dbname", nullptr};
    const char* values[] = {"5", "syncd", conninfo.c_str(), nullptr};
    PgConn conn(PQconnectdbParams(keys, values, /*expand_dbname=*/1));
    if (!conn) throw PgError("out of memory connecting to PostgreSQL", true);
    if (PQstatus(conn.get()) != CONNECTION_OK) {
        throw PgError("cannot connect to PostgreSQL: " + trimmed_error(PQerrorMessage(conn.get())),
                      true);
    }
    return conn;
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
    std::string msg = res ? trimmed_error(PQresultErrorMessage(res.get())) : "";
    if (msg.empty()) msg = trimmed_error(PQerrorMessage(conn));
    // Class 08 (connection exception) and 57P (operator intervention, e.g.
    // the server shutting down) mean: try again on another connection.
    std::string sqlstate = state ? state : "";
    if (sqlstate.rfind("08", 0) == 0 || sqlstate.rfind("57P", 0) == 0) lost = true;
    throw PgError("PostgreSQL: " + msg, lost, sqlstate);
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
    if (pool_) pool_->release(std::move(conn_));
}

PgPool::Lease PgPool::acquire() {
    PgConn conn;
    {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return in_use_ < size_; });
        ++in_use_;
        if (!idle_.empty()) {
            conn = std::move(idle_.back());
            idle_.pop_back();
        }
    }
    if (!conn) {
        try {
            conn = pg_connect(conninfo_);
        } catch (...) {
            release(nullptr);
            throw;
        }
    }
    return Lease(this, std::move(conn));
}

void PgPool::release(PgConn conn) {
    std::lock_guard<std::mutex> lock(mu_);
    --in_use_;
    // A connection left inside a transaction or broken is not reused.
    if (conn && PQstatus(conn.get()) == CONNECTION_OK &&
        PQtransactionStatus(conn.get()) == PQTRANS_IDLE) {
        idle_.push_back(std::move(conn));
    }
    cv_.notify_one();
}

}  // namespace syncd
