// `syncd migrate`: applies schema/NNN_*.sql (embedded in the binary at build
// time) in order, each in its own transaction, recording it with its
// checksum in schema_migrations. Idempotent and safe to run concurrently:
// an advisory lock serialises runners.
#pragma once

#include <libpq-fe.h>

#include <string>
#include <vector>

namespace syncd {

struct Migration {
    int version;
    std::string name;  // the file name
    std::string sql;
};

// The migrations compiled in, in order.
const std::vector<Migration>& embedded_migrations();

struct MigrateReport {
    int applied = 0;
    int already = 0;
};

// Throws PgError, or std::runtime_error when a recorded migration's
// checksum differs from the embedded file (someone edited an applied file).
MigrateReport migrate(PGconn* conn, const std::vector<Migration>& migrations);

}  // namespace syncd
