"""session_redirect: navigations get a 302 to the sign-in page, API calls a
401."""

import pytest

from harness import app_location, cookie, redis_directive, seed_session, seed_user

HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture
def n(nginx, rds, r):
    seed_session(r, "sess_rev", "user_1", status="revoked")
    seed_session(r, "sess_viewer", "user_v")
    seed_user(r, "user_v", role="viewer")
    return nginx(http=redis_directive(rds.address()),
                 server=app_location("/app/", "session_redirect /sign-in?redirect_url=$request_uri;")
                 + app_location("/admin/", "session_require_role admin;"
                                " session_redirect /sign-in?redirect_url=$request_uri;"))


def location_of(resp):
    loc = resp.header("Location")
    assert loc is not None, resp
    return loc


def test_navigation_gets_302_with_expanded_url(n, upstream):
    resp = n.get("/app/page?x=1", headers={"Accept": HTML})
    assert resp.status == 302, resp
    assert location_of(resp).endswith("/sign-in?redirect_url=/app/page?x=1"), resp.headers
    assert upstream.requests == []
    assert n.last_session_status() == "missing"


def test_head_navigation_gets_302(n):
    resp = n.get("/app/page", method="HEAD", headers={"Accept": "text/html"})
    assert resp.status == 302, resp
    assert location_of(resp).endswith("/sign-in?redirect_url=/app/page")


def test_sec_fetch_mode_navigate_gets_302(n):
    resp = n.get("/app/doc", headers={"Sec-Fetch-Mode": "navigate", "Accept": "*/*"})
    assert resp.status == 302, resp
    assert location_of(resp).endswith("/sign-in?redirect_url=/app/doc")


@pytest.mark.parametrize("headers", [
    {},
    {"Accept": "application/json"},
    {"Accept": "*/*"},
    {"Accept": "application/json", "Sec-Fetch-Mode": "cors"},
], ids=["no-accept", "json", "any", "cors"])
def test_api_call_gets_401(n, headers):
    resp = n.get("/app/api", headers=headers)
    assert resp.status == 401, resp
    assert resp.header("Location") is None
    assert resp.header("WWW-Authenticate", "").startswith("Bearer")


def test_post_gets_401_even_with_html_accept(n, upstream):
    resp = n.get("/app/form", method="POST", headers={"Accept": HTML, "Content-Type": "text/plain"},
                 body="a=1")
    assert resp.status == 401, resp
    assert resp.header("Location") is None
    assert upstream.requests == []


def test_revoked_session_navigation_gets_302(n):
    resp = n.get("/app/x", headers=dict(cookie("sess_rev"), Accept=HTML))
    assert resp.status == 302, resp
    assert n.get("/app/x", headers=cookie("sess_rev")).status == 401


def test_wrong_role_is_403_not_redirect(n, upstream):
    resp = n.get("/admin/x", headers=dict(cookie("sess_viewer"), Accept=HTML))
    assert resp.status == 403, resp
    assert resp.header("Location") is None
    assert upstream.requests == []


def test_valid_navigation_passes(n, r):
    seed_session(r, "sess_ok", "user_v")
    resp = n.get("/app/x", headers=dict(cookie("sess_ok"), Accept=HTML))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == "user_v"


def test_absolute_redirect_url(nginx, rds):
    n = nginx(http=redis_directive(rds.address()),
              server=app_location("/app/", "session_redirect https://login.example.com/?to=$scheme://$host$uri;"))
    resp = n.get("/app/p", headers={"Accept": "text/html", "Host": "shop.example.com"})
    assert resp.status == 302, resp
    assert resp.header("Location") == "https://login.example.com/?to=http://shop.example.com/app/p"


def test_post_form_navigation_gets_401(n, upstream):
    # Issue 7 (9b): only GET and HEAD are redirected. A form submission is a
    # navigation (Sec-Fetch-Mode: navigate), but a 302 would replay it as a
    # GET of the sign-in page and lose its body; the README promises POSTs 401.
    resp = n.get("/app/form", method="POST", headers={"Sec-Fetch-Mode": "navigate", "Accept": HTML,
                                                      "Content-Type": "application/x-www-form-urlencoded"},
                 body="a=1")
    assert resp.status == 401, resp
    assert resp.header("Location") is None, resp
    assert upstream.requests == []


def test_redis_down_navigation_is_503_not_redirect(nginx, upstream):
    # Redis not answering is not "no session": no sign-in loop
    import harness
    n = nginx(http=redis_directive("127.0.0.1:%d" % harness.free_port()),
              server=app_location("/app/", "session_redirect /sign-in;"))
    resp = n.get("/app/", headers=dict(cookie("sess_x"), Accept=HTML))
    assert resp.status == 503, resp
    assert resp.header("Location") is None
