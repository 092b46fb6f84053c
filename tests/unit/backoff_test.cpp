#include "core/backoff.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace session::core {
namespace {

std::vector<std::uint64_t> delays(ReconnectBackoff& b, int n) {
    std::vector<std::uint64_t> out;
    for (int i = 0; i < n; ++i) out.push_back(b.next_delay_ms());
    return out;
}

TEST(ReconnectBackoff, FirstAttemptIsImmediateThenDoublesToTheCap) {
    ReconnectBackoff b;
    EXPECT_EQ(delays(b, 8), (std::vector<std::uint64_t>{0, 100, 200, 400, 800, 1600, 2000, 2000}));
}

TEST(ReconnectBackoff, ACompletedConnectionStartsAgainAtZero) {
    ReconnectBackoff b;
    delays(b, 5);
    b.reset();
    EXPECT_EQ(delays(b, 3), (std::vector<std::uint64_t>{0, 100, 200}));
}

}  // namespace
}  // namespace session::core
