// When to reconnect to Redis after a connection is lost (issue 7, item 1).
// The first attempt is immediate: a connection closed by a restart, a
// failover or an idle timeout usually opens again at once, and every lookup
// that arrives while the link waits fails fast. Attempts after that wait
// 100 ms, doubling to 2 s, so that a Redis that is down is not hammered;
// a connection that completes its handshake starts the sequence again.
#pragma once

#include <algorithm>
#include <cstdint>

namespace session::core {

class ReconnectBackoff {
  public:
    static constexpr std::uint64_t kFirstDelayMs = 100;
    static constexpr std::uint64_t kMaxDelayMs = 2000;

    // The delay before the next attempt, in milliseconds; advances the sequence.
    std::uint64_t next_delay_ms() {
        std::uint64_t delay = next_ms_;
        next_ms_ = next_ms_ == 0 ? kFirstDelayMs : std::min(next_ms_ * 2, kMaxDelayMs);
        return delay;
    }

    // A connection completed: the next loss reconnects at once.
    void reset() { next_ms_ = 0; }

  private:
    std::uint64_t next_ms_ = 0;
};

}  // namespace session::core
