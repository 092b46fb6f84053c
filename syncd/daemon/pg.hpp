// libpq with RAII and parameters only: every statement is a constant SQL
// text plus text parameters. A small pool hands connections to request
// threads and drops the ones libpq reports broken; one found broken drops
// every idle one too (a server restart cut them all).
#pragma once

#include <libpq-fe.h>

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace syncd {

struct PgConnDeleter {
    void operator()(PGconn* c) const noexcept { PQfinish(c); }
};
struct PgResultDeleter {
    void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using PgConn = std::unique_ptr<PGconn, PgConnDeleter>;
using PgResult = std::unique_ptr<PGresult, PgResultDeleter>;

// A failed statement or connection. `connection_lost` tells a caller that
// the server could not be reached (answer 503, retry on a new connection).
class PgError : public std::runtime_error {
  public:
    PgError(const std::string& what, bool connection_lost, std::string sqlstate = {})
        : std::runtime_error(what),
          connection_lost(connection_lost),
          sqlstate(std::move(sqlstate)) {}
    bool connection_lost;
    std::string sqlstate;
};

using PgParam = std::optional<std::string>;  // nullopt is SQL NULL

// The keywords pg_connect passes to libpq: the conninfo's own, plus these
// defaults unless it sets them: connect_timeout=5, application_name=syncd,
// tcp_user_timeout=10000, keepalives=1, keepalives_idle=10, and
// "-c statement_timeout=10s" in front of the user's `options` (or
// PGOPTIONS), so that a statement_timeout of the user's wins. Throws PgError
// naming SYNCD_DATABASE_URL, never quoting it, when it does not parse.
std::vector<std::pair<std::string, std::string>> pg_connect_params(const std::string& conninfo);

// Connects with pg_connect_params. A failure names host:port/dbname and a
// fixed reason; libpq's message, which can quote the conninfo, is not shown.
PgConn pg_connect(const std::string& conninfo);

// "<primary message> (SQLSTATE xxxxx)" of a failed result: never DETAIL or
// the full message, which may quote row data.
std::string pg_result_error(const PGresult* res, bool connection_lost);

// Runs one statement with text parameters; throws PgError unless it
// returned rows or completed.
PgResult pg_exec(PGconn* conn, const char* sql, const std::vector<PgParam>& params = {});

// Field accessors over a result: text, nullable text, integer, boolean.
std::string pg_text(const PGresult* r, int row, int col);
std::optional<std::string> pg_opt_text(const PGresult* r, int row, int col);
std::int64_t pg_int(const PGresult* r, int row, int col);
std::optional<std::int64_t> pg_opt_int(const PGresult* r, int row, int col);
bool pg_bool(const PGresult* r, int row, int col);

// A text[] parameter: every element quoted and escaped, for "= ANY($1::text[])".
std::string pg_text_array(const std::vector<std::string>& items);

// A transaction that rolls back unless committed.
class PgTransaction {
  public:
    explicit PgTransaction(PGconn* conn);
    ~PgTransaction();
    PgTransaction(const PgTransaction&) = delete;
    PgTransaction& operator=(const PgTransaction&) = delete;
    void commit();

  private:
    PGconn* conn_;
    bool open_ = true;
};

class PgPool {
  public:
    PgPool(std::string conninfo, int size) : conninfo_(std::move(conninfo)), size_(size) {}

    // A connection on loan: returned to the pool on destruction, or dropped
    // when libpq reports it broken.
    class Lease {
      public:
        Lease(PgPool* pool, PgConn conn, std::uint64_t epoch)
            : pool_(pool), conn_(std::move(conn)), epoch_(epoch) {}
        Lease(Lease&& o) noexcept
            : pool_(std::exchange(o.pool_, nullptr)), conn_(std::move(o.conn_)), epoch_(o.epoch_) {}
        ~Lease();
        PGconn* get() const { return conn_.get(); }

      private:
        PgPool* pool_;
        PgConn conn_;
        std::uint64_t epoch_;  // the pool's epoch when the connection was opened
    };

    // Waits up to 5 s for a free slot, then connects if the slot has no
    // connection. Throws PgError: connection_lost when the server cannot be
    // reached; not lost when no slot freed up in time (all connections busy
    // or stuck), which the service also answers with 503.
    Lease acquire();

  private:
    struct Idle {
        PgConn conn;
        std::uint64_t epoch;
    };
    void release(PgConn conn, std::uint64_t epoch);

    std::string conninfo_;
    int size_;
    int in_use_ = 0;
    // Bumped when a connection is found broken: every connection opened
    // before then is dropped rather than reused, so that after a server
    // restart the next request connects afresh instead of meeting each
    // stale connection in turn (each one a failed delivery).
    std::uint64_t epoch_ = 0;
    std::vector<Idle> idle_;
    std::mutex mu_;
    std::condition_variable cv_;
};

}  // namespace syncd
