#include "daemon/log.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace syncd::log {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::info)};

void emit(LogLevel level, int priority, const char* name, const std::string& msg) {
    if (static_cast<int>(level) > g_level.load()) return;
    static const bool journal = std::getenv("JOURNAL_STREAM") != nullptr;
    if (journal) {
        std::fprintf(stderr, "<%d>%s\n", priority, msg.c_str());
        return;
    }
    char stamp[32];
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&now, &tm);
    std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    std::fprintf(stderr, "%s syncd %s: %s\n", stamp, name, msg.c_str());
}

}  // namespace

void set_level(LogLevel level) {
    g_level.store(static_cast<int>(level));
}
void error(const std::string& msg) {
    emit(LogLevel::error, 3, "error", msg);
}
void warn(const std::string& msg) {
    emit(LogLevel::warn, 4, "warning", msg);
}
void info(const std::string& msg) {
    emit(LogLevel::info, 6, "info", msg);
}
void debug(const std::string& msg) {
    emit(LogLevel::debug, 7, "debug", msg);
}

}  // namespace syncd::log
