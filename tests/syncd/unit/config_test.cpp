#include <gtest/gtest.h>

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
    EXPECT_EQ(c.redis.host, "10.0.0.1");
    EXPECT_EQ(c.redis.port, 6380);
    EXPECT_EQ(c.redis.password, "pw");
    EXPECT_EQ(c.redis.db, 2);
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
    RedisUrl url = parse_redis_url("K", "redis://:s3cretpw@host:1234/3");
    EXPECT_EQ(url.redacted().find("s3cretpw"), std::string::npos);
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

TEST(Config, RedisUrlForms) {
    RedisUrl a = parse_redis_url("K", "redis://127.0.0.1:6379");
    EXPECT_FALSE(a.unix_socket);
    EXPECT_EQ(a.port, 6379);
    EXPECT_EQ(a.db, 0);
    RedisUrl b = parse_redis_url("K", "unix:///run/redis/redis.sock");
    EXPECT_TRUE(b.unix_socket);
    EXPECT_EQ(b.host, "/run/redis/redis.sock");
    RedisUrl c = parse_redis_url("K", "redis://user:p@ss@host/1");
    EXPECT_EQ(c.user, "user");
    EXPECT_EQ(c.password, "p@ss");
    EXPECT_EQ(c.host, "host");
    EXPECT_EQ(c.port, 6379);
    EXPECT_EQ(c.db, 1);
    EXPECT_THROW(parse_redis_url("K", "unix://relative"), ConfigError);
    EXPECT_THROW(parse_redis_url("K", "redis://host:1/x"), ConfigError);
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

}  // namespace
}  // namespace syncd
