// Logging to stderr, one line per message. Under systemd (JOURNAL_STREAM
// set) lines carry the <N> syslog priority prefix that journald reads.
// Callers never pass secrets, payloads or personal data.
#pragma once

#include <string>

#include "core/config.hpp"

namespace syncd::log {

void set_level(LogLevel level);
void error(const std::string& msg);
void warn(const std::string& msg);
void info(const std::string& msg);
void debug(const std::string& msg);

}  // namespace syncd::log
