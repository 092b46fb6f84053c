// The HTTP front over libmicrohttpd: one thread per connection (a request
// blocks on PostgreSQL), bodies bounded by SYNCD_MAX_BODY, and a graceful
// stop that finishes the requests in flight.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "core/config.hpp"
#include "core/metrics.hpp"
#include "daemon/service.hpp"

struct MHD_Daemon;
struct MHD_Connection;

namespace syncd {

// Connections served at once: each may buffer up to SYNCD_MAX_BODY before
// its signature is checked, and beyond a few per pooled PostgreSQL
// connection they would only queue. max(64, 4 × SYNCD_DB_POOL).
unsigned int connection_limit(int db_pool);

// Binds and listens on the address; throws std::runtime_error naming it.
int listen_socket(const ListenAddress& addr);

class HttpServer {
  public:
    HttpServer(Service& service, Metrics& metrics) : service_(service), metrics_(metrics) {}
    ~HttpServer();

    // Takes ownership of the listening socket.
    void start(int listen_fd);
    // Stops accepting, waits up to `grace` for requests in flight, stops.
    void shutdown(std::chrono::milliseconds grace);

    // Used by the C callbacks.
    Service& service() { return service_; }
    Metrics& metrics() { return metrics_; }
    std::atomic<int>& in_flight() { return in_flight_; }

    // The request deadline: a connection is tracked from its opening (or
    // the end of its previous request) until its request has been read;
    // one still reading after SYNCD_REQUEST_DEADLINE is shut down. A
    // request being answered is not cut: the delivery has its own budget.
    void connection_opened(MHD_Connection* conn, int fd);
    void connection_closed(MHD_Connection* conn);
    void request_read(MHD_Connection* conn);
    void request_done(MHD_Connection* conn);

  private:
    struct Tracked {
        int fd = -1;
        std::chrono::steady_clock::time_point since;
        bool answering = false;
    };
    void reap_loop();
    void stop_reaper();

    Service& service_;
    Metrics& metrics_;
    MHD_Daemon* daemon_ = nullptr;
    std::atomic<int> in_flight_{0};
    std::mutex conns_mu_;
    std::condition_variable reaper_cv_;
    bool reaper_stop_ = false;
    std::map<MHD_Connection*, Tracked> conns_;
    std::thread reaper_;
};

}  // namespace syncd
