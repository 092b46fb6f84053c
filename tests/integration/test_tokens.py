"""Where the token comes from (session_token), its syntax check, and that
garbage never reaches Redis."""

import pytest

import harness
from harness import app_location, cookie, redis_directive, seed_session, seed_session_v2, seed_user


@pytest.fixture
def two_users(r):
    # Contract version 2 sessions: one HMGET per lookup, which the tests count.
    seed_session_v2(r, "sess_a", "user_a", role="admin")
    seed_user(r, "user_a", role="admin")
    seed_session_v2(r, "sess_b", "user_b", role="viewer")
    seed_user(r, "user_b", role="viewer")


def start(nginx, rds, token, directives=""):
    return nginx(http=redis_directive(rds.address()),
                 server=app_location("/app/", directives, token=token))


def test_bearer(nginx, rds, two_users):
    n = start(nginx, rds, "bearer")
    resp = n.get("/app/", headers={"Authorization": "Bearer sess_a"})
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == "user_a"


@pytest.mark.parametrize("value", ["bearer sess_a", "BEARER sess_a", "Bearer   sess_a", "Bearer sess_a  "])
def test_bearer_scheme_case_and_spaces(nginx, rds, two_users, value):
    n = start(nginx, rds, "bearer")
    resp = n.get("/app/", headers={"Authorization": value})
    assert resp.status == 200, (value, resp)
    assert resp.upstream_header("X-User-Id") == "user_a"


@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearersess_a",
                                   "Token sess_a"])
def test_not_a_bearer_token_is_missing(nginx, rds, two_users, value, upstream):
    n = start(nginx, rds, "bearer")
    resp = n.get("/app/", headers={"Authorization": value})
    assert resp.status == 401, (value, resp)
    assert resp.header("WWW-Authenticate", "").startswith("Bearer")
    assert upstream.requests == []


def test_bearer_with_inner_space_is_rejected(nginx, rds, two_users, upstream):
    n = start(nginx, rds, "bearer")
    resp = n.get("/app/", headers={"Authorization": "Bearer sess_a sess_b"})
    assert resp.status == 401, resp
    assert upstream.requests == []


def test_header_source(nginx, rds, two_users):
    n = start(nginx, rds, "header=X-Session-Token")
    resp = n.get("/app/", headers={"X-Session-Token": "sess_b"})
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == "user_b"
    # header names are case-insensitive
    resp = n.get("/app/", headers={"x-session-token": "sess_a"})
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == "user_a"
    # a cookie or a bearer token is not looked at
    assert n.get("/app/", headers=cookie("sess_a", "X-Session-Token")).status == 401
    assert n.get("/app/", headers={"Authorization": "Bearer sess_a"}).status == 401


def test_cookie_source_among_other_cookies(nginx, rds, two_users):
    n = start(nginx, rds, "cookie=sessionId")
    for header in ["theme=dark; sessionId=sess_a; lang=en",
                   "sessionId=sess_a",
                   "a=1;sessionId=sess_a",
                   'sessionId="sess_a"',
                   "xsessionId=sess_b; sessionId=sess_a"]:
        resp = n.get("/app/", headers={"Cookie": header})
        assert resp.status == 200, (header, resp)
        assert resp.upstream_header("X-User-Id") == "user_a", header


@pytest.mark.parametrize("header", ["sessionid=sess_a", "SessionId=sess_a", "sessionId2=sess_a",
                                    "other=sessionId=sess_a", "sessionId"])
def test_cookie_name_must_match_exactly(nginx, rds, two_users, header, upstream):
    n = start(nginx, rds, "cookie=sessionId")
    resp = n.get("/app/", headers={"Cookie": header})
    assert resp.status == 401, (header, resp)
    assert upstream.requests == []


def test_no_www_authenticate_without_bearer_source(nginx, rds):
    n = start(nginx, rds, "cookie=sessionId")
    resp = n.get("/app/")
    assert resp.status == 401
    assert resp.header("WWW-Authenticate") is None, resp.headers


def test_source_order_first_present_wins(nginx, rds, two_users):
    both = {"X-Session-Token": "sess_a", "Cookie": "sessionId=sess_b"}
    n = start(nginx, rds, "header=X-Session-Token cookie=sessionId")
    assert n.get("/app/", headers=both).upstream_header("X-User-Id") == "user_a"
    n2 = start(nginx, rds, "cookie=sessionId header=X-Session-Token")
    assert n2.get("/app/", headers=both).upstream_header("X-User-Id") == "user_b"


def test_source_order_falls_through_absent_sources(nginx, rds, two_users):
    n = start(nginx, rds, "cookie=sessionId header=X-Session-Token bearer")
    resp = n.get("/app/", headers={"Authorization": "Bearer sess_b", "Cookie": "other=1"})
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == "user_b"
    resp = n.get("/app/", headers={"X-Session-Token": "sess_a", "Authorization": "Bearer sess_b"})
    assert resp.upstream_header("X-User-Id") == "user_a"


def test_bearer_before_cookie(nginx, rds, two_users):
    n = start(nginx, rds, "bearer cookie=sessionId")
    resp = n.get("/app/", headers={"Authorization": "Bearer sess_b", "Cookie": "sessionId=sess_a"})
    assert resp.upstream_header("X-User-Id") == "user_b"


GARBAGE = [
    "sess_a;DROP",
    "sess a",
    "sess_a\"",
    "sess*",
    "sess_a%00",
    "<script>",
    "sess_(a)",
    "sess_a,b",
    "\u00e9t\u00e9",
    "sess_a\\x",
    "{\"json\":1}",
    "a" * 4097,
]


def test_token_syntax_checked_before_redis(nginx, rds, r, two_users, upstream):
    n = start(nginx, rds, "header=X-Session-Token bearer")
    # one valid lookup first, so the connection (and its handshake) exists
    assert n.get("/app/", headers={"X-Session-Token": "sess_a"}).status == 200
    mon = harness.Monitor(rds)
    try:
        before = rds.calls("hmget")
        for g in GARBAGE:
            resp = n.get("/app/", headers=[("X-Session-Token", g.encode("utf-8").decode("latin-1"))])
            assert resp.status == 401, (g[:40], resp)
        for g in ["sess_a;DROP", "a" * 4097]:
            resp = n.get("/app/", headers={"Authorization": "Bearer " + g})
            assert resp.status == 401, (g[:40], resp)
        # a valid lookup last: Redis answers in order, so every command the
        # module sent before it has been executed by now
        assert n.get("/app/", headers={"X-Session-Token": "sess_b"}).status == 200
        after = rds.calls("hmget")
        assert after - before == 1, "garbage tokens reached Redis: %d lookups for 1 valid request" % (after - before)
        harness.wait_until(lambda: "sess_b" in mon.text(), 5, what="the last lookup in MONITOR")
        text = mon.text()
        for needle in ["DROP", "script>", "sess_(a)", "a" * 200, "json"]:
            assert needle not in text, "%r reached Redis:\n%s" % (needle, text[:2000])
    finally:
        mon.close()
    assert len(upstream.requests) == 2
    statuses = [e[1] for e in n.session_log()]
    assert statuses.count("invalid") == len(GARBAGE) + 2, statuses


def test_token_length_boundary(nginx, rds, r, two_users):
    n = start(nginx, rds, "header=X-Session-Token")
    longest = "t" * 4096
    seed_session_v2(r, longest, "user_a", role="admin")
    assert n.get("/app/", headers={"X-Session-Token": "sess_a"}).status == 200
    before = rds.calls("hmget")
    resp = n.get("/app/", headers={"X-Session-Token": longest})
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == "user_a"
    assert rds.calls("hmget") == before + 1
    assert n.get("/app/", headers={"X-Session-Token": longest + "t"}).status == 401
    assert rds.calls("hmget") == before + 1


def test_token_full_charset(nginx, rds, r, two_users):
    token = "AZaz09._~+/=-" + "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2ln"
    seed_session(r, token, "user_b")
    n = start(nginx, rds, "bearer cookie=sessionId")
    resp = n.get("/app/", headers={"Authorization": "Bearer " + token})
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == "user_b"
    assert resp.upstream_header("X-Session-Id") == token


def test_default_sources_are_clerk_cookie_then_bearer(nginx, rds, two_users):
    # README: session_token defaults to cookie=__session bearer
    n = nginx(http=redis_directive(rds.address()), server="""
        location /app/ {
            session_check on;
            proxy_set_header X-User-Id $session_user_id;
            proxy_pass http://app;
        }""")
    resp = n.get("/app/", headers={"Cookie": "__session=sess_a"})
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == "user_a"
    resp = n.get("/app/", headers={"Authorization": "Bearer sess_b"})
    assert resp.upstream_header("X-User-Id") == "user_b"
    resp = n.get("/app/", headers={"Authorization": "Bearer sess_b", "Cookie": "__session=sess_a"})
    assert resp.upstream_header("X-User-Id") == "user_a"
    resp = n.get("/app/")
    assert resp.status == 401
    assert resp.header("WWW-Authenticate", "").startswith("Bearer")


@pytest.mark.parametrize("value", ["sessionId=abc!def", "sessionId=a,b", "sessionId=\"a b\"",
                                   "sessionId=" + "c" * 4097, "sessionId=sess_a\\"])
def test_cookie_garbage_never_reaches_redis(nginx, rds, two_users, value, upstream):
    n = start(nginx, rds, "cookie=sessionId")
    assert n.get("/app/", headers=cookie("sess_a")).status == 200
    before = rds.calls("hmget")
    resp = n.get("/app/", headers={"Cookie": value})
    assert resp.status == 401, resp
    assert n.get("/app/", headers=cookie("sess_b")).status == 200
    assert rds.calls("hmget") == before + 1
    assert n.last_session_status() == "ok"
    assert [e[1] for e in n.session_log()][-2] == "invalid"
