#include "daemon/migrate.hpp"

#include <openssl/evp.h>

#include <cstdio>
#include <memory>
#include <stdexcept>

#include "daemon/log.hpp"
#include "daemon/pg.hpp"

namespace syncd {
namespace {

std::string sha256_hex(const std::string& data) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr) != 1) {
        throw std::runtime_error("SHA-256 failed");
    }
    std::string hex;
    char buf[3];
    for (unsigned int i = 0; i < len; ++i) {
        std::snprintf(buf, sizeof buf, "%02x", digest[i]);
        hex += buf;
    }
    return hex;
}

// Runs a migration file: its text is the statement list, run as a simple
// query (the file is trusted source, not built from input).
void run_script(PGconn* conn, const Migration& m) {
    PgResult res(PQexec(conn, m.sql.c_str()));
    auto st = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        bool lost = PQstatus(conn) != CONNECTION_OK;
        throw PgError("migration " + m.name + " failed: " + pg_result_error(res.get(), lost), lost);
    }
}

}  // namespace

MigrateReport migrate(PGconn* conn, const std::vector<Migration>& migrations) {
    // A migration may rightly take longer than the daemon's default
    // statement_timeout, and so may waiting for a concurrent `migrate`.
    pg_exec(conn, "SET statement_timeout = 0");
    // Session-level lock: held across the per-migration transactions.
    pg_exec(conn, "SELECT pg_advisory_lock(1398361669, 0)");
    struct Unlock {
        PGconn* c;
        ~Unlock() { PgResult r(PQexec(c, "SELECT pg_advisory_unlock(1398361669, 0)")); }
    } unlock{conn};
    pg_exec(conn,
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())");
    MigrateReport report;
    for (std::size_t i = 1; i < migrations.size(); ++i) {
        if (migrations[i].version <= migrations[i - 1].version) {
            throw std::runtime_error("two migrations numbered " +
                                     std::to_string(migrations[i].version));
        }
    }
    for (const auto& m : migrations) {
        std::string checksum = sha256_hex(m.sql);
        auto found = pg_exec(conn, "SELECT checksum FROM schema_migrations WHERE version = $1",
                             {std::to_string(m.version)});
        if (PQntuples(found.get()) == 1) {
            if (pg_text(found.get(), 0, 0) != checksum) {
                throw std::runtime_error("migration " + m.name +
                                         " was changed after it was applied; add a new "
                                         "migration instead");
            }
            ++report.already;
            continue;
        }
        PgTransaction tx(conn);
        run_script(conn, m);
        pg_exec(conn, "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                {std::to_string(m.version), m.name, checksum});
        tx.commit();
        log::info("applied migration " + m.name);
        ++report.applied;
    }
    return report;
}

}  // namespace syncd
