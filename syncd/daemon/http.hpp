// The HTTP front over libmicrohttpd: one thread per connection (a request
// blocks on PostgreSQL), bodies bounded by SYNCD_MAX_BODY, and a graceful
// stop that finishes the requests in flight.
#pragma once

#include <atomic>
#include <chrono>
#include <string>

#include "core/config.hpp"
#include "core/metrics.hpp"
#include "daemon/service.hpp"

struct MHD_Daemon;

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

  private:
    Service& service_;
    Metrics& metrics_;
    MHD_Daemon* daemon_ = nullptr;
    std::atomic<int> in_flight_{0};
};

}  // namespace syncd
