#include "daemon/http.hpp"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "daemon/log.hpp"

namespace syncd {
namespace {

constexpr unsigned long long kDrainFactor = 8;

enum class Route { webhook, healthz, metrics, not_found, bad_method };

struct RequestState {
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
    Route route = Route::not_found;
    std::string body;
    bool too_large = false;
    unsigned long long received = 0;  // body bytes read, kept or dropped
};

Route route_of(const Config& cfg, const char* url, const char* method) {
    std::string path = url;
    bool get = std::strcmp(method, MHD_HTTP_METHOD_GET) == 0;
    bool post = std::strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    if (path == cfg.webhook_path) return post ? Route::webhook : Route::bad_method;
    if (path == "/healthz") return get ? Route::healthz : Route::bad_method;
    if (path == "/metrics") return get ? Route::metrics : Route::bad_method;
    return Route::not_found;
}

MHD_Result send(MHD_Connection* conn, HttpServer& server, const Response& r) {
    MHD_Response* resp = MHD_create_response_from_buffer(
        r.body.size(), const_cast<char*>(r.body.data()), MHD_RESPMEM_MUST_COPY);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r.content_type.c_str());
    if (r.retry_after) MHD_add_response_header(resp, "Retry-After", r.retry_after->c_str());
    MHD_Result ret = MHD_queue_response(conn, static_cast<unsigned int>(r.status), resp);
    MHD_destroy_response(resp);
    server.metrics().count_response(r.status);
    return ret;
}

Response plain(int status, const char* body) {
    Response r;
    r.status = status;
    r.body = std::string("{\"error\":\"") + body + "\"}\n";
    return r;
}

// Every exception stops here: none may cross into libmicrohttpd's C frames.
MHD_Result on_request(void* cls, MHD_Connection* conn, const char* url, const char* method,
                      const char* /*version*/, const char* upload_data, size_t* upload_data_size,
                      void** con_cls) noexcept {
    auto& server = *static_cast<HttpServer*>(cls);
    try {
        const Config& cfg = server.service().config();
        auto* state = static_cast<RequestState*>(*con_cls);
        if (!state) {
            state = new RequestState;
            *con_cls = state;
            server.in_flight()++;
            state->route = route_of(cfg, url, method);
            if (state->route == Route::webhook) {
                const char* length = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
                unsigned long long declared = length ? std::strtoull(length, nullptr, 10) : 0;
                // A body somewhat over the limit is read and dropped, so
                // that a sender writing it whole still reads the 413; a far
                // larger one is refused before it is read.
                if (declared > kDrainFactor * cfg.max_body) {
                    server.request_read(conn);
                    return send(conn, server, server.service().too_large());
                }
                state->too_large = declared > cfg.max_body;
                if (!state->too_large) state->body.reserve(declared);
            }
            return MHD_YES;
        }
        if (*upload_data_size != 0) {
            state->received += *upload_data_size;
            // A chunked body announces no length: past the drain limit the
            // connection is closed without an answer.
            if (state->received > kDrainFactor * cfg.max_body) return MHD_NO;
            if (state->route == Route::webhook && !state->too_large) {
                if (state->body.size() + *upload_data_size > cfg.max_body) {
                    state->too_large = true;  // the rest is read and dropped
                    std::string().swap(state->body);
                } else {
                    state->body.append(upload_data, *upload_data_size);
                }
            }
            *upload_data_size = 0;
            return MHD_YES;
        }
        server.request_read(conn);
        switch (state->route) {
            case Route::webhook: {
                if (state->too_large) return send(conn, server, server.service().too_large());
                HeaderLookup lookup = [conn](const char* name) -> std::optional<std::string_view> {
                    const char* v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
                    if (!v) return std::nullopt;
                    return std::string_view(v);
                };
                return send(conn, server, server.service().webhook(lookup, state->body));
            }
            case Route::healthz:
                return send(conn, server, server.service().healthz());
            case Route::metrics:
                return send(conn, server, server.service().metrics());
            case Route::bad_method:
                return send(conn, server, plain(405, "method not allowed"));
            case Route::not_found:
                return send(conn, server, plain(404, "not found"));
        }
        return MHD_NO;
    } catch (const std::exception& e) {
        // Answering allocates too: a second failure closes the connection.
        try {
            log::error(std::string("request failed: ") + e.what());
            return send(conn, server, plain(500, "internal error"));
        } catch (...) {
            return MHD_NO;
        }
    } catch (...) {
        return MHD_NO;
    }
}

void on_completed(void* cls, MHD_Connection* conn, void** con_cls,
                  MHD_RequestTerminationCode /*code*/) noexcept {
    auto& server = *static_cast<HttpServer*>(cls);
    auto* state = static_cast<RequestState*>(*con_cls);
    if (!state) return;
    try {
        if (state->route == Route::webhook) {
            std::chrono::duration<double> took = std::chrono::steady_clock::now() - state->start;
            server.metrics().observe_latency(took.count());
        }
    } catch (...) {
        // A lost sample; the request itself is over.
    }
    delete state;
    *con_cls = nullptr;
    server.in_flight()--;
    server.request_done(conn);
}

void on_connection(void* cls, MHD_Connection* conn, void** /*socket_context*/,
                   MHD_ConnectionNotificationCode code) noexcept {
    auto& server = *static_cast<HttpServer*>(cls);
    try {
        if (code == MHD_CONNECTION_NOTIFY_STARTED) {
            const MHD_ConnectionInfo* info =
                MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
            if (info) server.connection_opened(conn, info->connect_fd);
        } else {
            server.connection_closed(conn);
        }
    } catch (...) {
        // Untracked: the idle timeout still closes it eventually.
    }
}

void on_mhd_log(void* /*cls*/, const char* fmt, va_list ap) noexcept {
    try {
        char buf[512];
        std::vsnprintf(buf, sizeof buf, fmt, ap);
        std::string msg = buf;
        while (!msg.empty() && msg.back() == '\n') msg.pop_back();
        log::debug("http: " + msg);
    } catch (...) {
        // Nothing to do without memory; libmicrohttpd goes on.
    }
}

}  // namespace

unsigned int connection_limit(int db_pool) {
    return static_cast<unsigned int>(std::max(64, 4 * db_pool));
}

int listen_socket(const ListenAddress& addr) {
    sockaddr_storage ss{};
    socklen_t len = 0;
    int family = addr.host.find(':') != std::string::npos ? AF_INET6 : AF_INET;
    if (family == AF_INET6) {
        auto* sa = reinterpret_cast<sockaddr_in6*>(&ss);
        sa->sin6_family = AF_INET6;
        sa->sin6_port = htons(static_cast<uint16_t>(addr.port));
        inet_pton(AF_INET6, addr.host.c_str(), &sa->sin6_addr);
        len = sizeof *sa;
    } else {
        auto* sa = reinterpret_cast<sockaddr_in*>(&ss);
        sa->sin_family = AF_INET;
        sa->sin_port = htons(static_cast<uint16_t>(addr.port));
        inet_pton(AF_INET, addr.host.c_str(), &sa->sin_addr);
        len = sizeof *sa;
    }
    std::string where = "SYNCD_LISTEN " + addr.host + ":" + std::to_string(addr.port);
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error(where + ": socket: " + std::strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || listen(fd, 1024) != 0) {
        int err = errno;
        close(fd);
        throw std::runtime_error(where + ": " + std::strerror(err));
    }
    return fd;
}

HttpServer::~HttpServer() {
    if (daemon_) MHD_stop_daemon(daemon_);
    stop_reaper();
}

void HttpServer::connection_opened(MHD_Connection* conn, int fd) {
    std::lock_guard<std::mutex> lock(conns_mu_);
    conns_[conn] = Tracked{fd, std::chrono::steady_clock::now(), false};
}

// Called before libmicrohttpd closes the socket: the reaper never shuts
// down a descriptor that may have been reused.
void HttpServer::connection_closed(MHD_Connection* conn) {
    std::lock_guard<std::mutex> lock(conns_mu_);
    conns_.erase(conn);
}

void HttpServer::request_read(MHD_Connection* conn) {
    std::lock_guard<std::mutex> lock(conns_mu_);
    auto it = conns_.find(conn);
    if (it != conns_.end()) it->second.answering = true;
}

void HttpServer::request_done(MHD_Connection* conn) {
    std::lock_guard<std::mutex> lock(conns_mu_);
    auto it = conns_.find(conn);
    if (it != conns_.end()) {
        it->second.answering = false;
        it->second.since = std::chrono::steady_clock::now();  // keep-alive: the next request
    }
}

void HttpServer::reap_loop() {
    const auto deadline = std::chrono::seconds(service_.config().request_deadline);
    std::unique_lock<std::mutex> lock(conns_mu_);
    while (!reaper_stop_) {
        reaper_cv_.wait_for(lock, std::chrono::milliseconds(200));
        auto now = std::chrono::steady_clock::now();
        int cut = 0;
        for (auto& [conn, t] : conns_) {
            if (t.answering || t.fd < 0 || now - t.since <= deadline) continue;
            // Wakes the connection's thread, which sees the end and closes.
            ::shutdown(t.fd, SHUT_RDWR);
            t.fd = -1;
            ++cut;
        }
        if (cut > 0) {
            log::info("closed " + std::to_string(cut) +
                      " connection(s) still sending a request after " +
                      std::to_string(deadline.count()) + " s (SYNCD_REQUEST_DEADLINE)");
        }
    }
}

void HttpServer::stop_reaper() {
    {
        std::lock_guard<std::mutex> lock(conns_mu_);
        reaper_stop_ = true;
    }
    reaper_cv_.notify_all();
    if (reaper_.joinable()) reaper_.join();
}

void HttpServer::start(int listen_fd) {
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                         MHD_USE_ITC | MHD_USE_ERROR_LOG;
    daemon_ =
        // The logger first: libmicrohttpd logs about the options after it.
        MHD_start_daemon(flags, 0, nullptr, nullptr, &on_request, this, MHD_OPTION_EXTERNAL_LOGGER,
                         &on_mhd_log, nullptr, MHD_OPTION_LISTEN_SOCKET, listen_fd,
                         MHD_OPTION_NOTIFY_COMPLETED, &on_completed, this,
                         MHD_OPTION_CONNECTION_TIMEOUT, static_cast<unsigned int>(30),
                         MHD_OPTION_CONNECTION_LIMIT, connection_limit(service_.config().db_pool),
                         MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                         static_cast<unsigned int>(service_.config().max_connections_per_ip),
                         MHD_OPTION_NOTIFY_CONNECTION, &on_connection, this, MHD_OPTION_END);
    if (!daemon_) {
        close(listen_fd);
        throw std::runtime_error("cannot start the HTTP server");
    }
    reaper_ = std::thread([this] { reap_loop(); });
}

void HttpServer::shutdown(std::chrono::milliseconds grace) {
    if (!daemon_) return;
    int fd = MHD_quiesce_daemon(daemon_);
    if (fd >= 0) close(fd);
    auto deadline = std::chrono::steady_clock::now() + grace;
    while (in_flight_.load() > 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (in_flight_.load() > 0) {
        log::warn("stopping with " + std::to_string(in_flight_.load()) + " requests in flight");
    }
    MHD_stop_daemon(daemon_);
    daemon_ = nullptr;
    stop_reaper();
}

}  // namespace syncd
