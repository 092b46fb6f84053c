// The keywords syncd passes to libpq: timeouts by default, the user's own
// settings winning, and no echo of a conninfo that does not parse.
#include <gtest/gtest.h>

#include <cstdlib>

#include "daemon/pg.hpp"

namespace syncd {
namespace {

using Params = std::vector<std::pair<std::string, std::string>>;

std::string value_of(const Params& params, const std::string& key) {
    std::string out = "<unset>";
    int seen = 0;
    for (const auto& [k, v] : params) {
        if (k == key) {
            out = v;
            ++seen;
        }
    }
    EXPECT_LE(seen, 1) << key;
    return out;
}

struct NoPgOptions : ::testing::Test {
    void SetUp() override { unsetenv("PGOPTIONS"); }
    void TearDown() override { unsetenv("PGOPTIONS"); }
};

TEST_F(NoPgOptions, TimeoutsByDefault) {
    Params p = pg_connect_params("postgresql://syncd:pw@db.example:5433/app");
    EXPECT_EQ(value_of(p, "host"), "db.example");
    EXPECT_EQ(value_of(p, "port"), "5433");
    EXPECT_EQ(value_of(p, "dbname"), "app");
    EXPECT_EQ(value_of(p, "password"), "pw");
    EXPECT_EQ(value_of(p, "connect_timeout"), "5");
    EXPECT_EQ(value_of(p, "application_name"), "syncd");
    EXPECT_EQ(value_of(p, "tcp_user_timeout"), "10000");
    EXPECT_EQ(value_of(p, "keepalives"), "1");
    EXPECT_EQ(value_of(p, "keepalives_idle"), "10");
    EXPECT_EQ(value_of(p, "options"), "-c statement_timeout=10s");
}

TEST_F(NoPgOptions, TheConninfoWins) {
    Params p = pg_connect_params(
        "host=db.example dbname=app connect_timeout=2 tcp_user_timeout=3000 keepalives_idle=30 "
        "application_name=mine options='-c search_path=app'");
    EXPECT_EQ(value_of(p, "connect_timeout"), "2");
    EXPECT_EQ(value_of(p, "tcp_user_timeout"), "3000");
    EXPECT_EQ(value_of(p, "keepalives_idle"), "30");
    EXPECT_EQ(value_of(p, "application_name"), "mine");
    // Merged, ours first: a statement_timeout of the user's comes later and wins.
    EXPECT_EQ(value_of(p, "options"), "-c statement_timeout=10s -c search_path=app");
    p = pg_connect_params("postgresql:///app?options=-c%20statement_timeout%3D0");
    EXPECT_EQ(value_of(p, "options"), "-c statement_timeout=10s -c statement_timeout=0");
}

TEST_F(NoPgOptions, PgOptionsIsMergedToo) {
    setenv("PGOPTIONS", "-c work_mem=8MB", 1);
    EXPECT_EQ(value_of(pg_connect_params("dbname=app"), "options"),
              "-c statement_timeout=10s -c work_mem=8MB");
}

TEST(PgConnectParams, UnparsableIsNotEchoed) {
    try {
        pg_connect_params("postgresql://u:s3cr%ZZet@db.example/app");
        FAIL();
    } catch (const PgError& e) {
        EXPECT_EQ(std::string(e.what()).find("s3cr"), std::string::npos);
        EXPECT_NE(std::string(e.what()).find("SYNCD_DATABASE_URL"), std::string::npos);
    }
}

}  // namespace
}  // namespace syncd
