#include "nginx/redis_conn.hpp"

#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "nginx/metrics_zone.hpp"

namespace session::ngx {
namespace {

struct ReplyFree {
    void operator()(redisReply* reply) const noexcept { freeReplyObject(reply); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;

struct CommandFree {
    void operator()(char* cmd) const noexcept { redisFreeCommand(cmd); }
};
using CommandPtr = std::unique_ptr<char, CommandFree>;

// hiredis's own settings (redisKeepAlive, redisSetTcpNoDelay): a silent
// peer is noticed within about 30 s, and pipelined small writes go out at
// once rather than waiting for an ACK.
constexpr int kKeepIdleS = 15;
constexpr int kKeepIntervalS = 5;
constexpr int kKeepCount = 3;

// A read of this much is as cheap as a smaller one and drains a burst of
// pipelined replies in a few calls.
constexpr std::size_t kReadChunk = 16 * 1024;

// Send buffers above this are given back once empty (one burst should not
// pin its memory for the life of the worker).
constexpr std::size_t kKeptBuffer = 64 * 1024;

bool is_ip_literal(const ngx_str_t& name) noexcept {
    unsigned char addr[sizeof(struct in6_addr)];
    const char* text = reinterpret_cast<const char*>(name.data);
    return inet_pton(AF_INET, text, addr) == 1 || inet_pton(AF_INET6, text, addr) == 1;
}

void tune_tcp(ngx_socket_t fd) noexcept {
    int on = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
#if defined(TCP_KEEPIDLE) && defined(TCP_KEEPINTVL) && defined(TCP_KEEPCNT)
    int idle = kKeepIdleS, interval = kKeepIntervalS, count = kKeepCount;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
#endif
}

}  // namespace

RedisConn::RedisConn(ngx_log_t* log, void* owner, ReadyFn on_ready, LostFn on_lost) noexcept
    : log_(log), owner_(owner), on_ready_(on_ready), on_lost_(on_lost) {}

RedisConn::~RedisConn() {
    close();
    if (session_ != nullptr) {
        ngx_ssl_free_session(session_);
    }
}

// --- opening ------------------------------------------------------------------

bool RedisConn::open(const RedisPeer& peer) noexcept {
    close();
    peer_ = peer;
    ready_ = false;
    received_ = false;
    reason_[0] = '\0';
    captured_[0] = '\0';

    reader_ = redisReaderCreate();
    if (reader_ == nullptr) {
        set_reason("out of memory");
        return false;
    }

    quiet_log_ = *log_;
    quiet_log_.log_level = std::max<ngx_uint_t>(log_->log_level, NGX_LOG_INFO);
    quiet_log_.writer = capture_log;
    quiet_log_.wdata = this;
    quiet_log_.handler = nullptr;
    quiet_log_.data = nullptr;
    quiet_log_.action = nullptr;
    quiet_log_.next = nullptr;

    ngx_peer_connection_t pc;
    ngx_memzero(&pc, sizeof(pc));
    pc.sockaddr = peer.sockaddr;
    pc.socklen = peer.socklen;
    pc.name = peer.name;
    pc.tries = 1;
    pc.get = ngx_event_get_peer;
    pc.log = &quiet_log_;
    pc.log_error = NGX_ERROR_ERR;
    pc.so_keepalive = peer.sockaddr->sa_family != AF_UNIX;

    ngx_int_t rc = ngx_event_connect_peer(&pc);
    if (rc != NGX_OK && rc != NGX_AGAIN) {
        // nginx closed the socket itself; its message is in captured_.
        set_reason("connect failed", captured_);
        redisReaderFree(reader_);
        reader_ = nullptr;
        return false;
    }
    ngx_connection_t* c = pc.connection;
    if (peer.ssl != nullptr) {
        // ngx_ssl_create_connection allocates from it.
        c->pool = ngx_create_pool(512, &quiet_log_);
        if (c->pool == nullptr) {
            ngx_close_connection(c);
            set_reason("out of memory");
            redisReaderFree(reader_);
            reader_ = nullptr;
            return false;
        }
    }
    c_ = c;
    c->data = this;
    c->read->handler = on_connect_event;
    c->write->handler = on_connect_event;
    if (peer.sockaddr->sa_family != AF_UNIX) {
        tune_tcp(c->fd);
    }
    if (rc == NGX_OK) {
        // Connected at once (a unix socket): carry on from the event loop,
        // so that the owner is never called back from inside open().
        ngx_post_event(c->write, &ngx_posted_events);
    }
    return true;
}

void RedisConn::on_connect_event(ngx_event_t* ev) noexcept {
    auto* c = static_cast<ngx_connection_t*>(ev->data);
    auto* self = static_cast<RedisConn*>(c->data);
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1) {
        err = ngx_socket_errno;
    }
    if (err != 0) {
        u_char text[NGX_MAX_ERROR_STR];
        u_char* end = ngx_strerror(err, text, sizeof(text) - 1);
        *end = '\0';
        char detail[NGX_MAX_ERROR_STR + 32];
        ngx_snprintf(reinterpret_cast<u_char*>(detail), sizeof(detail), "(%d: %s)%Z", err, text);
        self->set_reason("connect failed", detail);
        self->fail(nullptr);
        return;
    }
    self->connected();
}

void RedisConn::connected() noexcept {
    c_->read->handler = on_read;
    c_->write->handler = on_write;
    if (peer_.ssl != nullptr) {
        start_tls();
    } else {
        become_ready();
    }
}

// As ngx_http_upstream_ssl_init_connection does for proxy_ssl.
void RedisConn::start_tls() noexcept {
    if (ngx_ssl_create_connection(peer_.ssl, c_, NGX_SSL_BUFFER | NGX_SSL_CLIENT) != NGX_OK) {
        fail("TLS setup failed", true);
        return;
    }
    // SNI names a host; RFC 6066 forbids an IP literal there.
    if (peer_.server_name.len > 0 && !is_ip_literal(peer_.server_name) &&
        SSL_set_tlsext_host_name(c_->ssl->connection,
                                 reinterpret_cast<char*>(peer_.server_name.data)) != 1) {
        fail("TLS setup failed: SNI", true);
        return;
    }
    if (session_ != nullptr && ngx_ssl_set_session(c_, session_) != NGX_OK) {
        fail("TLS setup failed: session", true);
        return;
    }
    c_->ssl->save_session = save_session;
    ngx_int_t rc = ngx_ssl_handshake(c_);
    if (rc == NGX_AGAIN) {
        c_->ssl->handler = on_handshake;
        return;
    }
    on_handshake(c_);
}

void RedisConn::on_handshake(ngx_connection_t* c) noexcept {
    auto* self = static_cast<RedisConn*>(c->data);
    if (!c->ssl->handshaked) {
        count_tls_handshake_failure();
        self->set_reason("TLS handshake failed:", self->captured_);
        self->fail(nullptr, true);
        return;
    }
    if (self->peer_.verify && !self->verify_peer()) {
        count_tls_handshake_failure();
        // A session that did not verify must not be resumed either.
        if (self->session_ != nullptr) {
            ngx_ssl_free_session(self->session_);
            self->session_ = nullptr;
        }
        self->fail(nullptr, true);
        return;
    }
    // ngx_ssl_handshake left its own handlers on the events.
    c->read->handler = on_read;
    c->write->handler = on_write;
    self->become_ready();
}

// proxy_ssl_verify's checks: the chain (the handshake itself does not fail
// on it, nginx's verify callback accepts everything), then the name.
bool RedisConn::verify_peer() noexcept {
    SSL* ssl = c_->ssl->connection;
    X509* cert = SSL_get_peer_certificate(ssl);
    if (cert == nullptr) {
        set_reason("TLS certificate could not be verified:", "the server sent no certificate");
        return false;
    }
    long result = SSL_get_verify_result(ssl);
    if (result != X509_V_OK) {
        X509_free(cert);
        set_reason("TLS certificate could not be verified:", X509_verify_cert_error_string(result));
        return false;
    }
    bool name_ok = true;
    if (peer_.server_name.len > 0) {
        if (is_ip_literal(peer_.server_name)) {
            // ngx_ssl_check_host matches DNS names only.
            name_ok =
                X509_check_ip_asc(cert, reinterpret_cast<char*>(peer_.server_name.data), 0) == 1;
        } else {
            name_ok = ngx_ssl_check_host(c_, &peer_.server_name) == NGX_OK;
        }
    }
    X509_free(cert);
    if (!name_ok) {
        char detail[300];
        ngx_snprintf(reinterpret_cast<u_char*>(detail), sizeof(detail),
                     "the certificate does not match \"%V\"%Z", &peer_.server_name);
        set_reason("TLS certificate could not be verified:", detail);
        return false;
    }
    return true;
}

// ngx_ssl_client_session_cache's new-session callback: TLS 1.3 sends its
// tickets after the handshake, so a session is kept whenever one comes.
void RedisConn::save_session(ngx_connection_t* c) noexcept {
    auto* self = static_cast<RedisConn*>(c->data);
    ngx_ssl_session_t* session = ngx_ssl_get_session(c);
    if (session == nullptr) {
        return;
    }
    if (self->session_ != nullptr) {
        ngx_ssl_free_session(self->session_);
    }
    self->session_ = session;
}

void RedisConn::become_ready() noexcept {
    ready_ = true;
    unsigned generation = generation_;
    on_ready_(owner_);
    if (generation == generation_ && out_sent_ < out_.size()) {
        schedule_flush();
    }
}

// --- commands and replies ------------------------------------------------------

bool RedisConn::send(RedisReplyFn fn, void* privdata, int argc, const char** argv,
                     const std::size_t* argvlen, bool every_reply) noexcept {
    if (c_ == nullptr) {
        return false;
    }
    char* raw = nullptr;
    int len = redisFormatCommandArgv(&raw, argc, argv, argvlen);
    CommandPtr cmd(raw);
    if (len < 0 || cmd == nullptr) {
        return false;
    }
    std::size_t before = out_.size();
    try {
        out_.append(cmd.get(), static_cast<std::size_t>(len));
        pending_.push_back(Pending{fn, privdata, every_reply});
    } catch (...) {
        out_.resize(before);
        return false;
    }
    schedule_flush();
    return true;
}

// Every command queued during one turn of the event loop goes out in one
// write, after the I/O events and timers of that turn (nginx runs posted
// events last).
void RedisConn::schedule_flush() noexcept {
    if (c_ != nullptr && ready_ && !c_->write->posted) {
        ngx_post_event(c_->write, &ngx_posted_events);
    }
}

void RedisConn::on_write(ngx_event_t* ev) noexcept {
    auto* c = static_cast<ngx_connection_t*>(ev->data);
    static_cast<RedisConn*>(c->data)->flush();
}

void RedisConn::flush() noexcept {
    if (c_ == nullptr || !ready_) {
        return;
    }
    ngx_connection_t* c = c_;
    while (out_sent_ < out_.size()) {
        ssize_t n =
            c->send(c, reinterpret_cast<u_char*>(out_.data()) + out_sent_, out_.size() - out_sent_);
        if (n == NGX_ERROR) {
            lost();
            return;
        }
        if (n == NGX_AGAIN || n == 0) {
            break;
        }
        out_sent_ += static_cast<std::size_t>(n);
    }
    if (out_sent_ == out_.size()) {
        out_.clear();
        out_sent_ = 0;
        if (out_.capacity() > kKeptBuffer) {
            out_.shrink_to_fit();
        }
    }
    if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
        fail("cannot watch the connection");
    }
}

// Drains the socket: with edge-triggered events (epoll) another read event
// comes only for new data.
void RedisConn::on_read(ngx_event_t* ev) noexcept {
    auto* c = static_cast<ngx_connection_t*>(ev->data);
    auto* self = static_cast<RedisConn*>(c->data);
    u_char buf[kReadChunk];
    for (;;) {
        ssize_t n = c->recv(c, buf, sizeof(buf));
        if (n == NGX_AGAIN) {
            break;
        }
        if (n == 0) {
            self->fail("connection closed by the server");
            return;
        }
        if (n == NGX_ERROR) {
            self->lost();
            return;
        }
        self->received_ = true;
        if (redisReaderFeed(self->reader_, reinterpret_cast<const char*>(buf),
                            static_cast<std::size_t>(n)) != REDIS_OK) {
            self->fail("out of memory reading a reply");
            return;
        }
        if (!self->deliver()) {
            return;  // closed, possibly by a callback
        }
        if (!c->read->ready) {
            break;
        }
    }
    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        self->fail("cannot watch the connection");
    }
}

bool RedisConn::deliver() noexcept {
    unsigned generation = generation_;
    for (;;) {
        void* raw = nullptr;
        if (redisReaderGetReply(reader_, &raw) != REDIS_OK) {
            set_reason("protocol error:", reader_->errstr);
            fail(nullptr);
            return false;
        }
        if (raw == nullptr) {
            return true;
        }
        ReplyPtr reply(static_cast<redisReply*>(raw));
        if (pending_.empty()) {
            fail("a reply no command waits for");
            return false;
        }
        Pending next = pending_.front();
        if (!next.every_reply) {
            pending_.pop_front();
        }
        next.fn(owner_, reply.get(), next.privdata);
        if (generation != generation_) {
            return false;
        }
    }
}

// --- closing ------------------------------------------------------------------

void RedisConn::close() noexcept {
    if (c_ == nullptr) {
        return;
    }
    ngx_connection_t* c = c_;
    c_ = nullptr;
    ready_ = false;
    ++generation_;
    if (c->ssl != nullptr) {
        // close_notify if it can go out now; never wait for the peer's.
        c->ssl->no_wait_shutdown = 1;
        (void)ngx_ssl_shutdown(c);
        if (c->ssl != nullptr) {
            // NGX_AGAIN (a full socket buffer): give up on the alert.
            SSL_free(c->ssl->connection);
            c->ssl = nullptr;
        }
    }
    ngx_pool_t* pool = c->pool;
    ngx_close_connection(c);
    if (pool != nullptr) {
        ngx_destroy_pool(pool);
    }
    out_.clear();
    out_sent_ = 0;
    if (out_.capacity() > kKeptBuffer) {
        out_.shrink_to_fit();
    }
    if (reader_ != nullptr) {
        redisReaderFree(reader_);
        reader_ = nullptr;
    }
    fail_pending();
}

void RedisConn::fail_pending() noexcept {
    std::deque<Pending> pending;
    pending.swap(pending_);
    for (const Pending& p : pending) {
        p.fn(owner_, nullptr, p.privdata);
    }
}

// A read or write failed. Over TLS, before any reply: TLS 1.3 lets the
// client finish its side of the handshake before the server checks it, so
// a server that refuses the client's certificate (or none) says so only on
// the first read or write.
void RedisConn::lost() noexcept {
    if (peer_.ssl != nullptr && !received_ && ngx_strncmp(captured_, "SSL_", 4) == 0) {
        count_tls_handshake_failure();
        set_reason("TLS handshake failed:", captured_);
        fail(nullptr, true);
        return;
    }
    fail("connection lost");
}

// `what` nullptr: reason_ is already set.
void RedisConn::fail(const char* what, bool tls) noexcept {
    if (what != nullptr) {
        set_reason(what, captured_[0] != '\0' ? captured_ : nullptr);
    }
    char reason[sizeof(reason_)];
    std::memcpy(reason, reason_, sizeof(reason));
    close();
    on_lost_(owner_, reason, tls);
}

void RedisConn::set_reason(const char* what, const char* detail) noexcept {
    if (detail != nullptr && detail[0] != '\0') {
        // "what: detail", or "what detail" when `what` ends with its colon.
        std::size_t len = std::strlen(what);
        const char* sep = len > 0 && what[len - 1] == ':' ? " " : ": ";
        ngx_snprintf(reinterpret_cast<u_char*>(reason_), sizeof(reason_) - 1, "%s%s%s%Z", what, sep,
                     detail);
    } else {
        ngx_snprintf(reinterpret_cast<u_char*>(reason_), sizeof(reason_) - 1, "%s%Z", what);
    }
    reason_[sizeof(reason_) - 1] = '\0';
}

// quiet_log_'s writer. `buf` is a whole error log line ("2024/01/01 00:00:00
// [error] 1#0: *5 connect() to ... failed (111: Connection refused)\n"):
// keep the message. Debug lines go to the real log's file unchanged.
void RedisConn::capture_log(ngx_log_t* log, ngx_uint_t level, u_char* buf, std::size_t len) {
    auto* self = static_cast<RedisConn*>(log->wdata);
    if (level >= NGX_LOG_DEBUG) {
        if (self->log_->file != nullptr && self->log_->file->fd != NGX_INVALID_FILE) {
            (void)ngx_write_fd(self->log_->file->fd, buf, len);
        }
        return;
    }
    u_char* end = buf + len;
    u_char* p = buf;
    // After "[level] pid#tid: ", and a connection's "*N ".
    if (u_char* bracket = ngx_strlchr(p, end, ']'); bracket != nullptr) {
        p = bracket;
        for (; p + 1 < end && !(p[0] == ':' && p[1] == ' '); ++p) {
        }
        p = p + 2 < end ? p + 2 : buf;
    }
    if (p < end && *p == '*') {
        u_char* space = ngx_strlchr(p, end, ' ');
        p = space != nullptr ? space + 1 : p;
    }
    while (end > p && (end[-1] == '\n' || end[-1] == '\r')) {
        --end;
    }
    std::size_t n = std::min<std::size_t>(end - p, sizeof(self->captured_) - 1);
    ngx_memcpy(self->captured_, p, n);
    self->captured_[n] = '\0';
}

}  // namespace session::ngx
