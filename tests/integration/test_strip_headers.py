"""session_strip_headers: identity headers a client sends never reach the
upstream, even through a location whose own proxy_set_header stops the
server-level X-User-* lines from being inherited."""

import pytest

import harness
from harness import cookie, redis_directive, seed_session, seed_user

# What a client forges; X-Username and X-Userid only look alike and must pass.
FORGED = [("X-User-Id", "user_evil"), ("x-user-role", "admin"), ("X-USER-EMAIL", "evil@example.com"),
          ("X-Org-Id", "org_evil"), ("X-Session-Id", "forged")]
INNOCENT = [("X-Username", "kept"), ("X-Userid", "kept"), ("X-Other", "kept")]

# The server level sets the identity headers; the location below adds a
# proxy_set_header of its own, so none of them is inherited there.
SERVER = """
        session_strip_headers X-User-* X-Org-* X-Session-Id;
        proxy_set_header X-User-Id $session_user_id;
        proxy_set_header X-User-Role $session_user_role;
        location /app/ {
            session_check on;
            session_token cookie=sessionId;
            proxy_set_header Host $host;
            add_header X-Seen-User-Id "[$http_x_user_id]" always;
            proxy_pass http://app;
        }
        location /open/ {
            proxy_set_header Host $host;
            proxy_pass http://app;
        }"""


def assert_none_forwarded(resp, names):
    for name in names:
        assert resp.upstream_headers(name) == [], "%s reached the upstream: %r" % (name, resp)


def test_without_the_directive_a_location_header_leaks_identity(nginx, rds, r):
    # The hole the directive closes: proof that the test below can fail.
    seed_session(r, "sess_a", "user_a")
    seed_user(r, "user_a", role="member")
    n = nginx(http=redis_directive(rds.address()),
              server=SERVER.replace("session_strip_headers X-User-* X-Org-* X-Session-Id;", ""))
    resp = n.get("/app/", headers=[cookie("sess_a").popitem()] + FORGED)
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == "user_evil"


def test_checked_location_strips_forged_identity(nginx, rds, r):
    seed_session(r, "sess_a", "user_a")
    seed_user(r, "user_a", role="member")
    n = nginx(http=redis_directive(rds.address()), server=SERVER)
    resp = n.get("/app/", headers=[cookie("sess_a").popitem()] + FORGED + INNOCENT)
    assert resp.status == 200, resp
    assert_none_forwarded(resp, [k for k, _ in FORGED])
    for name, value in INNOCENT:
        assert resp.upstream_header(name) == value, resp
    # the check itself still reads the cookie
    assert resp.upstream_header("Cookie") == "sessionId=sess_a"
    # $http_x_user_id (and so fastcgi's HTTP_X_USER_ID) is gone as well
    assert resp.header("X-Seen-User-Id") == "[]"


def test_unchecked_location_strips_too(nginx, rds, upstream):
    n = nginx(http=redis_directive(rds.address()), server=SERVER)
    resp = n.get("/open/", headers=FORGED + INNOCENT)
    assert resp.status == 200, resp
    assert_none_forwarded(resp, [k for k, _ in FORGED])
    assert resp.upstream_header("X-Other") == "kept"


def test_repeated_and_underscored_names_are_stripped(nginx, rds, upstream):
    # With underscores_in_headers on, X_User_Id is a header of its own that
    # fastcgi and $http_x_user_id would both read as X-User-Id.
    n = nginx(http=redis_directive(rds.address()), server="underscores_in_headers on;\n" + SERVER)
    resp = n.get("/open/", headers=[("X-User-Id", "one"), ("X-User-Id", "two"),
                                    ("X_User_Id", "three"), ("X-Other", "kept")])
    assert resp.status == 200, resp
    assert_none_forwarded(resp, ["X-User-Id", "X_User_Id"])
    assert resp.upstream_header("X-Other") == "kept"


def test_exact_name_is_not_a_prefix(nginx, upstream):
    n = nginx(server="""
        location / {
            session_strip_headers X-Debug;
            proxy_pass http://app;
        }""")
    resp = n.get("/", headers=[("x-debug", "1"), ("X-Debug-Mode", "kept"), ("X-Debu", "kept")])
    assert resp.status == 200, resp
    assert resp.upstream_headers("X-Debug") == []
    assert resp.upstream_header("X-Debug-Mode") == "kept"
    assert resp.upstream_header("X-Debu") == "kept"


def test_subrequest_location_strips(nginx, upstream):
    # auth_request's subrequest skips the access phase; the location it goes
    # to strips on its own, without touching the main request's headers.
    n = nginx(server="""
        location = /auth {
            internal;
            session_strip_headers X-User-*;
            proxy_pass http://app;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }
        location /main/ {
            auth_request /auth;
            proxy_pass http://app;
        }""")
    resp = n.get("/main/", headers=[("X-User-Id", "user_evil"), ("X-Other", "kept")])
    assert resp.status == 200, resp
    auth = [q for q in upstream.requests if q["path"] == "/auth"]
    assert len(auth) == 1, upstream.requests
    names = [k.lower() for k, _ in auth[0]["headers"]]
    assert "x-user-id" not in names, auth[0]
    assert "x-other" in names, auth[0]
    # the main location has no session_strip_headers: its request is its own
    assert resp.upstream_header("X-User-Id") == "user_evil"


def test_internal_redirect_strips_in_the_new_location(nginx, upstream):
    n = nginx(server="""
        location /old/ { rewrite ^ /new/ last; }
        location /new/ {
            session_strip_headers X-User-*;
            proxy_pass http://app;
        }""")
    resp = n.get("/old/", headers=[("X-User-Id", "user_evil")])
    assert resp.status == 200, resp
    assert resp.upstream_headers("X-User-Id") == []


# --- nginx -t ---------------------------------------------------------------

def nginx_t(tmp_path, **kw):
    text = harness.nginx_t_conf(**kw).replace("@TMP@", str(tmp_path))
    return harness.nginx_test_config(text, str(tmp_path))


def assert_rejected(tmp_path, needles, **kw):
    rc, out = nginx_t(tmp_path, **kw)
    assert rc != 0, out
    emerg = [l for l in out.splitlines() if "[emerg]" in l]
    assert emerg, out
    for needle in needles:
        assert needle in emerg[0], "%r not in %r" % (needle, emerg[0])
    assert "nginx-t.conf:" in emerg[0], emerg[0]


@pytest.mark.parametrize("value,why", [
    ('""', 'invalid header name ""'),
    ("*", 'invalid header name "*"'),
    ("X-*-Id", '"*" is only allowed at the end'),
    ("X-User-**", '"*" is only allowed at the end'),
    ('"X User"', 'invalid header name "X User"'),
    ("X-User:", 'invalid header name "X-User:"'),
])
def test_invalid_names_are_refused(tmp_path, value, why):
    assert_rejected(tmp_path, [why, '"session_strip_headers" directive'],
                    server="session_strip_headers X-Ok %s;" % value)


@pytest.mark.parametrize("value,known", [
    ("Cookie", "Cookie"), ("authorization", "Authorization"), ("Auth*", "Authorization"),
    ("Host", "Host"), ("Content-Len*", "Content-Length"),
])
def test_headers_nginx_reads_are_refused(tmp_path, value, known):
    assert_rejected(tmp_path, ['"%s" in "session_strip_headers" directive' % value,
                               'would strip "%s"' % known], location="session_strip_headers %s;" % value)


def test_duplicate_is_refused(tmp_path):
    assert_rejected(tmp_path, ['"session_strip_headers" directive is duplicate'],
                    location="session_strip_headers X-A; session_strip_headers X-B;")


def test_stripping_the_token_header_is_refused(tmp_path):
    assert_rejected(tmp_path, ['"session_strip_headers" strips "X-User-Token"'],
                    server="session_strip_headers X-User-*;",
                    location="session_check on; session_token header=X-User-Token;")


def test_valid_forms_are_accepted(tmp_path):
    rc, out = nginx_t(tmp_path, http="session_strip_headers X-User-* X-Org-*;",
                      server="session_strip_headers X-User-* X_Org_Id x-session-id;",
                      location="session_strip_headers X-;")
    assert rc == 0, out
