"""Issue 7, the access check's hardening: unknown user states refuse,
`session_fail_mode open` never opens a gated location, values with control
bytes never reach a header, an empty token source is absent, only GET and
HEAD are redirected, and a check is counted and touched once per request
across internal redirects.

PYTEST_DONT_REWRITE: some cases send JWTs; pytest's assertion
introspection would print them. Every assertion carries its own message,
with tokens replaced by their digest (tokens.redact)."""

import pytest

import jwt_suite  # puts tests/clerk on sys.path
import tokens as T

import harness
from harness import (METRICS_LOCATION, SESSION_HEADERS, app_location, bearer, cookie, metric,
                     parse_metrics, redis_directive, seed_session, seed_user, wait_until)
from jwt_suite import _redacted_responses, keys  # noqa: F401: fixtures
from jwt_suite import expect, session_cookie, tok

key = jwt_suite.key_fixture("ins_hardening")

HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def status_is(n, resp, status, session_status=None):
    assert resp.status == status, T.redact(resp)
    if session_status is not None:
        got = n.last_session_status()
        assert got == session_status, (got, session_status)


def metrics(n):
    resp = n.get("/metrics")
    assert resp.status == 200, resp
    return parse_metrics(resp.body)[0]


def checks_total(n):
    m = metrics(n)
    return sum(v for (name, _), v in m.items() if name == "nginx_session_checks_total")


def down_address():
    return "127.0.0.1:%d" % harness.free_port()


# ------------------------------------------------ 3. unknown user state refuses


@pytest.mark.parametrize("state", ["suspended", "Active", "pending", ""])
def test_unknown_user_status_is_revoked(nginx, rds, r, upstream, state):
    seed_session(r, "sess_u", "user_u")
    seed_user(r, "user_u", role="admin", status=state)
    n = nginx(http=redis_directive(rds.address()), server=app_location("/app/"))
    status_is(n, n.get("/app/", headers=cookie("sess_u")), 401, "revoked")
    assert upstream.requests == [], "the upstream was reached"


def test_active_user_status_passes(nginx, rds, r):
    seed_session(r, "sess_a", "user_a")
    seed_user(r, "user_a", role="admin", status="active")
    n = nginx(http=redis_directive(rds.address()), server=app_location("/app/"))
    status_is(n, n.get("/app/", headers=cookie("sess_a")), 200, "ok")


# ------------------------------------------------ 4. open never opens a gate


def gated_open_locations():
    return (app_location("/open/", "session_fail_mode open;")
            + app_location("/open-admin/", "session_fail_mode open; session_require_role admin;")
            + app_location("/open-admin-any/", "session_fail_mode open;"
                           " session_require_role admin; satisfy any; deny all;")
            + app_location("/open-any/", "session_fail_mode open; satisfy any; deny all;"))


def test_fail_open_gated_by_role_answers_503(nginx, upstream):
    n = nginx(http=redis_directive(down_address()), server=gated_open_locations())
    resp = n.get("/open-admin/", headers=cookie("sess_any"))
    status_is(n, resp, 503, "error")
    assert upstream.requests == [], "a gated location let an unchecked request through"
    # also without a token at all: a missing token is 401 whatever Redis does
    status_is(n, n.get("/open-admin/"), 401, "missing")
    # an ungated location still goes on as anonymous
    resp = n.get("/open/", headers=cookie("sess_any"))
    status_is(n, resp, 200, "error")
    assert resp.upstream_headers("X-User-Id") == [], resp


def test_fail_open_gated_under_satisfy_any_answers_401(nginx, upstream):
    n = nginx(http=redis_directive(down_address()), server=gated_open_locations())
    # deny all refuses with 403; the session module's 401 must win, not a
    # "declined" that leaves the verdict to the other module
    status_is(n, n.get("/open-admin-any/", headers=cookie("sess_any")), 401, "error")
    # ungated: open declines, and `deny all` decides alone
    status_is(n, n.get("/open-any/", headers=cookie("sess_any")), 403, "error")
    assert upstream.requests == [], "the upstream was reached"


def test_fail_open_gated_by_organization_answers_503(nginx, upstream, key, keys):
    n = jwt_suite.start(nginx, down_address(), keys, locations=(
        ("/org/", "session_fail_mode open; session_require_org_role admin;"),
        ("/perm/", "session_fail_mode open; session_require_permission org:billing:read;"),
        ("/plain/", "session_fail_mode open;")))
    admin = tok(key, "user_o", "sess_o",
                **T.org_claim("org_1", "acme", "admin", ["read"], [("billing", ["read"])]))
    for path in ("/org/", "/perm/"):
        expect(n.get(path, headers=session_cookie(admin)), 503, path)
    assert upstream.requests == [], "a gated location let an unchecked request through"
    expect(n.get("/plain/", headers=session_cookie(admin)), 200, "/plain/")


def test_fail_open_gate_after_internal_redirect(nginx, upstream):
    # the first location is open and ungated (declines); the named one it
    # leads to is gated: it must not inherit the anonymous pass
    n = nginx(http=redis_directive(down_address()), server="""
        location /to-admin/ {
            session_check on;
            session_token cookie=sessionId;
            session_fail_mode open;
            try_files /no-such-file @admin;
        }
        location @admin {
            session_check on;
            session_token cookie=sessionId;
            session_fail_mode open;
            session_require_role admin;
            proxy_pass http://app;
        }""")
    status_is(n, n.get("/to-admin/x", headers=cookie("sess_any")), 503, "error")
    assert upstream.requests == [], "the upstream was reached"


# ------------------------------------------------ 8. control bytes from Redis


@pytest.mark.parametrize("field,value", [
    ("email", "a@example.com\r\nX-Evil: 1"),
    ("roles", "admin\tother"),
    ("db_id", "42\x7f"),
    ("role", "admin\x00"),
], ids=["email-crlf", "roles-tab", "db_id-del", "role-nul"])
def test_control_byte_in_user_hash_is_invalid(nginx, rds, r, upstream, field, value):
    seed_session(r, "sess_c", "user_c")
    seed_user(r, "user_c", role="member")
    r.hset("user:user_c", field, value)
    n = nginx(http=redis_directive(rds.address()), server=app_location("/app/"))
    status_is(n, n.get("/app/", headers=cookie("sess_c")), 401, "invalid")
    assert upstream.requests == [], "the upstream was reached"
    log = n.log()
    assert ('control byte in "user:%s"' % field) in log, n.log_tail()
    assert value not in log, "the value reached the error log"


def test_control_byte_in_session_hash_is_invalid(nginx, rds, r, upstream):
    seed_session(r, "sess_cs", "user_cs")
    r.hset("sess:sess_cs", "last_active_at", "1\n")
    n = nginx(http=redis_directive(rds.address()), server=app_location("/app/"))
    status_is(n, n.get("/app/", headers=cookie("sess_cs")), 401, "invalid")
    assert 'control byte in "sess:last_active_at"' in n.log(), n.log_tail()


def test_control_byte_logged_once_per_worker(nginx, rds, r):
    for i in range(3):
        seed_session(r, "sess_l%d" % i, "user_l%d" % i)
        seed_user(r, "user_l%d" % i, role="member", email="l%d@example.com\n" % i)
    n = nginx(http=redis_directive(rds.address()), server=app_location("/app/"))
    for i in range(3):
        for _ in range(2):
            status_is(n, n.get("/app/", headers=cookie("sess_l%d" % i)), 401, "invalid")
    assert n.log().count("control byte in") == 1, n.log_tail()


def test_control_byte_in_jwt_overlay_is_invalid(nginx, rds, r, upstream, key, keys):
    seed_session(r, "sess_jc", "user_jc")
    seed_user(r, "user_jc", role="member", email="j@example.com\r\nX-Evil: 1")
    n = jwt_suite.start(nginx, rds.address(), keys)
    t = tok(key, "user_jc", "sess_jc")
    expect(n.get("/app/", headers=session_cookie(t)), 401)
    got = n.last_session_status()
    assert got == "invalid", got
    assert upstream.requests == [], "the upstream was reached"
    assert 'control byte in "user:email"' in n.log(), "no warning in the error log"


# ------------------------------------------------ 9a. an empty source is absent


@pytest.mark.parametrize("empty", ["sessionId=", 'sessionId=""', "sessionId= ; other=1"],
                         ids=["bare", "quoted", "with-other"])
def test_empty_cookie_does_not_shadow_bearer(nginx, rds, r, empty):
    seed_session(r, "sess_b", "user_b")
    n = nginx(http=redis_directive(rds.address()), server=app_location("/app/"))
    headers = dict(bearer("sess_b"), Cookie=empty)
    resp = n.get("/app/", headers=headers)
    status_is(n, resp, 200, "ok")
    assert resp.upstream_header("X-User-Id") == "user_b", resp
    # an empty cookie and nothing else is no token at all
    status_is(n, n.get("/app/", headers={"Cookie": empty}), 401, "missing")


def test_empty_header_does_not_shadow_bearer(nginx, rds, r):
    seed_session(r, "sess_h", "user_h")
    n = nginx(http=redis_directive(rds.address()),
              server=app_location("/app/", token="header=X-Session-Token bearer"))
    resp = n.get("/app/", headers=[("X-Session-Token", ""), ("Authorization", "Bearer sess_h")])
    status_is(n, resp, 200, "ok")


# ------------------------------------------------ 9b. only GET and HEAD redirect


def redirect_nginx(nginx, rds):
    return nginx(http=redis_directive(rds.address()),
                 server=app_location("/app/", "session_redirect /sign-in;"))


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_navigate_non_get_gets_401(nginx, rds, upstream, method):
    n = redirect_nginx(nginx, rds)
    resp = n.get("/app/form", method=method, body="a=1",
                 headers={"Sec-Fetch-Mode": "navigate", "Accept": HTML,
                          "Content-Type": "application/x-www-form-urlencoded"})
    status_is(n, resp, 401, "missing")
    assert resp.header("Location") is None, resp


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_navigate_get_and_head_still_redirect(nginx, rds, method):
    n = redirect_nginx(nginx, rds)
    resp = n.get("/app/page", method=method, headers={"Sec-Fetch-Mode": "navigate", "Accept": "*/*"})
    status_is(n, resp, 302)
    assert resp.header("Location", "").endswith("/sign-in"), resp


# ------------------------------------------------ 9c. once per request


def redirecting_nginx(nginx, rds, how):
    """/first/ checks, then leads to @second, which checks again: by
    try_files, or by error_page after the upstream failed (both after the
    access phase); /refused/ leads to @second by error_page 401."""
    first = ("try_files /no-such-file @second;" if how == "try_files"
             else "proxy_pass http://127.0.0.1:%d; error_page 502 = @second;" % harness.free_port())
    return nginx(http=redis_directive(rds.address()), server="""
        location /first/ {
            session_check on;
            session_token cookie=sessionId;
            session_touch 1s;
            %s
        }
        location /refused/ {
            session_check on;
            session_token cookie=sessionId;
            error_page 401 = @second;
        }
        location @second {
            session_check on;
            session_token cookie=sessionId;
            session_touch 1s;
            %s
            proxy_pass http://app;
        }""" % (first, SESSION_HEADERS) + METRICS_LOCATION)


@pytest.mark.parametrize("how", ["try_files", "error_page"])
def test_internal_redirect_counts_and_touches_once(nginx, rds, r, how):
    old = harness.now_ms() - 120_000
    seed_session(r, "sess_once", "user_once", idle_timeout=600, last_active_at=old)
    n = redirecting_nginx(nginx, rds, how)
    before = checks_total(n)
    resp = n.get("/first/x", headers=cookie("sess_once"))
    status_is(n, resp, 200, "ok")
    assert resp.upstream_header("X-User-Id") == "user_once", resp
    # the touch is fire-and-forget: wait until it is in, then count
    wait_until(lambda: r.hget("sess:sess_once", "last_active_at") != str(old), 10,
               what="the touch")
    m = metrics(n)
    counted = (checks_total(n) - before, metric(m, "nginx_session_checks_total", '{outcome="ok"}'),
               metric(m, "nginx_session_touches_total"))
    assert counted == (1, 1, 1), "(checks, ok, touches) = %r" % (counted,)


def test_error_page_of_refused_request_counts_once(nginx, rds, r, upstream):
    n = redirecting_nginx(nginx, rds, "try_files")
    before = checks_total(n)
    status_is(n, n.get("/refused/x", headers=cookie("sess_nope")), 401, "invalid")
    status_is(n, n.get("/refused/x"), 401, "missing")
    m = metrics(n)
    assert checks_total(n) - before == 2, m
    assert metric(m, "nginx_session_checks_total", '{outcome="invalid"}') == 1, m
    assert upstream.requests == [], "the upstream was reached"
