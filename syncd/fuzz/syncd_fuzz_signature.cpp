// Fuzzes the signature header parsing and verification: the input is
// "<id>\n<timestamp>\n<signature header>\n<body>". Verification must never
// crash, and must never accept a signature the fuzzer did not compute.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/config.hpp"
#include "core/signature.hpp"

namespace {

std::string_view next_line(std::string_view& in) {
    auto nl = in.find('\n');
    std::string_view line = in.substr(0, nl);
    in.remove_prefix(nl == std::string_view::npos ? in.size() : nl + 1);
    return line;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const syncd::SecretKeys keys =
        syncd::parse_secrets("FUZZ", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    std::string_view in(reinterpret_cast<const char*>(data), size);
    std::string_view id = next_line(in);
    std::string_view ts = next_line(in);
    std::string_view sig = next_line(in);
    std::string_view body = in;

    const std::int64_t now = 1614265330;
    syncd::WebhookHeaders headers{id, ts, sig};
    syncd::Verdict v = syncd::verify_signature(keys, headers, body, now);
    if (v == syncd::Verdict::ok) {
        // Only a header holding the real HMAC can pass.
        std::string expected = syncd::sign_payload(keys[0], id, ts, body);
        if (std::string_view(sig).find(expected) == std::string_view::npos) std::abort();
    }

    // The same bytes as a secrets list and as base64.
    try {
        syncd::parse_secrets("FUZZ", sig);
    } catch (const syncd::ConfigError&) {
    }
    // Non-canonical padding bits decode too, so the round trip is checked
    // from the bytes, not from the text.
    if (auto decoded = syncd::base64_decode(id)) {
        if (syncd::base64_decode(syncd::base64_encode(*decoded)) != decoded) std::abort();
    }
    return 0;
}
