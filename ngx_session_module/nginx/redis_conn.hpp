// One Redis connection on nginx's own connection machinery: opened with
// ngx_event_connect_peer (TCP or unix), optionally TLS through nginx's
// OpenSSL layer as proxy_ssl does, commands encoded by hiredis's
// redisFormatCommandArgv into a send buffer, replies decoded by a hiredis
// redisReader fed from c->recv. Replies go to per-command callbacks in FIFO
// order (Redis answers in order); when the connection fails or is closed,
// every command still pending gets a nullptr reply.
//
// No hiredis I/O and no blocking call: everything runs from nginx events.
// The owner (redis_link.cpp) keeps policy (handshake, timeouts, backoff);
// this class only moves bytes and reports what went wrong.
#pragma once

#include "nginx/ngx.hpp"

#if !(NGX_SSL)
#error "ngx_session_module needs nginx built with OpenSSL (--with-http_ssl_module)"
#endif

#include <cstddef>
#include <deque>
#include <string>

struct redisReader;
struct redisReply;

namespace session::ngx {

// Where to connect and how. Every pointer is into configuration memory (or
// the owner) and outlives the connection.
struct RedisPeer {
    struct sockaddr* sockaddr;
    socklen_t socklen;
    ngx_str_t* name;        // for logs: the address without credentials
    ngx_ssl_t* ssl;         // nullptr: plain TCP or unix
    ngx_str_t server_name;  // NUL-terminated; SNI (names only) and the name verified
    bool verify;            // check the chain and server_name after the handshake
};

// One reply (nullptr: the connection failed or was closed before it came).
// `reply` is freed when the callback returns.
using RedisReplyFn = void (*)(void* owner, redisReply* reply, void* privdata) noexcept;

class RedisConn {
  public:
    // The connection is open (TCP connected, TLS handshake and checks done).
    using ReadyFn = void (*)(void* owner) noexcept;
    // It failed or was lost (never after close()). `reason` is for the log
    // and never holds a secret; valid only during the call. `tls` tells a
    // TLS handshake or verification failure.
    using LostFn = void (*)(void* owner, const char* reason, bool tls) noexcept;

    RedisConn(ngx_log_t* log, void* owner, ReadyFn on_ready, LostFn on_lost) noexcept;
    ~RedisConn();
    RedisConn(const RedisConn&) = delete;
    RedisConn& operator=(const RedisConn&) = delete;

    // Starts connecting. false: it failed at once (on_lost is not called;
    // reason() says why). Commands may be sent as soon as this returns true:
    // they are written when the connection is ready.
    bool open(const RedisPeer& peer) noexcept;

    // Queues one command. With `every_reply`, `fn` gets this reply and every
    // later one that no other command waits for (SUBSCRIBE's messages).
    // false when closed or out of memory: `fn` is then never called.
    bool send(RedisReplyFn fn, void* privdata, int argc, const char** argv,
              const std::size_t* argvlen, bool every_reply = false) noexcept;

    // Closes now (safe inside a reply callback): TLS close_notify without
    // waiting, ngx_close_connection once, then every pending callback runs
    // with nullptr. on_lost is not called.
    void close() noexcept;

    bool is_open() const noexcept { return c_ != nullptr; }
    bool is_ready() const noexcept { return c_ != nullptr && ready_; }
    const char* reason() const noexcept { return reason_; }

  private:
    struct Pending {
        RedisReplyFn fn;
        void* privdata;
        bool every_reply;
    };

    static void on_connect_event(ngx_event_t* ev) noexcept;
    static void on_read(ngx_event_t* ev) noexcept;
    static void on_write(ngx_event_t* ev) noexcept;
    static void on_handshake(ngx_connection_t* c) noexcept;
    static void save_session(ngx_connection_t* c) noexcept;
    static void capture_log(ngx_log_t* log, ngx_uint_t level, u_char* buf, std::size_t len);

    void connected() noexcept;
    void start_tls() noexcept;
    bool verify_peer() noexcept;
    void become_ready() noexcept;
    void flush() noexcept;
    void schedule_flush() noexcept;
    bool deliver() noexcept;
    void lost() noexcept;
    void fail(const char* what, bool tls = false) noexcept;
    void set_reason(const char* what, const char* detail = nullptr) noexcept;
    void fail_pending() noexcept;

    ngx_log_t* log_;
    // nginx's own messages about this connection (connect() failed,
    // SSL_read() failed, ...) go here instead of the error log: they become
    // the reason the owner logs once per outage, not a line per retry, and a
    // peer's TLS alert is never a [crit].
    ngx_log_t quiet_log_{};
    void* owner_;
    ReadyFn on_ready_;
    LostFn on_lost_;
    RedisPeer peer_{};
    ngx_connection_t* c_ = nullptr;
    redisReader* reader_ = nullptr;
    ngx_ssl_session_t* session_ = nullptr;  // the last TLS session, for resumption
    std::deque<Pending> pending_;
    std::string out_;  // encoded commands not yet written
    std::size_t out_sent_ = 0;
    unsigned generation_ = 0;  // changes on close: a callback closed us
    bool ready_ = false;
    bool received_ = false;    // any byte from the peer on this connection
    char reason_[320] = {};    // what went wrong, for the owner's log line
    char captured_[256] = {};  // nginx's last message about this connection
};

}  // namespace session::ngx
