// One blocking connection to a Redis server (or a sentinel) of syncd's own:
// a TCP or Unix socket, optionally TLS with OpenSSL, since Debian's hiredis
// 0.14 has no TLS. hiredis only encodes commands (redisFormatCommandArgv)
// and decodes replies (redisReader). Every operation has a deadline; a
// failure throws RedisError and leaves the connection broken for good (the
// caller opens a new one, through the sentinels when there are some).
#pragma once

#include <hiredis/hiredis.h>
#include <openssl/ssl.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/redis_address.hpp"
#include "core/config.hpp"

namespace syncd {

struct RedisReplyDeleter {
    void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using RedisReplyPtr = std::unique_ptr<redisReply, RedisReplyDeleter>;

class RedisError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// The TLS handshake failed (certificate, name, protocol), or the server
// refused the client certificate right after it (TLS 1.3 sends that alert
// after the client's side completed): counted apart in the metrics.
class RedisTlsError : public RedisError {
  public:
    using RedisError::RedisError;
};

struct SslCtxDeleter {
    void operator()(SSL_CTX* c) const noexcept { SSL_CTX_free(c); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxDeleter>;

// The client side of TLS as configured (CA, client certificate, TLS 1.2+,
// verification on or off), shared by every connection of one Redis. Throws
// RedisError naming the key and the file that OpenSSL could not load.
SslCtxPtr make_tls_context(const RedisTls& tls);

class RedisConn {
  public:
    // Connects to `endpoint` (a name is resolved with getaddrinfo and each
    // address tried in turn) and, when `ssl_ctx` is given, completes the TLS
    // handshake, verifying the certificate against `tls.server_name` or the
    // endpoint's host. `timeout` bounds the whole connection and, later,
    // each exchange.
    RedisConn(const session::common::RedisEndpoint& endpoint, SSL_CTX* ssl_ctx, const RedisTls& tls,
              std::chrono::milliseconds timeout);
    ~RedisConn();
    RedisConn(const RedisConn&) = delete;
    RedisConn& operator=(const RedisConn&) = delete;

    using Commands = std::vector<std::vector<std::string>>;
    // Sends the commands (then `more`, e.g. a WAIT, without copying the
    // first) in one write and reads one reply for each, in order. Error
    // replies are returned, not thrown: the caller decides.
    std::vector<RedisReplyPtr> exchange(const Commands& commands, const Commands& more = {});

    // On a subscribed connection: the next message pushed by the server, or
    // nullptr when none came within `wait` (the connection stays usable, so
    // that a thread can look at its stop flag between waits).
    RedisReplyPtr next_message(std::chrono::milliseconds wait);

    bool broken() const { return broken_; }
    // host:port or unix:/path: the server without credentials, for messages.
    const std::string& server() const { return server_; }
    const session::common::RedisEndpoint& endpoint() const { return endpoint_; }

  private:
    using Deadline = std::chrono::steady_clock::time_point;

    struct UniqueFd {
        int fd = -1;
        UniqueFd() = default;
        UniqueFd(const UniqueFd&) = delete;
        UniqueFd& operator=(const UniqueFd&) = delete;
        ~UniqueFd();
    };
    struct SslDeleter {
        void operator()(SSL* s) const noexcept { SSL_free(s); }
    };
    struct ReaderDeleter {
        void operator()(redisReader* r) const noexcept { redisReaderFree(r); }
    };

    [[noreturn]] void fail(const std::string& cause);
    void connect_socket(const session::common::RedisEndpoint& endpoint, Deadline deadline);
    void handshake(const session::common::RedisEndpoint& endpoint, SSL_CTX* ssl_ctx,
                   const RedisTls& tls, Deadline deadline);
    int socket_error() const;
    // False when the deadline passed; wait() makes that a failure.
    bool ready(short events, Deadline deadline);
    void wait(short events, Deadline deadline, const char* doing);
    void send_all(const std::string& bytes, Deadline deadline);
    // Appends what the socket has to the reader. `timeout_fails` false: a
    // deadline passed is `nothing` rather than a failure.
    enum class Received { data, end, nothing };
    Received receive(Deadline deadline, bool timeout_fails = true);
    std::string tls_failure(int ret, const char* doing);
    std::string pending_alert();

    session::common::RedisEndpoint endpoint_;
    std::string server_;
    std::chrono::milliseconds timeout_;
    bool broken_ = false;
    bool answered_ = false;  // a reply came: the TLS handshake is behind us
    // Declared in this order so that SSL is freed before the socket closes.
    UniqueFd fd_;
    std::unique_ptr<SSL, SslDeleter> ssl_;
    std::unique_ptr<redisReader, ReaderDeleter> reader_;
};

}  // namespace syncd
