#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>

#include "core/config.hpp"

namespace syncd {
namespace {

std::string error_of(const Environment& env, const Environment& file = {}) {
    try {
        load_config(env, file);
    } catch (const ConfigError& e) {
        return e.what();
    }
    return "";
}

TEST(Config, Defaults) {
    Config c = load_config({{"PATH", "/bin"}}, {});
    EXPECT_EQ(c.listen.host, "127.0.0.1");
    EXPECT_EQ(c.listen.port, 8787);
    EXPECT_EQ(c.webhook_path, "/webhooks/clerk");
    EXPECT_EQ(c.max_body, 1024u * 1024u);
    EXPECT_EQ(c.redis_prefix, "");
    EXPECT_EQ(c.log_level, LogLevel::info);
    EXPECT_FALSE(c.redis_set);
}

TEST(Config, AllKeys) {
    Config c = load_config({{"SYNCD_LISTEN", "[::1]:9000"},
                            {"SYNCD_DATABASE_URL", "postgresql://u@h/db"},
                            {"SYNCD_REDIS_URL", "redis://:pw@10.0.0.1:6380/2"},
                            {"SYNCD_REDIS_PREFIX", "app1:"},
                            {"SYNCD_WEBHOOK_SECRETS", "whsec_abc="},
                            {"SYNCD_WEBHOOK_PATH", "/hooks"},
                            {"SYNCD_MAX_BODY", "512k"},
                            {"SYNCD_LOG_LEVEL", "DEBUG"}},
                           {});
    EXPECT_EQ(c.listen.host, "::1");
    EXPECT_EQ(c.listen.port, 9000);
    ASSERT_EQ(c.redis.address.endpoints.size(), 1u);
    EXPECT_EQ(c.redis.address.endpoints[0].host, "10.0.0.1");
    EXPECT_EQ(c.redis.address.endpoints[0].port, 6380);
    EXPECT_EQ(c.redis.address.password, "pw");
    EXPECT_EQ(c.redis.address.db, 2);
    EXPECT_FALSE(c.redis.tls.enabled);
    EXPECT_EQ(c.redis_prefix, "app1:");
    EXPECT_EQ(c.webhook_path, "/hooks");
    EXPECT_EQ(c.max_body, 512u * 1024u);
    EXPECT_EQ(c.log_level, LogLevel::debug);
}

TEST(Config, SessionIdleTimeout) {
    EXPECT_EQ(load_config({}, {}).session_idle_timeout, 0);
    EXPECT_EQ(load_config({{"SYNCD_SESSION_IDLE_TIMEOUT", "1800"}}, {}).session_idle_timeout, 1800);
    EXPECT_EQ(load_config({{"SYNCD_SESSION_IDLE_TIMEOUT", ""}}, {}).session_idle_timeout, 0);
    EXPECT_EQ(load_config({}, {{"SYNCD_SESSION_IDLE_TIMEOUT", "0"}}).session_idle_timeout, 0);
    for (const char* bad : {"-5", "30m", "1e3", "999999999999"}) {
        EXPECT_NE(
            error_of({{"SYNCD_SESSION_IDLE_TIMEOUT", bad}}).find("SYNCD_SESSION_IDLE_TIMEOUT"),
            std::string::npos)
            << bad;
    }
}

TEST(Config, ConnectionLimitsDeadlineAndStartupWait) {
    Config d = load_config({}, {});
    EXPECT_EQ(d.max_connections_per_ip, 32);
    EXPECT_EQ(d.request_deadline, 10);
    EXPECT_EQ(d.startup_wait, 60);
    Config c = load_config({{"SYNCD_MAX_CONNECTIONS_PER_IP", "4"},
                            {"SYNCD_REQUEST_DEADLINE", "3"},
                            {"SYNCD_STARTUP_WAIT", "0"}},
                           {});
    EXPECT_EQ(c.max_connections_per_ip, 4);
    EXPECT_EQ(c.request_deadline, 3);
    EXPECT_EQ(c.startup_wait, 0);
    for (const char* key :
         {"SYNCD_MAX_CONNECTIONS_PER_IP", "SYNCD_REQUEST_DEADLINE", "SYNCD_STARTUP_WAIT"}) {
        for (const char* bad : {"-1", "10s", "", "99999"}) {
            EXPECT_NE(error_of({{key, bad}}).find(key), std::string::npos) << key << " " << bad;
        }
    }
    EXPECT_NE(error_of({{"SYNCD_REQUEST_DEADLINE", "0"}}).find("SYNCD_REQUEST_DEADLINE"),
              std::string::npos);
}

TEST(Config, UnknownEnvironmentNameIsAWarning) {
    std::vector<std::string> warnings;
    Config c = load_config({{"SYNCD_BIN", "/x"}, {"SYNCD_LISTEN", "127.0.0.1:3"}}, {}, &warnings);
    EXPECT_EQ(c.listen.port, 3);
    ASSERT_EQ(warnings.size(), 1u);
    EXPECT_NE(warnings[0].find("SYNCD_BIN"), std::string::npos);
}

TEST(Config, FileWinsOverEnvironment) {
    Config c = load_config({{"SYNCD_LISTEN", "127.0.0.1:1"}}, {{"SYNCD_LISTEN", "127.0.0.1:2"}});
    EXPECT_EQ(c.listen.port, 2);
}

TEST(Config, BadValuesNameTheKey) {
    EXPECT_NE(error_of({{"SYNCD_LISTEN", "localhost"}}).find("SYNCD_LISTEN"), std::string::npos);
    EXPECT_NE(error_of({{"SYNCD_LISTEN", "127.0.0.1:99999"}}).find("SYNCD_LISTEN"),
              std::string::npos);
    EXPECT_NE(error_of({{"SYNCD_MAX_BODY", "lots"}}).find("SYNCD_MAX_BODY"), std::string::npos);
    EXPECT_NE(error_of({{"SYNCD_MAX_BODY", "0"}}).find("SYNCD_MAX_BODY"), std::string::npos);
    EXPECT_NE(error_of({{"SYNCD_LOG_LEVEL", "loud"}}).find("SYNCD_LOG_LEVEL"), std::string::npos);
    EXPECT_NE(error_of({{"SYNCD_WEBHOOK_PATH", "hooks"}}).find("SYNCD_WEBHOOK_PATH"),
              std::string::npos);
    EXPECT_NE(error_of({{"SYNCD_REDIS_URL", "http://x"}}).find("SYNCD_REDIS_URL"),
              std::string::npos);
    EXPECT_NE(error_of({{"SYNCD_DATABASE_URL", ""}}).find("SYNCD_DATABASE_URL"), std::string::npos);
    EXPECT_NE(error_of({}, {{"SYNCD_LISTN", "x"}}).find("SYNCD_LISTN: unknown key"),
              std::string::npos);
}

TEST(Config, RedisPasswordNeverInErrors) {
    std::string err = error_of({{"SYNCD_REDIS_URL", "redis://:s3cretpw@host:notaport"}});
    EXPECT_NE(err.find("SYNCD_REDIS_URL"), std::string::npos);
    EXPECT_EQ(err.find("s3cretpw"), std::string::npos);
    auto url = parse_redis_url("K", "redis://:s3cretpw@host:1234/3");
    EXPECT_EQ(url.redacted().find("s3cretpw"), std::string::npos);
    Config c = load_config({{"SYNCD_REDIS_URL", "rediss://app:s3cretpw@host:1234/3"}}, {});
    EXPECT_EQ(c.redis.redacted().find("s3cretpw"), std::string::npos);
    EXPECT_NE(c.redis.redacted().find("host:1234"), std::string::npos);
}

// libpq's parse error quotes the offending part, which can be the password.
TEST(Config, DatabaseUrlIsParsedWithoutEchoingIt) {
    for (const char* url :
         {"postgresql://u:s3cr%ZZet@db.example/app", "host=db.example password='s3cret",
          "postgresql://u:s3cret@[::1/db", "host=db.example s3cret=1"}) {
        std::string err = error_of({{"SYNCD_DATABASE_URL", url}});
        EXPECT_EQ(err, "SYNCD_DATABASE_URL: not a valid libpq connection string or URL") << url;
        EXPECT_EQ(err.find("s3cr"), std::string::npos);
    }
    for (const char* url : {"postgresql://u:pw@db.example:5433/app?sslmode=require",
                            "host=/run/postgresql dbname=app", "postgres:///app"}) {
        EXPECT_EQ(load_config({{"SYNCD_DATABASE_URL", url}}, {}).database_url, url);
    }
}

// The grammar is common/redis_address.hpp's (its own tests cover it); these
// check what syncd makes of it.
TEST(Config, RedisUrlForms) {
    using session::common::RedisTopology;
    auto a = parse_redis_url("K", "redis://127.0.0.1:6379");
    EXPECT_EQ(a.topology, RedisTopology::standalone);
    EXPECT_FALSE(a.endpoints[0].is_unix());
    EXPECT_EQ(a.endpoints[0].port, 6379);
    EXPECT_EQ(a.db, -1);  // not given: no SELECT
    auto b = parse_redis_url("K", "unix:///run/redis/redis.sock");
    EXPECT_TRUE(b.endpoints[0].is_unix());
    EXPECT_EQ(b.endpoints[0].unix_path, "/run/redis/redis.sock");
    auto c = parse_redis_url("K", "redis://user:p@ss@host/1");
    EXPECT_EQ(c.user, "user");
    EXPECT_EQ(c.password, "p@ss");
    EXPECT_EQ(c.endpoints[0].host, "host");
    EXPECT_EQ(c.endpoints[0].port, 6379);
    EXPECT_EQ(c.db, 1);
    auto d = parse_redis_url("K", "127.0.0.1:6380");  // nginx's short form
    EXPECT_EQ(d.endpoints[0].port, 6380);
    auto e = parse_redis_url("K", "rediss://app:pw@redis.example:6380/0");
    EXPECT_TRUE(e.tls);
    auto f = parse_redis_url("K", "sentinel://s1:26379,s2,[::1]:26380/mymaster/2");
    EXPECT_EQ(f.topology, RedisTopology::sentinel);
    ASSERT_EQ(f.endpoints.size(), 3u);
    EXPECT_EQ(f.endpoints[1].port, 26379);
    EXPECT_EQ(f.endpoints[2].host, "::1");
    EXPECT_EQ(f.master_name, "mymaster");
    EXPECT_EQ(f.db, 2);
    EXPECT_THROW(parse_redis_url("K", "unix://relative"), ConfigError);
    EXPECT_THROW(parse_redis_url("K", "redis://host:1/x"), ConfigError);
    EXPECT_THROW(parse_redis_url("K", "sentinel://s1:26379"), ConfigError);
}

TEST(Config, RedisCluster) {
    auto c = parse_redis_url("K", "cluster://u:p%40w@h1:7000,h2,[::1]:7002");
    EXPECT_EQ(c.topology, session::common::RedisTopology::cluster);
    ASSERT_EQ(c.endpoints.size(), 3u);
    EXPECT_EQ(c.endpoints[0].host, "h1");
    EXPECT_EQ(c.endpoints[0].port, 7000);
    EXPECT_EQ(c.endpoints[1].port, 6379);
    EXPECT_EQ(c.endpoints[2].host, "::1");
    EXPECT_EQ(c.user, "u");
    EXPECT_EQ(c.password, "p@w");
    // A cluster has database 0 only: the grammar refuses a /db.
    EXPECT_NE(error_of({{"SYNCD_REDIS_URL", "cluster://h1:7000/1"}}).find("SYNCD_REDIS_URL: "),
              std::string::npos);
    // Over TLS with the switch, the same settings for every node.
    Config t = load_config(
        {{"SYNCD_REDIS_URL", "cluster://h1:7000,h2:7001"}, {"SYNCD_REDIS_TLS", "on"}}, {});
    EXPECT_TRUE(t.redis.tls.enabled);
    EXPECT_EQ(t.redis.redacted().find("u:"), std::string::npos);
}

// A readable file for the *_FILE keys (their contents are OpenSSL's to judge
// at connection time).
class TempFile {
  public:
    TempFile() {
        char name[] = "/tmp/syncd-config-test-XXXXXX";
        int fd = mkstemp(name);
        if (fd >= 0) close(fd);
        path_ = name;
    }
    ~TempFile() { unlink(path_.c_str()); }
    const std::string& path() const { return path_; }

  private:
    std::string path_;
};

TEST(Config, RedisTlsKeys) {
    TempFile ca, cert, key;
    Config c = load_config({{"SYNCD_REDIS_URL", "rediss://app:pw@redis.example:6380"},
                            {"SYNCD_REDIS_CA_FILE", ca.path()},
                            {"SYNCD_REDIS_CERT_FILE", cert.path()},
                            {"SYNCD_REDIS_KEY_FILE", key.path()},
                            {"SYNCD_REDIS_SERVER_NAME", "redis.internal"}},
                           {});
    EXPECT_TRUE(c.redis.tls.enabled);  // rediss:// implies it
    EXPECT_TRUE(c.redis.tls.verify);   // the default
    EXPECT_EQ(c.redis.tls.ca_file, ca.path());
    EXPECT_EQ(c.redis.tls.cert_file, cert.path());
    EXPECT_EQ(c.redis.tls.key_file, key.path());
    EXPECT_EQ(c.redis.tls.server_name, "redis.internal");
    // check-config's line: the paths and the name, never the password.
    std::string shown = c.redis.redacted();
    EXPECT_NE(shown.find("TLS"), std::string::npos) << shown;
    EXPECT_NE(shown.find(ca.path()), std::string::npos) << shown;
    EXPECT_NE(shown.find(cert.path()), std::string::npos) << shown;
    EXPECT_NE(shown.find("redis.internal"), std::string::npos) << shown;
    EXPECT_EQ(shown.find("pw@"), std::string::npos) << shown;

    // Sentinel (or a plain redis:// URL) over TLS: the switch.
    Config s = load_config({{"SYNCD_REDIS_URL", "sentinel://s1,s2/mymaster"},
                            {"SYNCD_REDIS_TLS", "on"},
                            {"SYNCD_REDIS_TLS_VERIFY", "off"}},
                           {});
    EXPECT_TRUE(s.redis.tls.enabled);
    EXPECT_FALSE(s.redis.tls.verify);
    EXPECT_NE(s.redis.redacted().find("NOT verified"), std::string::npos);
    EXPECT_FALSE(load_config({{"SYNCD_REDIS_URL", "redis://h:1"}}, {}).redis.tls.enabled);
    // Empty counts as unset (an EnvironmentFile left blank).
    Config blank = load_config(
        {{"SYNCD_REDIS_URL", "redis://h:1"}, {"SYNCD_REDIS_TLS", ""}, {"SYNCD_REDIS_CA_FILE", ""}},
        {});
    EXPECT_FALSE(blank.redis.tls.enabled);
}

TEST(Config, RedisTlsErrorsNameTheKeys) {
    TempFile file;
    auto has = [](const std::string& err, const char* what) {
        return err.find(what) != std::string::npos;
    };
    // One of the pair without the other: both named.
    std::string err =
        error_of({{"SYNCD_REDIS_URL", "rediss://h:1"}, {"SYNCD_REDIS_CERT_FILE", file.path()}});
    EXPECT_TRUE(has(err, "SYNCD_REDIS_CERT_FILE") && has(err, "SYNCD_REDIS_KEY_FILE")) << err;
    err = error_of({{"SYNCD_REDIS_URL", "rediss://h:1"}, {"SYNCD_REDIS_KEY_FILE", file.path()}});
    EXPECT_TRUE(has(err, "SYNCD_REDIS_CERT_FILE") && has(err, "SYNCD_REDIS_KEY_FILE")) << err;
    // A file that cannot be read.
    err = error_of(
        {{"SYNCD_REDIS_URL", "rediss://h:1"}, {"SYNCD_REDIS_CA_FILE", "/nonexistent/ca.pem"}});
    EXPECT_TRUE(has(err, "SYNCD_REDIS_CA_FILE") && has(err, "/nonexistent/ca.pem")) << err;
    // TLS settings without TLS.
    for (const char* key : {"SYNCD_REDIS_CA_FILE", "SYNCD_REDIS_SERVER_NAME"}) {
        err = error_of({{"SYNCD_REDIS_URL", "redis://h:1"},
                        {key, key == std::string("SYNCD_REDIS_CA_FILE") ? file.path() : "x"}});
        EXPECT_TRUE(has(err, key) && has(err, "TLS is off")) << err;
    }
    // rediss:// and the switch off contradict each other.
    err = error_of({{"SYNCD_REDIS_URL", "rediss://h:1"}, {"SYNCD_REDIS_TLS", "off"}});
    EXPECT_TRUE(has(err, "SYNCD_REDIS_TLS")) << err;
    // Redis has no TLS on Unix sockets.
    err = error_of({{"SYNCD_REDIS_URL", "unix:/run/redis.sock"}, {"SYNCD_REDIS_TLS", "on"}});
    EXPECT_TRUE(has(err, "SYNCD_REDIS_TLS") && has(err, "Unix")) << err;
    for (const char* key : {"SYNCD_REDIS_TLS", "SYNCD_REDIS_TLS_VERIFY"}) {
        err = error_of({{"SYNCD_REDIS_URL", "rediss://h:1"}, {key, "maybe"}});
        EXPECT_TRUE(has(err, key)) << err;
    }
    err = error_of({{"SYNCD_REDIS_URL", "rediss://h:1"}, {"SYNCD_REDIS_SERVER_NAME", "a b"}});
    EXPECT_TRUE(has(err, "SYNCD_REDIS_SERVER_NAME")) << err;
}

TEST(Config, RequireNamesMissingKey) {
    Config c = load_config({}, {});
    try {
        require(c, static_cast<int>(Need::database));
        FAIL();
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("SYNCD_DATABASE_URL"), std::string::npos);
    }
    EXPECT_THROW(require(c, static_cast<int>(Need::redis)), ConfigError);
    EXPECT_THROW(require(c, static_cast<int>(Need::secrets)), ConfigError);
}

TEST(EnvFile, SystemdSyntax) {
    Environment e = parse_env_file(
        "# comment\n\nSYNCD_LISTEN=127.0.0.1:9\nexport SYNCD_REDIS_PREFIX=\"p:\"\n"
        "SYNCD_LOG_LEVEL = 'warn'\r\n",
        "f.env");
    EXPECT_EQ(e["SYNCD_LISTEN"], "127.0.0.1:9");
    EXPECT_EQ(e["SYNCD_REDIS_PREFIX"], "p:");
    EXPECT_EQ(e["SYNCD_LOG_LEVEL"], "warn");
}

TEST(EnvFile, BadLineNamesFileAndLine) {
    try {
        parse_env_file("SYNCD_LISTEN=1\nnot a setting\n", "/etc/syncd.env");
        FAIL();
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("/etc/syncd.env:2"), std::string::npos);
    }
}

TEST(Config, ClerkApiKeys) {
    Config d = load_config({}, {});
    EXPECT_FALSE(d.clerk_api.enabled());
    EXPECT_EQ(d.clerk_api.api_url, "https://api.clerk.com");
    EXPECT_FALSE(d.clerk_api.writeback);
    EXPECT_EQ(d.clerk_api.jwks_interval, 300);
    Config c = load_config({{"SYNCD_CLERK_SECRET_KEY", "sk_test_abc123"},
                            {"SYNCD_CLERK_API_URL", "http://127.0.0.1:8080/"},
                            {"SYNCD_CLERK_WRITEBACK", "on"},
                            {"SYNCD_CLERK_JWKS_INTERVAL", "90s"}},
                           {});
    EXPECT_TRUE(c.clerk_api.enabled());
    EXPECT_EQ(c.clerk_api.secret_key, "sk_test_abc123");
    EXPECT_EQ(c.clerk_api.api_url, "http://127.0.0.1:8080");
    EXPECT_TRUE(c.clerk_api.writeback);
    EXPECT_EQ(c.clerk_api.jwks_interval, 90);
    // Write-back and the interval without the key: accepted, unused.
    Config w =
        load_config({{"SYNCD_CLERK_WRITEBACK", "on"}, {"SYNCD_CLERK_JWKS_INTERVAL", "5m"}}, {});
    EXPECT_FALSE(w.clerk_api.enabled());
    EXPECT_EQ(w.clerk_api.jwks_interval, 300);
}

TEST(Config, ClerkApiErrorsNameTheKeyAndNeverTheSecret) {
    std::string e = error_of({{"SYNCD_CLERK_SECRET_KEY", "sk_live_SECRET value"}});
    EXPECT_NE(e.find("SYNCD_CLERK_SECRET_KEY"), std::string::npos);
    EXPECT_EQ(e.find("SECRET"), e.find("SECRET_KEY"));  // only in the key's name
    EXPECT_EQ(e.find("sk_live"), std::string::npos);
    EXPECT_NE(
        error_of({{"SYNCD_CLERK_API_URL", "ftp://api.clerk.com"}}).find("SYNCD_CLERK_API_URL"),
        std::string::npos);
    EXPECT_NE(error_of({{"SYNCD_CLERK_API_URL", "https://"}}).find("no host"), std::string::npos);
    EXPECT_NE(error_of({{"SYNCD_CLERK_API_URL", "https://u:p@api.clerk.com"}}).find("credentials"),
              std::string::npos);
    EXPECT_NE(error_of({{"SYNCD_CLERK_API_URL", "https://api.clerk.com/?x=1"}}).find("query"),
              std::string::npos);
    EXPECT_NE(error_of({{"SYNCD_CLERK_WRITEBACK", "maybe"}}).find("SYNCD_CLERK_WRITEBACK"),
              std::string::npos);
    EXPECT_NE(error_of({{"SYNCD_CLERK_JWKS_INTERVAL", "5s"}}).find("at least 10s"),
              std::string::npos);
    try {
        require(load_config({}, {}), static_cast<int>(Need::clerk_api));
        FAIL();
    } catch (const ConfigError& err) {
        EXPECT_NE(std::string(err.what()).find("SYNCD_CLERK_SECRET_KEY"), std::string::npos);
    }
}

}  // namespace
}  // namespace syncd
