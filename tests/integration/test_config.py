"""Every mistake in the module's directives stops `nginx -t` with an [emerg]
that names the directive and the bad value, the way nginx's own do."""

import pytest

import harness

GOOD_REDIS = "session_redis 127.0.0.1:6379;"


def conf(http="", server="", location="", redis=GOOD_REDIS):
    return harness.nginx_t_conf(http=http, server=server, location=location, redis=redis)


def nginx_t(text, tmp_path):
    text = text.replace("@TMP@", str(tmp_path))
    return harness.nginx_test_config(text, str(tmp_path))


def assert_rejected(tmp_path, text, *needles):
    rc, out = nginx_t(text, tmp_path)
    assert rc != 0, "nginx -t accepted:\n%s\n%s" % (text, out)
    emerg = [l for l in out.splitlines() if "[emerg]" in l]
    assert emerg, out
    line = emerg[0]
    for needle in needles:
        assert needle in line, "%r not in %r" % (needle, line)
    # nginx's own style: the file and line of the directive
    assert "nginx-t.conf:" in line, line
    return line


def test_valid_configuration_passes(tmp_path):
    text = conf(redis="session_redis 127.0.0.1:6379 password=pw db=2 timeout=50ms connect_timeout=200ms prefix=app:;",
                http="session_cache_zone sess:1m ttl=5s negative_ttl=1s stale=30s;",
                location="""session_check on;
            session_token cookie=sessionId header=X-Token bearer;
            session_require_role admin editor;
            session_redirect /sign-in?redirect_url=$request_uri;
            session_fail_mode open;
            session_cache sess;
            session_touch 60s;
            add_header X-S "$session_id $session_user_id $session_user_db_id $session_user_role $session_user_roles $session_user_email $session_status";""",
                server="location = /metrics { session_metrics; }")
    rc, out = nginx_t(text, tmp_path)
    assert rc == 0, out
    assert "test is successful" in out


def test_unix_address_passes(tmp_path):
    rc, out = nginx_t(conf(redis="session_redis unix:/run/redis/redis.sock db=0;"), tmp_path)
    assert rc == 0, out


def test_address_without_port_and_hostname_pass(tmp_path):
    rc, out = nginx_t(conf(redis="session_redis 127.0.0.1;"), tmp_path)
    assert rc == 0, out
    rc, out = nginx_t(conf(redis="session_redis localhost:6379;"), tmp_path)
    assert rc == 0, out


def test_session_cache_off_and_touch_off_pass(tmp_path):
    rc, out = nginx_t(conf(location="session_check on; session_cache off; session_touch off;"), tmp_path)
    assert rc == 0, out


@pytest.mark.parametrize("args,needle", [
    ("127.0.0.1:6379 bogus=1", "bogus="),
    ("127.0.0.1:6379 password", "password"),
    ("127.0.0.1:6379 timeout=abc", "timeout=abc"),
    ("127.0.0.1:6379 connect_timeout=-5", "connect_timeout=-5"),
    ("127.0.0.1:6379 db=x", "db=x"),
    ("127.0.0.1:6379 db=-1", "db=-1"),
    ("127.0.0.1:6379 prefix=" + "p" * 201, "prefix="),
    ("127.0.0.1:6379 password=", "password="),
], ids=["unknown", "no-equals", "timeout", "connect-timeout", "db-word", "db-negative",
        "prefix-too-long", "password-empty"])
def test_session_redis_bad_parameter(tmp_path, args, needle):
    assert_rejected(tmp_path, conf(redis="session_redis %s;" % args), "session_redis", needle)


@pytest.mark.parametrize("address", ["127.0.0.1:99999", "127.0.0.1:0", "127.0.0.1:abc", "unix:",
                                     "[::1", "no such host name:6379", ""])
def test_session_redis_bad_address(tmp_path, address):
    redis = 'session_redis "%s";' % address
    line = assert_rejected(tmp_path, conf(redis=redis), "session_redis")
    if address:
        assert address in line, line


def test_session_redis_duplicate(tmp_path):
    assert_rejected(tmp_path, conf(redis=GOOD_REDIS + "\n    session_redis 127.0.0.1:6380;"),
                    '"session_redis" directive is duplicate')


def test_session_redis_outside_http(tmp_path):
    text = conf(server="session_redis 127.0.0.1:6380;", redis="")
    assert_rejected(tmp_path, text, "session_redis")


def test_check_without_session_redis(tmp_path):
    assert_rejected(tmp_path, conf(redis="", location="session_check on;"),
                    "session_check", "session_redis")


def test_check_without_session_redis_at_server_level(tmp_path):
    assert_rejected(tmp_path, conf(redis="", server="session_check on;"), "session_check", "session_redis")


@pytest.mark.parametrize("zone,needle", [
    ("tiny:1k", "1k"),
    ("tiny:8k", "8k"),
])
def test_cache_zone_too_small(tmp_path, zone, needle):
    line = assert_rejected(tmp_path, conf(http="session_cache_zone %s;" % zone), "session_cache_zone", needle)
    assert "small" in line, line


@pytest.mark.parametrize("args,needle", [
    ("sess", "sess"),
    ("sess:", "sess:"),
    (":1m", ":1m"),
    ("sess:lots", "lots"),
    ("sess:1m bogus=1", "bogus=1"),
    ("sess:1m ttl=abc", "ttl=abc"),
    ("sess:1m negative_ttl=x", "negative_ttl=x"),
    ("sess:1m stale=1y2", "stale=1y2"),
], ids=["no-size", "empty-size", "no-name", "bad-size", "unknown", "ttl", "negative-ttl", "stale"])
def test_cache_zone_bad_arguments(tmp_path, args, needle):
    assert_rejected(tmp_path, conf(http="session_cache_zone %s;" % args), "session_cache_zone", needle)


@pytest.mark.parametrize("second", ["sess:1m", "sess:2m"], ids=["same-size", "other-size"])
def test_cache_zone_duplicate_name(tmp_path, second):
    assert_rejected(tmp_path, conf(http="session_cache_zone sess:1m;\n    session_cache_zone %s;" % second),
                    "session_cache_zone", "sess")


def test_session_cache_unknown_zone(tmp_path):
    assert_rejected(tmp_path, conf(http="session_cache_zone sess:1m;",
                                   location="session_check on; session_cache nosuchzone;"),
                    "session_cache", "nosuchzone")


def test_session_cache_zone_defined_later_is_fine(tmp_path):
    # nginx's own zones may be used before they are defined; ours should too
    text = conf(location="session_check on; session_cache late;")
    text = text.replace("    server {", "    session_cache_zone late:1m;\n    server {", 1)
    rc, out = nginx_t(text, tmp_path)
    assert rc == 0, out


@pytest.mark.parametrize("args,needle", [
    ("cookie", "cookie"),
    ("cookie=", "cookie="),
    ("header=", "header="),
    ("query=token", "query=token"),
    ("bearer=x", "bearer=x"),
    ("cookie=sid foo", "foo"),
], ids=["cookie-no-name", "cookie-empty", "header-empty", "unknown-source", "bearer-with-value", "junk"])
def test_session_token_bad(tmp_path, args, needle):
    assert_rejected(tmp_path, conf(location="session_check on; session_token %s;" % args),
                    "session_token", needle)


def test_session_token_no_arguments(tmp_path):
    assert_rejected(tmp_path, conf(location="session_token;"), "session_token")


@pytest.mark.parametrize("directive,value", [
    ("session_check", "maybe"),
    ("session_fail_mode", "sometimes"),
    ("session_touch", "abc"),
    ("session_touch", "500ms"),
    ("session_cache", "a b"),
])
def test_bad_values(tmp_path, directive, value):
    text = conf(http="session_cache_zone sess:1m;",
                location="%s %s;" % (directive, value) if directive != "session_cache" else "session_cache a b;")
    needle = value if directive != "session_cache" else "session_cache"
    assert_rejected(tmp_path, text, directive, needle)


@pytest.mark.parametrize("directive", ["session_check on", "session_fail_mode open", "session_touch 60s",
                                       "session_token bearer", "session_redirect /x",
                                       "session_require_role admin", "session_cache sess"])
def test_duplicate_in_location(tmp_path, directive):
    text = conf(http="session_cache_zone sess:1m;",
                location="%s; %s;" % (directive, directive))
    name = directive.split()[0]
    assert_rejected(tmp_path, text, '"%s" directive is duplicate' % name)


def test_require_role_needs_a_role(tmp_path):
    assert_rejected(tmp_path, conf(location="session_require_role;"), "session_require_role")


def test_redirect_needs_one_url(tmp_path):
    assert_rejected(tmp_path, conf(location="session_redirect;"), "session_redirect")
    assert_rejected(tmp_path, conf(location="session_redirect /a /b;"), "session_redirect")


def test_metrics_takes_no_arguments_and_only_in_location(tmp_path):
    assert_rejected(tmp_path, conf(location="session_metrics on;"), "session_metrics")
    assert_rejected(tmp_path, conf(server="session_metrics;"), "session_metrics")


def test_unknown_directive_without_module(tmp_path):
    # without load_module the directives are unknown: proves the tests above
    # exercised the module
    text = conf().replace("load_module %s;" % harness.module_path(), "")
    assert_rejected(tmp_path, text, 'unknown directive "session_redis"')
