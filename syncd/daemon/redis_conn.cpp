#include "daemon/redis_conn.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

namespace syncd {
namespace {

using Clock = std::chrono::steady_clock;

struct AddrinfoDeleter {
    void operator()(addrinfo* a) const noexcept { freeaddrinfo(a); }
};

// The oldest error in OpenSSL's queue (the cause; later ones are context),
// and the queue emptied so that it does not leak into the next call.
std::string openssl_error() {
    unsigned long code = ERR_get_error();
    std::string text = "unknown TLS error";
    if (code != 0) {
        char buf[256];
        ERR_error_string_n(code, buf, sizeof buf);
        text = buf;
    }
    ERR_clear_error();
    return text;
}

bool is_ip_literal(const std::string& host) {
    unsigned char buf[sizeof(in6_addr)];
    return inet_pton(AF_INET, host.c_str(), buf) == 1 ||
           inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

void set_tcp_options(int fd) {
    int on = 1;
    // Commands go out whole in one write; do not hold back the last segment.
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    // A primary that vanished without a reset (host gone, partition) is
    // noticed between operations too, in about 25 s, not after hours.
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    int idle = 10, interval = 5, count = 3;
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
}

// OpenSSL writes to the socket with write(2), which raises SIGPIPE when the
// server has closed it; the error is reported by the call all the same, and
// a daemon must not die of it (`serve` ignores it too; `reconcile` did not).
void ignore_sigpipe() {
    static std::once_flag once;
    std::call_once(once, [] { signal(SIGPIPE, SIG_IGN); });
}

}  // namespace

SslCtxPtr make_tls_context(const RedisTls& tls) {
    ERR_clear_error();
    SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
    if (!ctx) throw RedisError("TLS: cannot create a context: " + openssl_error());
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
    // Writes may complete in parts; send_all() carries on from where one stopped.
    SSL_CTX_set_mode(ctx.get(), SSL_MODE_ENABLE_PARTIAL_WRITE);
    if (tls.verify) {
        int ok = tls.ca_file.empty()
                     ? SSL_CTX_set_default_verify_paths(ctx.get())
                     : SSL_CTX_load_verify_locations(ctx.get(), tls.ca_file.c_str(), nullptr);
        if (ok != 1) {
            throw RedisError(tls.ca_file.empty()
                                 ? "TLS: cannot load the system's CA certificates: " +
                                       openssl_error()
                                 : "SYNCD_REDIS_CA_FILE " + tls.ca_file + ": " + openssl_error());
        }
        SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    } else {
        SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
    }
    if (!tls.cert_file.empty()) {
        if (SSL_CTX_use_certificate_chain_file(ctx.get(), tls.cert_file.c_str()) != 1) {
            throw RedisError("SYNCD_REDIS_CERT_FILE " + tls.cert_file + ": " + openssl_error());
        }
        // The message names the file, never its contents.
        if (SSL_CTX_use_PrivateKey_file(ctx.get(), tls.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
            throw RedisError("SYNCD_REDIS_KEY_FILE " + tls.key_file + ": " + openssl_error());
        }
        if (SSL_CTX_check_private_key(ctx.get()) != 1) {
            throw RedisError("SYNCD_REDIS_KEY_FILE " + tls.key_file +
                             ": does not match SYNCD_REDIS_CERT_FILE " + tls.cert_file);
        }
    }
    return ctx;
}

RedisConn::UniqueFd::~UniqueFd() {
    if (fd >= 0) ::close(fd);
}

RedisConn::RedisConn(const session::common::RedisEndpoint& endpoint, SSL_CTX* ssl_ctx,
                     const RedisTls& tls, std::chrono::milliseconds timeout)
    : endpoint_(endpoint), server_(endpoint.text()), timeout_(timeout) {
    ignore_sigpipe();
    const Deadline deadline = Clock::now() + timeout_;
    connect_socket(endpoint, deadline);
    if (ssl_ctx) handshake(endpoint, ssl_ctx, tls, deadline);
    reader_.reset(redisReaderCreate());
    if (!reader_) fail("out of memory");
}

RedisConn::~RedisConn() = default;

void RedisConn::fail(const std::string& cause) {
    broken_ = true;
    throw RedisError("Redis at " + server_ + ": " + cause);
}

void RedisConn::connect_socket(const session::common::RedisEndpoint& endpoint, Deadline deadline) {
    if (endpoint.is_unix()) {
        sockaddr_un sun{};
        sun.sun_family = AF_UNIX;
        if (endpoint.unix_path.size() >= sizeof sun.sun_path) fail("the socket path is too long");
        std::memcpy(sun.sun_path, endpoint.unix_path.c_str(), endpoint.unix_path.size() + 1);
        fd_.fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd_.fd < 0) fail(std::string("socket: ") + std::strerror(errno));
        if (::connect(fd_.fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0 &&
            errno != EINPROGRESS && errno != EAGAIN) {
            fail(std::string("cannot connect: ") + std::strerror(errno));
        }
        wait(POLLOUT, deadline, "connecting");
        if (int err = socket_error()) fail(std::string("cannot connect: ") + std::strerror(err));
        return;
    }
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* raw = nullptr;
    const std::string port = std::to_string(endpoint.port);
    int rc = ::getaddrinfo(endpoint.host.c_str(), port.c_str(), &hints, &raw);
    std::unique_ptr<addrinfo, AddrinfoDeleter> list(raw);
    if (rc != 0) fail(std::string("cannot resolve the host: ") + gai_strerror(rc));
    std::string last = "no address";
    for (addrinfo* ai = list.get(); ai; ai = ai->ai_next) {
        UniqueFd fd;
        fd.fd = ::socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd.fd < 0) {
            last = std::string("socket: ") + std::strerror(errno);
            continue;
        }
        if (::connect(fd.fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
            last = std::strerror(errno);
            continue;
        }
        std::swap(fd_.fd, fd.fd);
        // A timeout throws: the deadline is spent, no time for the next address.
        wait(POLLOUT, deadline, "connecting");
        int err = socket_error();
        if (err == 0) {
            set_tcp_options(fd_.fd);
            return;
        }
        last = std::strerror(err);
        std::swap(fd_.fd, fd.fd);  // closed by `fd` on the way out
    }
    fail("cannot connect: " + last);
}

int RedisConn::socket_error() const {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd_.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
    return err;
}

void RedisConn::handshake(const session::common::RedisEndpoint& endpoint, SSL_CTX* ssl_ctx,
                          const RedisTls& tls, Deadline deadline) {
    ERR_clear_error();
    ssl_.reset(SSL_new(ssl_ctx));
    if (!ssl_ || SSL_set_fd(ssl_.get(), fd_.fd) != 1) {
        fail("TLS: cannot set up the connection: " + openssl_error());
    }
    const std::string& name = tls.server_name.empty() ? endpoint.host : tls.server_name;
    const bool ip = is_ip_literal(name);
    // SNI carries names only (RFC 6066); an IP address is checked against
    // the certificate's IP entries instead of its DNS names.
    if (!ip && SSL_set_tlsext_host_name(ssl_.get(), name.c_str()) != 1) {
        fail("TLS: cannot set the server name: " + openssl_error());
    }
    if (tls.verify) {
        int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_.get()), name.c_str())
                    : SSL_set1_host(ssl_.get(), name.c_str());
        if (ok != 1) fail("TLS: cannot set the name to verify: " + openssl_error());
    }
    while (true) {
        ERR_clear_error();
        int ret = SSL_connect(ssl_.get());
        if (ret == 1) return;
        int err = SSL_get_error(ssl_.get(), ret);
        if (err == SSL_ERROR_WANT_READ) {
            wait(POLLIN, deadline, "in the TLS handshake");
        } else if (err == SSL_ERROR_WANT_WRITE) {
            wait(POLLOUT, deadline, "in the TLS handshake");
        } else {
            broken_ = true;
            long verify = SSL_get_verify_result(ssl_.get());
            if (verify != X509_V_OK) {
                throw RedisTlsError("Redis at " + server_ +
                                    ": TLS certificate verification failed: " +
                                    X509_verify_cert_error_string(verify));
            }
            throw RedisTlsError("Redis at " + server_ + ": " +
                                tls_failure(ret, "TLS handshake failed"));
        }
    }
}

std::string RedisConn::tls_failure(int ret, const char* doing) {
    int err = SSL_get_error(ssl_.get(), ret);
    if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        return std::string(doing) + (errno != 0
                                         ? std::string(": ") + std::strerror(errno)
                                         : std::string(": the server closed the connection"));
    }
    if (err == SSL_ERROR_ZERO_RETURN) {
        return std::string(doing) + ": the server closed the connection";
    }
    return std::string(doing) + ": " + openssl_error();
}

// A server that refuses the client certificate under TLS 1.3 does so after
// the client's handshake has completed: its alert then sits unread behind
// the reset that failed our write. Reading it tells the operator why.
std::string RedisConn::pending_alert() {
    ERR_clear_error();
    char byte;
    int n = SSL_read(ssl_.get(), &byte, 1);
    if (n > 0 || SSL_get_error(ssl_.get(), n) != SSL_ERROR_SSL) return "";
    return openssl_error();
}

bool RedisConn::ready(short events, Deadline deadline) {
    while (true) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) return false;
        pollfd p{fd_.fd, events, 0};
        int n = ::poll(&p, 1, static_cast<int>(left.count()));
        if (n > 0) return true;  // ready, or an error the next call reports
        if (n < 0 && errno != EINTR) fail(std::string("poll: ") + std::strerror(errno));
    }
}

void RedisConn::wait(short events, Deadline deadline, const char* doing) {
    if (!ready(events, deadline)) {
        fail(std::string("timed out after ") + std::to_string(timeout_.count()) + " ms " + doing);
    }
}

void RedisConn::send_all(const std::string& bytes, Deadline deadline) {
    std::size_t done = 0;
    while (done < bytes.size()) {
        const char* p = bytes.data() + done;
        const std::size_t left = bytes.size() - done;
        if (ssl_) {
            ERR_clear_error();
            errno = 0;
            int n =
                SSL_write(ssl_.get(), p, static_cast<int>(std::min<std::size_t>(left, 1 << 30)));
            if (n > 0) {
                done += static_cast<std::size_t>(n);
                continue;
            }
            int err = SSL_get_error(ssl_.get(), n);
            if (err == SSL_ERROR_WANT_WRITE) {
                wait(POLLOUT, deadline, "sending");
            } else if (err == SSL_ERROR_WANT_READ) {
                wait(POLLIN, deadline, "sending");
            } else {
                std::string cause = tls_failure(n, "cannot send");
                std::string alert = pending_alert();
                if (alert.empty()) fail(cause);
                broken_ = true;
                throw RedisTlsError("Redis at " + server_ +
                                    ": TLS: the server ended the connection: " + alert);
            }
            continue;
        }
        ssize_t n = ::send(fd_.fd, p, left, MSG_NOSIGNAL);
        if (n >= 0) {
            done += static_cast<std::size_t>(n);
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            wait(POLLOUT, deadline, "sending");
        } else if (errno != EINTR) {
            fail(std::string("cannot send: ") + std::strerror(errno));
        }
    }
}

RedisConn::Received RedisConn::receive(Deadline deadline, bool timeout_fails) {
    // Waits for the socket; a soft deadline ends the call with `nothing`.
    auto await = [&](short events) {
        if (timeout_fails) {
            wait(events, deadline, "waiting for a reply");
            return true;
        }
        return ready(events, deadline);
    };
    char buf[16384];
    while (true) {
        if (ssl_) {
            ERR_clear_error();
            errno = 0;
            int n = SSL_read(ssl_.get(), buf, sizeof buf);
            if (n > 0) {
                if (redisReaderFeed(reader_.get(), buf, static_cast<size_t>(n)) != REDIS_OK) {
                    fail("out of memory");
                }
                return Received::data;
            }
            int err = SSL_get_error(ssl_.get(), n);
            if (err == SSL_ERROR_WANT_READ) {
                if (!await(POLLIN)) return Received::nothing;
            } else if (err == SSL_ERROR_WANT_WRITE) {
                if (!await(POLLOUT)) return Received::nothing;
            } else if (err == SSL_ERROR_ZERO_RETURN) {
                return Received::end;
            } else {
                std::string cause = tls_failure(n, "cannot read a reply");
                // Before any reply, a TLS error is the end of the handshake
                // (TLS 1.3: the verdict on our certificate comes now).
                if (err == SSL_ERROR_SSL && !answered_) {
                    broken_ = true;
                    throw RedisTlsError("Redis at " + server_ + ": " + cause);
                }
                fail(cause);
            }
            continue;
        }
        ssize_t n = ::recv(fd_.fd, buf, sizeof buf, 0);
        if (n > 0) {
            if (redisReaderFeed(reader_.get(), buf, static_cast<size_t>(n)) != REDIS_OK) {
                fail("out of memory");
            }
            return Received::data;
        }
        if (n == 0) return Received::end;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (!await(POLLIN)) return Received::nothing;
        } else if (errno != EINTR) {
            fail(std::string("cannot read a reply: ") + std::strerror(errno));
        }
    }
}

std::vector<RedisReplyPtr> RedisConn::exchange(const Commands& commands, const Commands& more) {
    if (broken_) fail("the connection is broken");
    std::string out;
    const std::size_t count = commands.size() + more.size();
    for (std::size_t i = 0; i < count; ++i) {
        const auto& argv = i < commands.size() ? commands[i] : more[i - commands.size()];
        std::vector<const char*> ptrs;
        std::vector<size_t> lens;
        for (const auto& a : argv) {
            ptrs.push_back(a.data());
            lens.push_back(a.size());
        }
        char* cmd = nullptr;
        int len =
            redisFormatCommandArgv(&cmd, static_cast<int>(argv.size()), ptrs.data(), lens.data());
        if (len < 0) fail("out of memory");
        out.append(cmd, static_cast<std::size_t>(len));
        redisFreeCommand(cmd);
    }
    const Deadline deadline = Clock::now() + timeout_;
    send_all(out, deadline);
    std::vector<RedisReplyPtr> replies;
    replies.reserve(count);
    while (replies.size() < count) {
        void* raw = nullptr;
        if (redisReaderGetReply(reader_.get(), &raw) != REDIS_OK) {
            fail(std::string("protocol error: ") + reader_->errstr);
        }
        if (raw) {
            replies.emplace_back(static_cast<redisReply*>(raw));
            answered_ = true;
            continue;
        }
        if (receive(deadline) == Received::end) fail("the server closed the connection");
    }
    return replies;
}

RedisReplyPtr RedisConn::next_message(std::chrono::milliseconds wait) {
    if (broken_) fail("the connection is broken");
    const Deadline deadline = Clock::now() + wait;
    while (true) {
        void* raw = nullptr;
        if (redisReaderGetReply(reader_.get(), &raw) != REDIS_OK) {
            fail(std::string("protocol error: ") + reader_->errstr);
        }
        if (raw) return RedisReplyPtr(static_cast<redisReply*>(raw));
        switch (receive(deadline, false)) {
            case Received::data:
                break;
            case Received::nothing:
                return nullptr;
            case Received::end:
                fail("the server closed the connection");
        }
    }
}

}  // namespace syncd
